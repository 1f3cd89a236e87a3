"""Extractive answers (no LLM configured) through a real `keel serve` and a real SSE client."""

import json
import re
from pathlib import Path

import httpx
import pytest
from httpx_sse import connect_sse

from graph.prompts import NOT_FOUND
from tests.integration.test_server import new_thread, stream_run

SSE_QUESTION = "How often do idle SSE connections get a keep-alive comment?"
# Answered by three sentences of streaming.md.
EVENTS_QUESTION = "Which events does keel stream to a client during a run?"
KEEPALIVE = (
    "Idle connections receive a comment line every fifteen seconds so that proxies keep them open."
)


@pytest.fixture
def server(start_server, postgres_url: str, data_dir: Path):
    return start_server(KEEL_DATABASE_URL=postgres_url, KEEL_DATA_DIR=str(data_dir))


def test_sse_question_is_answered_by_the_keepalive_sentence_alone(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        events = stream_run(client, new_thread(client), SSE_QUESTION)
    finished = events[-1][2]
    assert events[-1][0] == "run.finished" and finished["degraded"] == []
    assert finished["answer"] == f"{KEEPALIVE} [1]"
    assert "".join(d["text"] for e, _, d in events if e == "token").strip() == finished["answer"]
    [citation] = finished["citations"]
    assert citation["n"] == 1 and citation["source"] == "streaming.md"
    assert citation["snippet"] == KEEPALIVE


def test_multi_sentence_answers_stream_sentence_by_sentence_with_their_citations(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        events = stream_run(
            client,
            new_thread(client),
            EVENTS_QUESTION,
        )
    finished = events[-1][2]
    pairs = re.findall(r"\s*(.+?)\s*\[(\d+)\]", finished["answer"])
    assert len(pairs) >= 2 and "#" not in finished["answer"]
    assert [int(n) for _, n in pairs] == list(range(1, len(pairs) + 1))
    assert [(c["n"], c["snippet"]) for c in finished["citations"]] == [
        (int(n), text) for text, n in pairs
    ]
    # Streamed sentence by sentence, each token bringing the citation it adds.
    tokens = [d for e, _, d in events if e == "token"]
    assert [t["text"] for t in tokens] == [f"{text} [{n}] " for text, n in pairs]
    assert [t["citation"] for t in tokens] == [
        {k: v for k, v in c.items() if k != "section"} for c in finished["citations"]
    ]

    # The Agent Server dialect: one `messages` chunk per sentence too.
    with httpx.Client(base_url=server.url, timeout=60) as client:
        thread_id = client.post("/threads", json={}).json()["thread_id"]
        body = {
            "assistant_id": "keel",
            "input": {"messages": [{"type": "human", "content": EVENTS_QUESTION}]},
            "stream_mode": ["messages-tuple"],
            "context": {"use_cache": False},
        }
        with connect_sse(client, "POST", f"/threads/{thread_id}/runs/stream", json=body) as sse:
            assert sse.response.status_code == 200
            parts = [(e.event, json.loads(e.data)) for e in sse.iter_sse()]
        answer = client.get(f"/threads/{thread_id}/state").json()["values"]["answer"]
    chunks = [data[0]["content"] for event, data in parts if event == "messages"]
    sentences = re.findall(r"\s*(.+?\[\d+\])", answer)
    assert len(sentences) >= 2 and chunks == [f"{s} " for s in sentences]


def test_a_question_nothing_answers_is_told_so(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        events = stream_run(
            client, new_thread(client), "What is the boiling point of tungsten on Mars?"
        )
    finished = events[-1][2]
    assert finished["answer"] == NOT_FOUND and finished["citations"] == []
    # Not finding is an answer, not a degradation: generate says so, the fallback never runs.
    assert finished["found"] is False and finished["degraded"] == []
    assert finished["service_level"] == "full"
    assert [d["node"] for e, _, d in events if e == "node.started"][-1] == "generate"
    assert [d["text"] for e, _, d in events if e == "token"] == [NOT_FOUND]
