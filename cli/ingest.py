"""`keel ingest`: files into the corpus, directly on the store, or through the running server
that owns the embedded store (see `cli.datadir`), or through `--url`."""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from graph.context import DEFAULT_TENANT
from graph.settings import Settings

# Files per upload request stay under this many bytes (the server's default limit is 64 MiB).
UPLOAD_BATCH_BYTES = 16 * 1024 * 1024


def add_ingest_parser(sub: Any) -> None:
    """Registers `keel ingest`."""
    ingest = sub.add_parser(
        "ingest",
        help="ingest .txt .md .html .pdf .jsonl files or folders",
        description="Document ids are paths relative to --root (JSONL rows carry their own); "
        "re-ingesting a path replaces its document. Next to a `keel serve` on the same embedded "
        "data dir, the files go through that server.",
    )
    ingest.add_argument("paths", nargs="+", type=Path)
    ingest.add_argument(
        "--root", type=Path, help="ids are paths relative to this folder (default: the cwd)"
    )
    ingest.add_argument("--quiet", action="store_true", help="no progress bar")
    ingest.add_argument(
        "--tenant",
        default=DEFAULT_TENANT,
        help="the tenant whose collection receives the files (local ingestion; through a "
        "server, the API key decides)",
    )
    ingest.add_argument("--url", help="upload through the keel server at this URL")
    ingest.add_argument("--api-key", help="API key for the server (default: KEEL_API_KEY)")
    ingest.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Loads every file first (unreadable files and repeated ids fail before any write), then
    ingests them locally or through a server; prints what happened as JSON."""
    from cli.datadir import DataDirLock, server_or_lock
    from cli.remote import GIVEN_URL_WAIT_S, STARTUP_WAIT_S
    from integrations.loaders import iter_paths, load_sources

    settings = Settings()
    sources = list(iter_paths(args.paths, args.root))
    docs = load_sources(sources)
    target = args.url or server_or_lock(settings, "ingest")
    if isinstance(target, str):
        if not args.url:
            print(f"keel: a server owns {settings.data_dir}: ingesting through {target}",
                  file=sys.stderr)  # fmt: skip
        key = args.api_key or (settings.api_key.get_secret_value() if settings.api_key else None)
        wait_s = GIVEN_URL_WAIT_S if args.url else STARTUP_WAIT_S
        result = _upload(target, key, [(s.path, s.name) for s in sources], wait_s)
    else:
        try:
            result = _local(settings, args, docs)
        finally:
            if isinstance(target, DataDirLock):
                target.release()
    print(json.dumps(result))
    return 0


def _summary(reports: list[dict[str, Any]], via: str) -> dict[str, Any]:
    outcomes: dict[str, str] = {}
    for report in reports:
        outcomes.update(report["outcomes"])
    return {
        "documents": sum(r["documents"] for r in reports),
        "chunks_added": sum(r["chunks_added"] for r in reports),
        "documents_unchanged": sum(r["documents_unchanged"] for r in reports),
        "documents_replaced": sum(r["documents_replaced"] for r in reports),
        "corpus_version": max((r["corpus_version"] for r in reports), default=0),
        "replaced": [d for d, what in outcomes.items() if what == "replaced"][:50],
        "via": via,
    }


def _local(settings: Settings, args: argparse.Namespace, docs: list[Any]) -> dict[str, Any]:
    from tqdm import tqdm

    from corpus import open_corpora

    corpus = open_corpora(settings).get(args.tenant)
    with tqdm(desc="chunks embedded", unit="chunk", disable=args.quiet) as bar:
        report = corpus.ingest(docs, progress=lambda done: bar.update(done - bar.n))
    return _summary([vars(report)], "local")


def _upload(
    url: str, api_key: str | None, files: list[tuple[Path, str]], wait_s: float
) -> dict[str, Any]:
    from cli.remote import checked, connect

    batches: list[list[tuple[Path, str]]] = [[]]
    size = 0
    for path, name in files:
        if batches[-1] and size + path.stat().st_size > UPLOAD_BATCH_BYTES:
            batches.append([])
            size = 0
        batches[-1].append((path, name))
        size += path.stat().st_size
    reports = []
    client = connect(url, api_key, wait_s)
    try:
        for batch in batches:
            upload = [("files", (name, path.read_bytes())) for path, name in batch]
            reports.append(checked(client.post("/v1/documents", files=upload)).json())
    finally:
        client.close()
    return _summary(reports, url)
