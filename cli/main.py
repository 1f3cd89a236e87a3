"""The `keel` command line: serve, ingest, chat, eval, bench."""

import argparse
import json
import logging
import sys
from pathlib import Path

from cli.bench import add_bench_parser
from evals.cli import add_eval_parser
from graph.context import DEFAULT_TENANT
from graph.errors import KeelError
from graph.settings import Settings


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from api.app import create_app
    from api.auth import unauthenticated_bind_refusal
    from api.server import DrainingServer

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    if args.allow_unauthenticated:
        overrides["allow_unauthenticated"] = True
    settings = Settings(**overrides)
    refusal = unauthenticated_bind_refusal(settings)
    if refusal:
        print(f"keel: {refusal}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    app = create_app(settings)
    config = uvicorn.Config(
        app, host=settings.host, port=settings.port, log_level="info", timeout_graceful_shutdown=10
    )
    DrainingServer(config, app).run()
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


def _chat(args: argparse.Namespace) -> int:
    import httpx
    from httpx_sse import connect_sse

    with httpx.Client(base_url=args.url, timeout=httpx.Timeout(10, read=300)) as client:
        thread_id = args.thread or client.post("/v1/threads").raise_for_status().json()["thread_id"]
        print(
            f"thread {thread_id} (resume with --thread {thread_id}); Ctrl-D to quit",
            file=sys.stderr,
        )
        while True:
            try:
                message = input("you> ").strip()
            except EOFError:
                return 0
            if not message:
                continue
            print("keel> ", end="", flush=True)
            with connect_sse(
                client, "POST", f"/v1/threads/{thread_id}/runs/stream", json={"message": message}
            ) as source:
                if source.response.status_code != 200:
                    source.response.read()
                    print(f"error: {source.response.text}", file=sys.stderr)
                    continue
                for sse in source.iter_sse():
                    data = sse.json()
                    if sse.event == "token":
                        print(data["text"], end="", flush=True)
                    elif sse.event == "run.finished":
                        print()
                        for c in data["citations"]:
                            print(f"  [{c['n']}] {c['source']}: {c['snippet'][:100]}")
                        if data["degraded"]:
                            print(f"  (degraded: {', '.join(data['degraded'])})")
                    elif sse.event == "run.error":
                        print(f"\nerror: {data['message']}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `keel`."""
    parser = argparse.ArgumentParser(prog="keel", description=__doc__)
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

    chat = sub.add_parser("chat", help="chat with a running server over SSE")
    chat.add_argument("--url", default="http://127.0.0.1:8000")
    chat.add_argument("--thread", help="resume this thread id")
    chat.set_defaults(func=_chat)

    add_bench_parser(sub)
    add_eval_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `keel` command."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except KeelError as exc:
        print(f"keel: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
