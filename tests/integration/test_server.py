"""A real `keel serve` process on Postgres, driven by a real SSE client (httpx-sse)."""

import json
import sqlite3
import time
import uuid
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from corpus import open_corpora
from corpus.loaders import load_paths
from graph.settings import Settings
from tests.conftest import ROOT, scifact_docs

QUESTION = "How does keel avoid duplicate chunks when the same file is ingested twice?"


def stream_run(
    client: httpx.Client, thread_id: str, message: str, **body
) -> list[tuple[str, str, dict]]:
    """(event, id, data) for every event of one streamed run."""
    with connect_sse(
        client, "POST", f"/v1/threads/{thread_id}/runs/stream", json={"message": message, **body}
    ) as source:
        assert source.response.status_code == 200
        assert source.response.headers["content-type"].startswith("text/event-stream")
        return [(e.event, e.id, json.loads(e.data)) for e in source.iter_sse()]


@pytest.fixture
def server(start_server, postgres_url: str, data_dir: Path):
    return start_server(KEEL_DATABASE_URL=postgres_url, KEEL_DATA_DIR=str(data_dir))


def new_thread(client: httpx.Client) -> str:
    response = client.post("/v1/threads")
    assert response.status_code == 201
    return response.json()["thread_id"]


def test_full_run_event_order_tokens_and_ids(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        thread_id = new_thread(client)
        events = stream_run(client, thread_id, QUESTION + " Write to ann@example.com")
    names = [e for e, _, _ in events]
    assert names[0] == "run.started" and names[-1] == "run.finished"
    nodes = [d["node"] for e, _, d in events if e == "node.started"]
    assert nodes == ["guard", "cache_lookup", "retrieve", "rerank", "generate"]
    assert [d["node"] for e, _, d in events if e == "node.finished"] == nodes
    # every node.started is followed by its node.finished before the next node starts
    lifecycle = [(e, d["node"]) for e, _, d in events if e.startswith("node.")]
    assert lifecycle == [(kind, n) for n in nodes for kind in ("node.started", "node.finished")]
    run_id = events[0][2]["run_id"]
    seqs = [int(i.split(":")[1]) for _, i, _ in events]
    assert all(i.split(":")[0] == run_id for _, i, _ in events)
    assert seqs == list(range(1, len(events) + 1))
    tokens = [d["text"] for e, _, d in events if e == "token"]
    finished = events[-1][2]
    assert tokens and "".join(tokens).strip() == finished["answer"]
    assert finished["citations"][0]["source"] == "ingestion.txt"
    guard = next(d for e, _, d in events if e == "node.finished" and d["node"] == "guard")
    assert guard["summary"]["redactions"] == {"EMAIL_ADDRESS": 1}
    retrieve = next(d for e, _, d in events if e == "node.finished" and d["node"] == "retrieve")
    assert retrieve["summary"]["passages"] and retrieve["duration_ms"] > 0


def test_second_turn_sees_first_and_survives_restart(
    start_server, postgres_url: str, data_dir: Path
):
    env = {"KEEL_DATABASE_URL": postgres_url, "KEEL_DATA_DIR": str(data_dir)}
    first = start_server(**env)
    with httpx.Client(base_url=first.url, timeout=60) as client:
        thread_id = new_thread(client)
        stream_run(client, thread_id, "How large are chunks?")
        stream_run(client, thread_id, "Do chunks overlap?")
        state = client.get(f"/v1/threads/{thread_id}").json()
    assert [m["content"] for m in state["messages"] if m["role"] == "user"] == [
        "How large are chunks?",
        "Do chunks overlap?",
    ]
    first.stop()
    second = start_server(**env)
    with httpx.Client(base_url=second.url, timeout=60) as client:
        events = stream_run(client, thread_id, "Where are checkpoints stored?")
        assert events[0][2]["checkpoint_id"] is not None  # resumed from the saved checkpoint
        state = client.get(f"/v1/threads/{thread_id}").json()
        history = client.get(f"/v1/threads/{thread_id}/history").json()
    assert [m["content"] for m in state["messages"] if m["role"] == "user"] == [
        "How large are chunks?",
        "Do chunks overlap?",
        "Where are checkpoints stored?",
    ]
    assert len(state["messages"]) == 6
    assert history[0]["step"] > history[-1]["step"]


def test_wait_cache_hit_and_delete(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        thread_id = new_thread(client)
        first = client.post(f"/v1/threads/{thread_id}/runs/wait", json={"message": QUESTION})
        second = client.post(f"/v1/threads/{thread_id}/runs/wait", json={"message": QUESTION})
        assert first.status_code == second.status_code == 200
        assert first.json()["cached"] is False and second.json()["cached"] is True
        assert second.json()["answer"] == first.json()["answer"]
        # a healthy cache hit is a full answer: not degraded, no alert-feeding service level
        assert second.json()["service_level"] == "full"
        assert "x-keel-degraded" not in second.headers
        assert client.delete(f"/v1/threads/{thread_id}").status_code == 204
        assert client.get(f"/v1/threads/{thread_id}").status_code == 404
        assert client.get(f"/v1/threads/{thread_id}/history").status_code == 404


def test_bad_input_gets_clear_4xx(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        thread_id = new_thread(client)
        url = f"/v1/threads/{thread_id}/runs/stream"
        cases = [
            (
                client.post(
                    url, content=b"{not json", headers={"content-type": "application/json"}
                ),
                400,
                "invalid_json",
            ),
            (
                client.post(
                    url,
                    content=b"\x00\xff\xfe binary",
                    headers={"content-type": "application/json"},
                ),
                400,
                "invalid_json",
            ),
            (client.post(url, json={"message": ""}), 422, "invalid_request"),
            (client.post(url, json={"message": "hi", "unknown": 1}), 422, "invalid_request"),
            (client.post(url, json={"message": "x" * 9000}), 422, "invalid_input"),
            (
                client.post(url, json={"message": "hi", "context": {"top_k": 0}}),
                422,
                "invalid_request",
            ),
            (
                client.post("/v1/threads/does-not-exist/runs/stream", json={"message": "hi"}),
                404,
                "not_found",
            ),
            (client.get("/v1/threads/bad%20id!"), 422, "invalid_request"),
            (
                client.post(
                    url,
                    content=b"x" * (65 * 1024 * 1024),
                    headers={"content-type": "application/json"},
                ),
                413,
                "payload_too_large",
            ),
        ]
        for response, status, code in cases:
            assert response.status_code == status, response.text
            assert response.json()["error"]["code"] == code
            assert "Traceback" not in response.text
        # nothing half-written: the thread still has no messages
        assert client.get(f"/v1/threads/{thread_id}").json()["messages"] == []


def test_documents_upload_replace_and_delete(server, tmp_path: Path):
    note = tmp_path / "zebra-facts.md"
    note.write_text("# Zebras\n\nZebras have black and white stripes that deter biting flies.")
    with httpx.Client(base_url=server.url, timeout=120) as client:
        up = client.post(
            "/v1/documents", files=[("files", (note.name, note.read_bytes(), "text/markdown"))]
        )
        assert up.status_code == 201, up.text
        body = up.json()
        assert body["doc_ids"] == ["zebra-facts.md"] and body["chunks_added"] == 1
        again = client.post(
            "/v1/documents", files=[("files", (note.name, note.read_bytes(), "text/markdown"))]
        )
        assert again.json()["documents_unchanged"] == 1 and again.json()["chunks_added"] == 0
        thread_id = new_thread(client)
        answer = client.post(
            f"/v1/threads/{thread_id}/runs/wait", json={"message": "Why do zebras have stripes?"}
        ).json()
        assert answer["citations"][0]["source"] == "zebra-facts.md"
        bad = client.post(
            "/v1/documents", files=[("files", ("x.exe", b"MZ\x00\x01", "application/octet-stream"))]
        )
        assert bad.status_code == 415 and bad.json()["error"]["code"] == "unsupported_file_type"
        assert client.delete("/v1/documents/zebra-facts.md").status_code == 204
        assert client.delete("/v1/documents/zebra-facts.md").status_code == 404
        after = client.post(
            f"/v1/threads/{thread_id}/runs/wait",
            json={"message": "Why do zebras have stripes?", "context": {"use_cache": False}},
        ).json()
        assert all(c["source"] != "zebra-facts.md" for c in after["citations"])


def test_health_ready_and_openapi(server):
    with httpx.Client(base_url=server.url, timeout=30) as client:
        assert client.get("/health").json() == {"status": "ok"}
        ready = client.get("/ready")
        assert ready.status_code == 200
        assert ready.json()["checks"] == {"checkpoints": "ok", "corpus": "ok", "cache": "ok"}
        paths = client.get("/openapi.json").json()["paths"]
        assert "/v1/threads/{thread_id}/runs/stream" in paths and "/v1/documents" in paths
        assert client.get("/docs").status_code == 200


def test_redis_cache_shared_by_two_replicas(
    start_servers, postgres_url: str, data_dir: Path, redis_url: str, tmp_path: Path
):
    import shutil

    other_dir = tmp_path / "replica-b"
    shutil.copytree(data_dir, other_dir)
    env = {"KEEL_DATABASE_URL": postgres_url, "KEEL_REDIS_URL": redis_url}
    a, b = start_servers(
        {**env, "KEEL_DATA_DIR": str(data_dir)}, {**env, "KEEL_DATA_DIR": str(other_dir)}
    )
    # unique per run: the configured Redis may keep entries from earlier sessions
    question = f"How does keel avoid duplicate chunks? ({uuid.uuid4().hex})"
    with httpx.Client(timeout=60) as client:
        tid = client.post(f"{a.url}/v1/threads").json()["thread_id"]
        first = client.post(
            f"{a.url}/v1/threads/{tid}/runs/wait", json={"message": question}
        ).json()
        second = client.post(
            f"{b.url}/v1/threads/{tid}/runs/wait", json={"message": question}
        ).json()
    assert first["cached"] is False
    assert second["cached"] is True and second["answer"] == first["answer"]


def test_server_embeds_sentence_vectors_in_the_background(start_server, tmp_path: Path):
    """Ingestion stores only document heads; the server fills in every chunk's sentence vectors
    without waiting for queries, then answers from them."""
    settings = Settings(data_dir=tmp_path / "data")  # sentence_vectors="lazy", the default
    corpus = open_corpora(settings).get()
    docs = load_paths([ROOT / "samples" / "corpus"], root=ROOT / "samples" / "corpus")
    chunks = corpus.ingest(docs + scifact_docs(20)).chunks_added
    with sqlite3.connect(settings.data_dir / "corpus.sqlite") as db:  # heads only, so far
        assert db.execute(
            "SELECT count(*) FROM keel_corpus_chunks WHERE vectors IS NOT NULL"
        ).fetchone() == (0,)
    del corpus  # the server owns the embedded store from here on
    server = start_server(KEEL_DATA_DIR=str(settings.data_dir))
    expected = f"sentence vectors of all {chunks} chunks of keel stored"
    deadline = time.monotonic() + 120
    while expected not in server.log.read_text():
        assert time.monotonic() < deadline, server.tail()
        time.sleep(0.5)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        events = stream_run(client, new_thread(client), QUESTION)
    assert events[-1][2]["citations"][0]["source"] == "ingestion.txt"
