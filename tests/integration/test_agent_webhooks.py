"""Run webhooks through the official Python client: after a run ends its replica POSTs the run
(body, values or error, times) to a loopback receiver, retrying once on a 5xx; a webhook that
cannot be delivered changes nothing about the run."""

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from langgraph_sdk import get_client

from cli.process import free_port
from tests.conftest import Server, llm_server

QUESTION = "How does keel avoid duplicate chunks when the same file is ingested twice?"
INPUT = {"messages": [{"role": "user", "content": QUESTION}]}
FRESH = {"use_cache": False}


class Receiver:
    """A loopback HTTP server that records the JSON posted to it; `/flaky/...` answers 500 to
    the first post on each path."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, dict]] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                first = all(path != self.path for path, _ in received)
                received.append((self.path, body))
                self.send_response(500 if first and self.path.startswith("/flaky") else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait_for(self, path: str, count: int, timeout_s: float = 15) -> list[dict]:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            bodies = [body for p, body in self.posts if p == path]
            if len(bodies) >= count:
                return bodies
            time.sleep(0.05)
        raise AssertionError(f"{path}: {len(self.posts)} posts in all, not {count} here")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver()
    yield started
    started.server.shutdown()


@pytest.fixture(scope="module")
def server(
    tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path, postgres_url: str, fake_llm_url: str
) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("webhooks")
    env = {
        "KEEL_LLM_MODEL": "slow-40-25",
        "KEEL_WEBHOOK_ALLOW_PRIVATE": "true",  # the receiver is on loopback
        "KEEL_WEBHOOK_TIMEOUT_S": "2",
    }
    with llm_server(tmp, corpus_dir, fake_llm_url, postgres_url, **env) as started:
        yield started


async def test_a_finished_run_is_posted_with_one_retry_on_5xx(
    server: Server, receiver: Receiver
) -> None:
    client = get_client(url=server.url)
    thread_id = (await client.threads.create())["thread_id"]
    values = await client.runs.wait(
        thread_id, "keel", input=INPUT, webhook=f"{receiver.url}/flaky/done", metadata={"k": 1}
    )
    first, second = receiver.wait_for("/flaky/done", 2)
    assert first["run_id"] == second["run_id"]
    posted = second
    [run] = await client.runs.list(thread_id)
    assert posted["run_id"] == run["run_id"] and posted["thread_id"] == thread_id
    assert posted["status"] == "success" and posted["metadata"] == {"k": 1}
    assert posted["assistant_id"] == run["assistant_id"] and "error" not in posted
    assert posted["values"]["answer"] == values["answer"]
    assert posted["values"]["messages"] == values["messages"]
    assert posted["run_started_at"] <= posted["run_ended_at"] <= posted["webhook_sent_at"]


async def test_a_cancelled_run_is_posted_with_its_error(server: Server, receiver: Receiver) -> None:
    client = get_client(url=server.url)
    thread_id = (await client.threads.create())["thread_id"]
    run = await client.runs.create(
        thread_id,
        "keel",
        input=INPUT,
        stream_mode="messages-tuple",
        context=FRESH,
        webhook=f"{receiver.url}/cancelled",
    )
    async for part in client.runs.join_stream(thread_id, run["run_id"]):
        if part.event == "messages":
            break
    await client.runs.cancel(thread_id, run["run_id"], wait=True)
    [posted] = receiver.wait_for("/cancelled", 1)
    assert posted["status"] == "interrupted"
    assert posted["error"] == {"error": "cancelled", "message": "cancelled"}
    assert posted["values"]["messages"][0]["content"] == QUESTION


async def test_an_undeliverable_webhook_changes_nothing_and_bad_urls_are_refused(
    server: Server,
) -> None:
    client = get_client(url=server.url)
    thread_id = (await client.threads.create())["thread_id"]
    nobody = f"http://127.0.0.1:{free_port()}/hook"  # refused connections, twice
    parts = [
        p
        async for p in client.runs.stream(
            thread_id, "keel", input=INPUT, stream_mode="updates", webhook=nobody
        )
    ]
    assert [next(iter(p.data)) for p in parts[1:]][-1] in ("generate", "cache_lookup")
    run = await client.runs.get(thread_id, parts[0].data["run_id"])
    assert run["status"] == "success"
    values = await client.runs.wait(thread_id, "keel", input=INPUT, webhook=nobody)
    assert values["answer"]
    async with httpx.AsyncClient(base_url=server.url) as http:
        for url in ("ftp://127.0.0.1/hook", "file:///etc/passwd", "http:///no-host", "hook"):
            body = {"assistant_id": "keel", "input": INPUT, "webhook": url}
            refused = await http.post(f"/threads/{thread_id}/runs", json=body)
            assert refused.status_code == 422, (url, refused.text)
            assert "webhook" in refused.text
