"""`keel ingest`: files into the corpus, directly on the store, or through a running server
(`--url`, `KEEL_URL`, the server holding the embedded store, or one on the default port; see
`cli.remote.find_target`).

Folders go in batches: each batch is committed before the next is loaded, so memory stays
bounded and a rerun after an interruption skips what is already stored (by content hash). A file
that cannot be read or holds no text is skipped and reported; the exit status is 1 only when
nothing could be ingested, or, with `--strict`, when any file would be skipped (then every file
is loaded once first and nothing is written).
"""

import argparse
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from graph.context import DEFAULT_TENANT
from graph.settings import Settings

if TYPE_CHECKING:  # the loaders import the corpus stack: not for `keel --help`
    from corpus.ingest import Batch, Skipped
    from corpus.loaders import SourceFile

# One upload request stays under both (the server's limits: 64 MiB and 1,000 files).
UPLOAD_BATCH_BYTES, UPLOAD_BATCH_FILES = 8 * 1024 * 1024, 500
# Without a terminal, progress is one plain line this often (no bar escapes in logs).
PLAIN_PROGRESS_EVERY_S = 30.0


def add_ingest_parser(sub: Any) -> None:
    """Registers `keel ingest`."""
    ingest = sub.add_parser(
        "ingest",
        help="ingest .txt .md .html .pdf .jsonl files or folders",
        description="Document ids are paths relative to --root (JSONL rows carry their own); "
        "re-ingesting a path replaces its document. Files without text are skipped and "
        "reported. Writes through --url, else KEEL_URL, else the server holding the data dir, "
        "else a keel server on the default port, else the local store (named on stderr).",
    )
    ingest.add_argument("paths", nargs="+", type=Path)
    ingest.add_argument(
        "--root", type=Path, help="ids are paths relative to this folder (default: the cwd)"
    )
    ingest.add_argument("--quiet", action="store_true", help="no progress on stderr")
    ingest.add_argument(
        "--strict",
        action="store_true",
        help="load every file first and write nothing (exit 1) when any would be skipped",
    )
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
    """Checks ids across all files, then ingests batch by batch locally or through a server;
    prints what happened as JSON (`skipped` lists each file passed over and why)."""
    from cli.datadir import DataDirLock
    from cli.remote import find_target, wait_for
    from corpus.ingest import load_batches
    from corpus.loaders import check_unique_sources, iter_paths

    settings = Settings()
    sources = list(iter_paths(args.paths, args.root))
    check_unique_sources(sources)
    if args.strict:
        skipped = [s for batch in load_batches(sources) for s in batch.skipped]
        if skipped:
            for item in skipped:
                print(f"keel: skipped {item.path}: {item.reason}", file=sys.stderr)
            print(json.dumps(_summary([], "none") | {"skipped": [vars(s) for s in skipped]}))
            print(f"keel: --strict: {len(skipped)} file(s) cannot be ingested; nothing written",
                  file=sys.stderr)  # fmt: skip
            return 1
    target = find_target(settings, "ingest", args.url)
    progress = Progress(sources, quiet=args.quiet)
    done = Done()
    failure: Exception | None = None
    try:
        if isinstance(target, str):
            key = args.api_key or (
                settings.api_key.get_secret_value() if settings.api_key else None
            )
            _upload(target, key, sources, progress, wait_for(settings, args.url), done)
        else:
            _local(settings, args, sources, progress, done)
    except Exception as exc:  # the batches before it stay committed: say what they were
        failure = exc
    finally:
        progress.close()
        if isinstance(target, DataDirLock):
            target.release()
    result = _summary(done.reports, target if isinstance(target, str) else "local")
    result["skipped"] = [vars(s) for s in done.skipped]
    if failure:
        result["error"] = f"{type(failure).__name__}: {failure}"
    print(json.dumps(result))
    if failure:
        print(f"keel: ingestion stopped ({result['error']}); the {result['documents']} "
              "documents before it are stored, and a rerun skips them", file=sys.stderr)  # fmt: skip
        return 2
    if not result["documents"]:
        print("keel: nothing could be ingested", file=sys.stderr)
        return 1
    return 0


@dataclass
class Done:
    """What a run has committed so far: its finished batches' reports and its skipped files."""

    reports: list[dict[str, Any]] = field(default_factory=list)
    skipped: list["Skipped"] = field(default_factory=list)


class Progress:
    """Files, documents and chunks done, with their rates and an ETA by bytes, on stderr: a bar
    on a terminal, a plain line every `PLAIN_PROGRESS_EVERY_S` otherwise, nothing when quiet.
    Skipped files are always named."""

    def __init__(self, sources: "list[SourceFile]", quiet: bool = False):
        from tqdm import tqdm

        self.files_total = len(sources)
        self.bytes_total = sum(s.path.stat().st_size for s in sources)
        self.files = self.docs = self.chunks = self.bytes = self.batch_chunks = 0
        self.started = self.last_line = time.monotonic()
        self.plain = not quiet and not sys.stderr.isatty()
        self.bar = tqdm(
            total=self.bytes_total,
            unit="B",
            unit_scale=True,
            desc="ingest",
            disable=quiet or self.plain,
            file=sys.stderr,
        )

    def say(self, line: str) -> None:
        """A line on stderr that does not break the bar."""
        self.bar.write(line, file=sys.stderr)

    def on_chunks(self, done: int) -> None:
        """Chunks embedded so far in the current batch."""
        self.batch_chunks = done
        self._show()

    def on_batch(
        self, batch: "Batch", documents: int, chunks: int, skipped: "list[Skipped]"
    ) -> None:
        """A batch is committed."""
        self.files += batch.files
        self.bytes += batch.bytes
        self.docs += documents
        self.chunks += chunks
        self.batch_chunks = 0
        for item in skipped:
            self.say(f"keel: skipped {item.path}: {item.reason}")
        self.bar.update(batch.bytes)
        self._show()

    def _show(self) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        chunks = self.chunks + self.batch_chunks
        rates = f"{self.docs / elapsed:.0f} docs/s, {chunks / elapsed:.0f} chunks/s"
        self.bar.set_postfix_str(f"{self.files}/{self.files_total} files, {rates}", refresh=False)
        self.bar.refresh()
        now = time.monotonic()
        if self.plain and now - self.last_line >= PLAIN_PROGRESS_EVERY_S:
            self.last_line = now
            share = self.bytes / self.bytes_total if self.bytes_total else 1.0
            eta = f"{elapsed * (1 - share) / share:.0f} s" if share else "?"
            print(
                f"keel ingest: {self.files}/{self.files_total} files ({share:.0%} of the bytes), "
                f"{self.docs} documents, {chunks} chunks; {rates}; ETA {eta}",
                file=sys.stderr,
            )

    def close(self) -> None:
        """Ends the bar."""
        self.bar.close()


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


def _local(
    settings: Settings,
    args: argparse.Namespace,
    sources: "list[SourceFile]",
    progress: Progress,
    done: Done,
) -> None:
    from corpus import IngestReport, open_corpora
    from corpus.ingest import Batch, ingest_batches, prefetched_batches

    corpus = open_corpora(settings).get(args.tenant)

    def on_batch(batch: Batch, report: IngestReport) -> None:
        done.reports.append(vars(report))
        done.skipped += batch.skipped
        progress.on_batch(batch, report.documents, report.chunks_added, batch.skipped)

    ingest_batches(corpus, prefetched_batches(sources), on_batch, progress.on_chunks)


def _upload_batches(sources: "list[SourceFile]") -> "list[list[SourceFile]]":
    """Consecutive files, at most `UPLOAD_BATCH_FILES` and about `UPLOAD_BATCH_BYTES` each."""
    batches: list[list[SourceFile]] = [[]]
    size = 0
    for src in sources:
        full = size + src.path.stat().st_size > UPLOAD_BATCH_BYTES
        if batches[-1] and (full or len(batches[-1]) >= UPLOAD_BATCH_FILES):
            batches.append([])
            size = 0
        batches[-1].append(src)
        size += src.path.stat().st_size
    return batches


def _upload(
    url: str,
    api_key: str | None,
    sources: "list[SourceFile]",
    progress: Progress,
    wait_s: float,
    done: Done,
) -> None:
    from cli.remote import NOTHING_INGESTED, NOTHING_PREFIX, ServerError, checked, connect
    from corpus.ingest import Batch, Skipped

    # Answers that refuse files, not the request: each file of the batch is then sent alone.
    refusals = (NOTHING_INGESTED, "unsupported_file_type", "payload_too_large")
    client = connect(url, api_key, wait_s)

    def post(batch: "list[SourceFile]") -> dict[str, Any]:
        files = [("files", (src.name, src.path.read_bytes())) for src in batch]
        return dict(checked(client.post("/v1/documents", files=files)).json())

    try:
        for batch in _upload_batches(sources):
            local = {src.name: str(src.path) for src in batch}
            try:
                answers = [post(batch)]
            except ServerError as exc:
                if exc.code not in refusals:
                    raise
                answers = []
                for src in batch:
                    try:
                        answers.append(post([src]))
                    except ServerError as single:
                        if single.code not in refusals:
                            raise
                        reason = single.message.removeprefix(NOTHING_PREFIX)
                        reason = reason.removeprefix(f"{src.name}: ")
                        answers.append({"skipped": [{"path": src.name, "reason": reason}]})
            batch_skipped = [
                Skipped(local.get(s["path"], s["path"]), s["reason"])
                for answer in answers
                for s in answer.get("skipped", [])
            ]
            done.reports += [a for a in answers if "documents" in a]
            done.skipped += batch_skipped
            size = sum(src.path.stat().st_size for src in batch)
            progress.on_batch(
                Batch(files=len(batch), bytes=size),
                sum(a.get("documents", 0) for a in answers),
                sum(a.get("chunks_added", 0) for a in answers),
                batch_skipped,
            )
    finally:
        client.close()
