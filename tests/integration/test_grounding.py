"""The grounding check through a real `keel serve`, a real SSE client and the fake
OpenAI-compatible model (`tests/fake_llm.py`), one case per model: a correct cited answer
passes untouched; an uncited one, one citing a passage that does not hold it, and one from the
model's memory are replaced (extractive answer or "not found") and marked."""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from graph.prompts import NOT_FOUND
from tests.conftest import Server, llm_server
from tests.fake_llm import INVENTED
from tests.integration.test_server import new_thread, stream_run

QUESTION = "How does keel avoid duplicate chunks when the same file is ingested twice?"
MODELS = ("quote-1-1", "quote-1-0", "quote-2-1", "quote-1-1+invent", "recall")


@pytest.fixture(scope="module")
def server(
    postgres_url: str, corpus_dir: Path, fake_llm_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Server]:
    """One server for every case: each run picks its model (`context.model`)."""
    tmp = tmp_path_factory.mktemp("grounding")
    env = {
        "KEEL_GROUNDING_CHECK": "true",  # what these tests are about
        "KEEL_LLM_MODEL": MODELS[0],
        "KEEL_LLM_ALLOWED_MODELS": ",".join(MODELS[1:]),
    }
    with llm_server(tmp, corpus_dir, fake_llm_url, postgres_url, **env) as server:
        yield server


def ask(server, model: str | None, question: str = QUESTION) -> tuple[list[dict], dict, dict]:
    """The token events and `run.finished` of one run on `model` (None: the configured one),
    and the thread after it."""
    with httpx.Client(base_url=server.url, timeout=60) as client:
        thread_id = new_thread(client)
        context = {"model": model} if model else {}
        events = stream_run(client, thread_id, question, context=context)
        thread = client.get(f"/v1/threads/{thread_id}").json()
    assert events[-1][0] == "run.finished"
    return [d for e, _, d in events if e == "token"], events[-1][2], thread


def assert_replaced(tokens: list[dict], finished: dict, thread: dict, why: str) -> None:
    """The model's text never reached the client: only the extractive answer streamed (each
    token a cited sentence), it is the final answer, and the run says why."""
    assert [r for r in finished["degraded"] if r.startswith("ungrounded_answer")] == [
        f"ungrounded_answer: {why}"
    ]
    assert finished["service_level"] == "documents_only"
    assert finished["citations"] and all("citation" in t for t in tokens)
    assert not any(t.get("replace") for t in tokens)
    assert "".join(t["text"] for t in tokens).strip() == finished["answer"]
    assert thread["messages"][-1]["content"] == finished["answer"]


def test_a_correct_cited_answer_passes_untouched(server):
    tokens, finished, thread = ask(server, "quote-1-1")
    assert finished["degraded"] == [] and finished["service_level"] == "full"
    assert finished["answer"].endswith(" [1].") and len(tokens) > 5  # streamed word by word
    assert "".join(t["text"] for t in tokens) == finished["answer"]
    assert all(t["node"] == "generate" and "citation" not in t for t in tokens)
    assert [c["n"] for c in finished["citations"]] == [1]
    assert thread["messages"][-1]["content"] == finished["answer"]


def test_an_uncited_answer_is_replaced_by_the_extractive_one(server):
    tokens, finished, thread = ask(server, "quote-1-0")
    assert_replaced(tokens, finished, thread, "no citation")


def test_a_citation_to_a_passage_that_does_not_hold_the_sentence_is_caught(server):
    tokens, finished, thread = ask(server, "quote-2-1")
    assert_replaced(tokens, finished, thread, "not supported by the passages it cites: [1]")


def test_text_already_shown_is_replaced_with_a_replace_token(server):
    tokens, finished, _ = ask(server, "quote-1-1+invent")
    first = next(i for i, t in enumerate(tokens) if t.get("replace"))
    shown = "".join(t["text"] for t in tokens[:first])
    # The supported first sentence went out word by word; the invented one never did.
    assert shown.endswith("[1]. ") and INVENTED.split()[0] not in shown.split()
    assert all("citation" not in t for t in tokens[:first])
    assert all("citation" in t for t in tokens[first:])
    assert "".join(t["text"] for t in tokens[first:]).strip() == finished["answer"]
    assert INVENTED not in finished["answer"]
    assert finished["service_level"] == "documents_only"
    assert "ungrounded_answer: not supported by the passages it cites: [1]" in finished["degraded"]


def test_an_answer_from_memory_to_a_question_the_documents_cannot_answer_is_not_found(server):
    tokens, finished, thread = ask(server, "recall", "What is the boiling point of mercury?")
    assert finished["answer"] == NOT_FOUND and finished["found"] is False
    assert finished["citations"] == [] and [t["text"] for t in tokens] == [NOT_FOUND]
    assert finished["service_level"] == "documents_only"
    assert any(r.startswith("ungrounded_answer: not supported") for r in finished["degraded"])
    assert thread["messages"][-1]["content"] == NOT_FOUND


def test_the_fallback_models_answer_is_checked_too(
    start_server, postgres_url, data_dir, fake_llm_url
):
    server = start_server(
        KEEL_DATABASE_URL=postgres_url,
        KEEL_DATA_DIR=str(data_dir),
        KEEL_LLM_BASE_URL=fake_llm_url,
        KEEL_LLM_API_KEY="test",
        KEEL_LLM_MODEL="fail500",
        KEEL_LLM_FALLBACK_MODEL="quote-1-0",
        KEEL_LLM_MAX_RETRIES="0",
    )
    tokens, finished, thread = ask(server, None)
    assert finished["degraded"][0].startswith("generate: ProviderError")
    assert_replaced(tokens, finished, thread, "no citation")
    assert all(t["node"] == "fallback" for t in tokens)
