"""The grounding check's pieces: the support score, the per-sentence gate over a token stream
(with the real MiniLM), and the calibration script's smoke run."""

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from integrations.embeddings import MiniLMEmbedder
from integrations.text import split_sentences
from nodes.grounding import SUPPORT_THRESHOLD, GroundingGate, cited, claim_text, support_scores
from runtime.agent_events import ModeEvents

ROOT = Path(__file__).resolve().parents[2]
PASSAGES = [
    "Ingesting the same file twice does not create duplicate chunks. Unchanged files are "
    "skipped, and a changed file replaces its old chunks.",
    "Idle connections receive a comment line every fifteen seconds so that proxies keep them "
    "open. Each event has an id.",
]


@pytest.fixture(scope="module")
def model() -> MiniLMEmbedder:
    return MiniLMEmbedder()


def gate_over(model: MiniLMEmbedder) -> GroundingGate:
    evidence = [(s, model.embed(s)) for s in map(split_sentences, PASSAGES)]
    future: asyncio.Future = asyncio.get_running_loop().create_future()
    future.set_result(evidence)
    return GroundingGate(model.embed, future)


async def run_gate(model: MiniLMEmbedder, answer: str, size: int = 3) -> tuple[GroundingGate, str]:
    """Streams `answer` through a gate in pieces of `size` characters; returns what left."""
    gate = gate_over(model)
    out: list[str] = []
    drain = asyncio.ensure_future(gate.run(out.append))
    for i in range(0, len(answer), size):
        gate.feed(answer[i : i + size])
        await asyncio.sleep(0)
    gate.close()
    await drain
    assert "".join(out) == gate.released
    return gate, "".join(out)


def test_support_scores_tell_a_quoted_sentence_from_an_unrelated_one(model):
    sentences = split_sentences(PASSAGES[0])
    vectors = model.embed(sentences)
    quoted = "Unchanged files are skipped"
    scores = support_scores(quoted, model.embed([quoted])[0], sentences, vectors)
    assert scores.shape == (2,) and scores.argmax() == 1 and scores.max() >= SUPPORT_THRESHOLD
    invented = "Mercury boils at 356.7 degrees Celsius"
    assert support_scores(invented, model.embed([invented])[0], sentences, vectors).max() < (
        SUPPORT_THRESHOLD
    )
    assert support_scores("x", np.zeros(384), [], np.zeros((0, 384))).size == 0


def test_markers_and_markdown_are_not_part_of_a_claim():
    assert (
        claim_text("- **Unchanged** files are skipped [1][2].") == "Unchanged files are skipped ."
    )
    assert cited("skipped [2] and replaced [1][2].") == [2, 1]


async def test_a_cited_supported_answer_leaves_whole(model):
    answer = "Unchanged files are skipped [1]. Idle connections get a comment line every fifteen seconds [2]."
    gate, out = await run_gate(model, answer)
    assert not gate.failed and out == answer


async def test_an_uncited_sentence_waits_for_the_next_citation(model):
    answer = "Unchanged files are skipped. A changed file replaces its old chunks [1]."
    gate, out = await run_gate(model, answer, size=1)
    assert not gate.failed and out == answer


async def test_the_first_unsupported_sentence_stops_the_stream(model):
    answer = "Unchanged files are skipped [1]. Keel also ingests audio recordings natively [1]. Ok."
    gate, out = await run_gate(model, answer)
    assert gate.failed and gate.reason == "not supported by the passages it cites: [1]"
    assert out == "Unchanged files are skipped [1]. "


async def test_a_sentence_judged_against_the_wrong_passage_fails(model):
    gate, out = await run_gate(model, "Unchanged files are skipped when ingested again [2].")
    assert gate.failed and out == ""


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("Unchanged files are skipped when ingested again.", "no citation"),
        ("Sure.", "no citation"),
        (
            "Files are skipped [1]. Then it restarts the whole cluster from scratch.",
            "a sentence cites nothing",
        ),
    ],
)
async def test_uncited_answers_fail_at_the_end(model, answer, reason):
    gate, out = await run_gate(model, answer)
    assert gate.failed and gate.reason == reason
    assert "restarts" not in out and "Sure" not in out and "when ingested" not in out


def test_calibration_script_smoke():
    command = [sys.executable, "-m", "scripts.calibrate_support", "--limit", "12"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["claims"] == 12 and report["threshold"] == SUPPORT_THRESHOLD
    row = next(r for r in report["by_threshold"] if r["threshold"] == SUPPORT_THRESHOLD)
    assert row["claims_supported_by_rationale"] > row["claims_supported_by_another_abstract"]


def test_a_replacing_token_starts_the_agent_message_anew():
    modes = ModeEvents("r1", ["messages"])
    list(modes.token("generate", "Unchanged files are skipped [1]. "))
    events = list(modes.token("generate", "Files are replaced [1] ", replace=True))
    (partial,) = [data["data"] for name, data in events if name.endswith("messages/partial")]
    assert partial[0]["content"] == "Files are replaced [1] "
