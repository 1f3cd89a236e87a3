"""The `keel` command line: serve, ingest, chat, eval, bench."""

import argparse
import json
import logging
import sys
from pathlib import Path

from cli.bench import add_bench_parser
from cli.chat import add_chat_parser
from evals.cli import add_eval_parser
from graph.context import DEFAULT_TENANT
from graph.errors import KeelError
from graph.settings import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.auth import unauthenticated_bind_refusal

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if args.allow_unauthenticated:
        overrides["allow_unauthenticated"] = True
    settings = Settings(**overrides)
    refusal = unauthenticated_bind_refusal(settings)
    if refusal:
        print(f"keel: {refusal}", file=sys.stderr)
        return 2
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level="info",
        timeout_graceful_shutdown=10,
    )
    return 0


def _ingest(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from integrations.corpus import open_corpora
    from integrations.loaders import iter_paths, load_file

    settings = Settings()
    docs = [doc for path in iter_paths(args.paths) for doc in load_file(path)]
    corpus = open_corpora(settings).get(args.tenant)
    with tqdm(desc="chunks embedded", unit="chunk", disable=args.quiet) as bar:
        report = corpus.ingest(docs, progress=lambda done: bar.update(done - bar.n))
    print(json.dumps(vars(report) | {"doc_ids": len(report.doc_ids)}))
    return 0


def _configure_logging(verbose: bool) -> None:
    """keel's own INFO logs; other libraries' (presidio loads 19 recognizers at INFO) only when
    verbose."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    logging.getLogger("keel").setLevel(logging.INFO)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `keel`."""
    parser = argparse.ArgumentParser(prog="keel", description=__doc__)
    parser.add_argument(
        "--verbose", action="store_true", help="also show INFO logs of third-party libraries"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP server (uvicorn)")
    serve.add_argument("--host")
    serve.add_argument("--port", type=int)
    serve.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="serve a non-loopback host with no authentication (KEEL_ALLOW_UNAUTHENTICATED)",
    )
    serve.set_defaults(func=_serve)

    ingest = sub.add_parser("ingest", help="ingest .txt .md .html .pdf .jsonl files or folders")
    ingest.add_argument("paths", nargs="+", type=Path)
    ingest.add_argument("--quiet", action="store_true", help="no progress bar")
    ingest.add_argument(
        "--tenant", default=DEFAULT_TENANT, help="the tenant whose collection receives the files"
    )
    ingest.set_defaults(func=_ingest)

    add_chat_parser(sub)
    add_bench_parser(sub)
    add_eval_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `keel` command."""
    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return int(args.func(args))
    except KeelError as exc:
        print(f"keel: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
