"""`keel chat`: a terminal client of a running server, over SSE.

Reads questions from stdin, streams each answer as it is generated (or prints it whole when it
comes from the cache), with node progress, citations and degraded/cached marks. Failures (no
server, a bad key, an unknown thread) end with one line on stderr, never a traceback.
"""

import argparse
import sys
from typing import Any

import httpx

from graph.settings import Settings


class ChatError(Exception):
    """A failure to report to the user as one line."""


def add_chat_parser(subparsers: argparse._SubParsersAction) -> None:
    """Registers `chat` on the `keel` subcommands."""
    chat = subparsers.add_parser("chat", help="chat with a running server over SSE")
    chat.add_argument(
        "--url", help="the server (default: KEEL_URL, else http://127.0.0.1:$KEEL_PORT)"
    )
    chat.add_argument("--api-key", help="sent as X-API-Key (default: KEEL_API_KEY)")
    chat.add_argument("--thread", help="resume this thread id (checked before the first prompt)")
    chat.set_defaults(func=run_chat)


# Typed at the prompt, these end the session instead of being asked.
QUIT = frozenset({"/quit", "/exit"})


def run_chat(args: argparse.Namespace) -> int:
    """Runs `keel chat`: 0 at end of input, 1 when the server cannot be used."""
    settings = Settings()
    url = args.url or settings.server_url
    key = args.api_key or (settings.api_key.get_secret_value() if settings.api_key else None)
    headers = {"X-API-Key": key} if key else {}
    try:
        with httpx.Client(
            base_url=url, headers=headers, timeout=httpx.Timeout(10, read=300)
        ) as client:
            thread_id = _check_thread(client, args.thread) if args.thread else None
            opening = _thread_line(thread_id) if thread_id else "new thread"
            print(f"{opening}; /quit or Ctrl-D to quit")
            while True:
                try:
                    message = input("you> ").strip()
                except EOFError:
                    print()
                    return 0
                if message in QUIT:
                    return 0
                if message:
                    if thread_id is None:  # created with the first question: quitting leaves none
                        thread_id = _create_thread(client)
                        print(_thread_line(thread_id))
                    _ask(client, thread_id, message)
    except httpx.TransportError as exc:
        print(
            f"keel chat: cannot reach a keel server at {url} ({_reason(exc)}); "
            "start one with `keel serve` or pass --url",
            file=sys.stderr,
        )
        return 1
    except ChatError as exc:
        print(f"keel chat: {exc}", file=sys.stderr)
        return 1


def _reason(exc: httpx.TransportError) -> str:
    return str(exc) or type(exc).__name__


def _error_text(response: httpx.Response) -> str:
    """`<status> <code>: <message>` from keel's JSON error body, or the raw body."""
    try:
        error = response.json()["error"]
        return f"{response.status_code} {error['code']}: {error['message']}"
    except (ValueError, KeyError, TypeError):
        return f"{response.status_code}: {response.text[:200]}"


def _thread_line(thread_id: str) -> str:
    return f"thread {thread_id} (resume with --thread {thread_id})"


def _check_thread(client: httpx.Client, thread_id: str) -> str:
    """`thread_id` once the server knows it."""
    response = client.get(f"/v1/threads/{thread_id}")
    if response.status_code == 404:
        raise ChatError(f"thread {thread_id} not found on {client.base_url}")
    if response.status_code >= 400:
        raise ChatError(_error_text(response))
    return thread_id


def _create_thread(client: httpx.Client) -> str:
    """A new thread's id."""
    response = client.post("/v1/threads")
    if response.status_code >= 400:
        raise ChatError(_error_text(response))
    return str(response.json()["thread_id"])


def clip(text: str, limit: int) -> str:
    """`text` on one line, cut at the last word boundary within `limit` characters with an
    ellipsis when longer."""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat.rfind(" ", 0, limit)
    return flat[: cut if cut > 0 else limit].rstrip(",;:") + "…"


# Characters of a citation's snippet shown under the answer.
SNIPPET_CHARS = 120


class _Printer:
    """Writes one run's events: the node timings as they come, then the streamed or whole
    answer, its marks (the answering node's own time, cached, degraded) and its citations."""

    def __init__(self) -> None:
        self.answering = False
        self.streamed = False
        self.late_nodes: list[str] = []

    def progress(self, data: dict[str, Any]) -> None:
        item = f"{data['node']} {data.get('duration_ms', 0):.0f} ms"
        if self.answering:
            self.late_nodes.append(item)
        else:
            print(f"  · {item}", end="", flush=True)

    def start_answer(self) -> None:
        if not self.answering:
            print("\nkeel> ", end="", flush=True)
            self.answering = True

    def token(self, text: str) -> None:
        self.start_answer()
        self.streamed = True
        print(text, end="", flush=True)

    def finished(self, data: dict[str, Any]) -> None:
        self.start_answer()
        if not self.streamed:
            print(data.get("answer", ""), end="")
        print()
        marks = [f"· {n}" for n in self.late_nodes]
        if data.get("cached"):
            marks.append("(cached)")
        if data.get("degraded"):
            marks.append(f"(degraded: {'; '.join(data['degraded'])})")
        if marks:
            print("  " + " ".join(marks))
        for citation in data.get("citations", []):
            section = f" § {citation['section']}" if citation.get("section") else ""
            snippet = clip(str(citation.get("snippet", "")), SNIPPET_CHARS)
            print(f"  [{citation.get('n', '?')}] {citation['source']}{section}: {snippet}")


def _ask(client: httpx.Client, thread_id: str, message: str) -> None:
    """Streams one run; a refused run (4xx) or a run error is reported and the chat goes on."""
    from httpx_sse import connect_sse

    printer = _Printer()
    # enqueue: the previous turn's run may still be closing on the server when the next starts.
    body = {"message": message, "multitask_strategy": "enqueue"}
    with connect_sse(client, "POST", f"/v1/threads/{thread_id}/runs/stream", json=body) as source:
        if source.response.status_code != 200:
            source.response.read()
            print(f"keel chat: {_error_text(source.response)}", file=sys.stderr)
            return
        for sse in source.iter_sse():
            data = sse.json()
            if sse.event == "node.finished":
                printer.progress(data)
            elif sse.event == "token":
                printer.token(data["text"])
            elif sse.event == "run.finished":
                printer.finished(data)
            elif sse.event == "run.error":
                print(file=sys.stderr)
                print(f"keel chat: run failed: {data['code']}: {data['message']}", file=sys.stderr)
