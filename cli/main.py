"""The `keel` command line: serve, ingest, chat, eval, bench."""

import argparse
import sys
from importlib.metadata import version

from cli.bench import add_bench_parser
from cli.chat import add_chat_parser
from cli.docs import add_docs_parser
from cli.ingest import add_ingest_parser
from evals.cli import add_eval_parser
from graph.errors import KeelError
from graph.settings import Settings
from runtime import logs


def _serve(args: argparse.Namespace) -> int:
    from api.auth import unauthenticated_bind_refusal
    from cli.datadir import hold_for_serving
    from cli.serving import serve

    given = (("host", args.host), ("port", args.port), ("workers", args.workers))
    overrides = {k: v for k, v in given if v is not None}
    if args.allow_unauthenticated:
        overrides["allow_unauthenticated"] = True
    settings = Settings(**overrides)
    refusal = unauthenticated_bind_refusal(settings)
    if refusal:
        print(f"keel: {refusal}", file=sys.stderr)
        return 2
    logs.configure(settings.log_format, args.verbose)
    lock = hold_for_serving(settings)
    try:
        return serve(settings, args.verbose)
    finally:
        if lock:
            lock.release()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `keel`."""
    parser = argparse.ArgumentParser(prog="keel", description=__doc__)
    parser.add_argument("--version", action="version", version=f"keel {version('keel')}")
    parser.add_argument(
        "--verbose", action="store_true", help="also show INFO logs of third-party libraries"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    defaults = Settings.model_fields
    serve = sub.add_parser(
        "serve",
        help="run the HTTP server (uvicorn)",
        description="Serves the /v1 API, the LangGraph Agent Server API, MCP, A2A and the chat "
        "page at /. Every option defaults to its KEEL_ environment variable.",
    )
    serve.add_argument(
        "--host",
        help=f"interface to bind (KEEL_HOST, default {defaults['host'].default}; a non-loopback "
        "host needs authentication or --allow-unauthenticated)",
    )
    serve.add_argument(
        "--port", type=int, help=f"TCP port (KEEL_PORT, default {defaults['port'].default})"
    )
    serve.add_argument(
        "--workers",
        type=int,
        help=f"worker processes (KEEL_WORKERS, default {defaults['workers'].default})",
    )
    serve.add_argument(
        "--allow-unauthenticated",
        action="store_true",
        help="serve a non-loopback host with no authentication (KEEL_ALLOW_UNAUTHENTICATED)",
    )
    serve.set_defaults(func=_serve)

    add_ingest_parser(sub)
    add_docs_parser(sub)

    add_chat_parser(sub)
    add_bench_parser(sub)
    add_eval_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `keel` command."""
    args = build_parser().parse_args(argv)
    logs.configure("text", args.verbose)
    try:
        return int(args.func(args))
    except KeelError as exc:
        print(f"keel: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
