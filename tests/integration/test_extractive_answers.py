"""Extractive answers (no LLM configured) through a real `keel serve` and a real SSE client."""

import re
from pathlib import Path

import httpx
import pytest

from graph.prompts import NOT_FOUND
from tests.integration.test_server import new_thread, stream_run

SSE_QUESTION = "How often do idle SSE connections get a keep-alive comment?"
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


def test_multi_sentence_answers_cite_contiguously_with_supporting_snippets(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        events = stream_run(
            client,
            new_thread(client),
            "How does keel avoid duplicate chunks when the same file is ingested twice?",
        )
    finished = events[-1][2]
    pairs = re.findall(r"\s*(.+?)\s*\[(\d+)\]", finished["answer"])
    assert pairs and "#" not in finished["answer"]
    assert [int(n) for _, n in pairs] == list(range(1, len(pairs) + 1))
    assert [(c["n"], c["snippet"]) for c in finished["citations"]] == [
        (int(n), text) for text, n in pairs
    ]


def test_a_question_nothing_answers_is_told_so(server):
    with httpx.Client(base_url=server.url, timeout=60) as client:
        events = stream_run(
            client, new_thread(client), "What is the boiling point of tungsten on Mars?"
        )
    finished = events[-1][2]
    assert finished["answer"] == NOT_FOUND and finished["citations"] == []
    assert "no_relevant_passage" in finished["degraded"]
