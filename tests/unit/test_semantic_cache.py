"""The semantic cache: the false-hit guard's rules, both stores' question indexes (SQLite file,
real Redis) and the cache_lookup node over the real corpus and embedder."""

import asyncio
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from langgraph.runtime import Runtime

from api.schemas import RunRequest
from checkpoints.threads import create_thread
from corpus import Corpora, Document, open_corpora
from evals.cache_pairs import load_pairs, score_pairs
from graph.context import Context
from graph.deps import Deps
from graph.settings import Settings
from integrations.cache_stores import CacheStore, RedisCacheStore, SqliteCacheStore
from integrations.embeddings import MiniLMEmbedder
from integrations.hit_guard import disagreement, refusal, same_words
from nodes.cache import make_cache_lookup, near_answer, store_answer
from runtime.keel import open_keel

CONTRASTS = [
    (
        "Does aspirin reduce the risk of stroke?",
        "Does aspirin not reduce the risk of stroke?",
        "negation",
    ),
    ("Is metformin safe in kidney disease?", "Is metformin unsafe in kidney disease?", "polarity"),
    ("Is ibuprofen beneficial after surgery?", "Is ibuprofen harmful after surgery?", "polarity"),
    (
        "How does keel stream tokens to the client?",
        "How does keel stream tokens to the server?",
        "polarity",
    ),
    (
        "Does obesity increase insulin resistance?",
        "Does obesity decrease insulin resistance?",
        "comparatives",
    ),
    ("Is depression more common in women?", "Is depression less common in women?", "comparatives"),
    ("Take the drug before meals?", "Take the drug after meals?", "comparatives"),
    ("Do all patients need antibiotics?", "Do some patients need antibiotics?", "comparatives"),
    ("Is 5 mg of X safe?", "Is 10 mg of X safe?", "numbers"),
    (
        "Did the trial enroll two hundred people?",
        "Did the trial enroll three hundred people?",
        "numbers",
    ),
    ("Did measles rise in 2019?", "Did measles rise in 2009?", "numbers"),
    ("Did deaths peak in January?", "Did deaths peak in March?", "dates"),
    ("Is 5 mg of X safe?", "Is 5 g of X safe?", "units"),
    ("Does it last 6 months?", "Does it last 6 weeks?", "units"),
    ("Is a fever of 38 °C dangerous?", "Is a fever of 38 °F dangerous?", "units"),
    (
        "Does BRCA1 mutation raise cancer risk?",
        "Does BRCA2 mutation raise cancer risk?",
        "entities",
    ),
    (
        "Does Notch signaling drive T cell growth?",
        "Does Wnt signaling drive T cell growth?",
        "entities",
    ),
    ("Does X help men sleep?", "Does X help women sleep?", "entities"),
    (
        "Is general exercise more effective than rotator cuff exercises?",
        "Are rotator cuff exercises more effective than general exercise?",
        "order",
    ),
    # Issue 26: a shortened word is spelled out first, so "min" / "max" still disagree.
    ("What is the min chunk size?", "What is the max chunk size?", "comparatives"),
    ("Does it take 5 min?", "Does it take 5 h?", "units"),
    ("Can I buy a licence online?", "Can I sell a licence online?", "polarity"),  # WordNet's
    ("Is the basement dry in winter?", "Is the basement wet in winter?", "polarity"),
    (
        "How many replicas can share one database?",
        "How many databases can one replica use?",
        "order",
    ),
    (
        "Are fox0 transcription factors involved in apoptosis?",
        "Are fox0 transcription factors involved in cellular differentiation?",
        "swap",
    ),
    (
        "Does Foxp3 enable the expression of memory T cell regulators?",
        "Does Foxp3 repress the expression of memory T cell regulators?",
        "swap",
    ),
]
PARAPHRASES = [
    ("Does aspirin reduce the risk of stroke?", "Does taking aspirin lower stroke risk?"),
    ("Is 5mg of X safe?", "Is 5 milligrams of X safe?"),
    ("Do 50% of patients relapse?", "Do half of the patients relapse?"),
    ("Do zero-dimensional materials conduct?", "Do 0-dimensional materials conduct?"),
    ("Does Aspirin help?", "Aspirin: does it help?"),
    ("Did the outbreak start in December 2019?", "Did the outbreak begin in December 2019?"),
    ("Was January the peak month for deaths?", "Did deaths peak in January?"),
    ("Does p53 suppress tumor formation?", "Does p53 inhibit tumour formation?"),
    ("Does the trial compare A with B?", "Is A compared with B by the trial?"),
    ("Is HbA1c above 6.5% diagnostic of diabetes?", "Is HbA1c over 6.5% diagnostic of diabetes?"),
    # Issue 26: wording, not meaning: abbreviations, possessives, WordNet synonyms, time phrases.
    ("What is the min number of replicas?", "What is the minimum number of replicas?"),
    ("Does it take 5 min?", "Does it take 5 minutes?"),
    ("Which DB holds the checkpoints?", "Which database holds the checkpoints?"),
    ("What does the Heron team recommend?", "What does Heron's team recommend?"),
    ("How can I delete a document?", "How can I remove a document?"),
    ("Which model should I pick for French?", "Which model should I choose for French?"),
    ("Should I migrate before upgrading?", "Should I migrate prior to upgrading?"),
    ("What happens after the client disconnects?", "What happens once the client disconnects?"),
    ("For how long should I let dough rise?", "How long should dough rise?"),
]


@pytest.mark.parametrize(("a", "b", "rule"), CONTRASTS)
def test_guard_rejects_each_contrast_kind(a: str, b: str, rule: str):
    assert disagreement(a, b) == rule
    assert disagreement(b, a) == rule


@pytest.mark.parametrize(("a", "b"), PARAPHRASES)
def test_guard_accepts_paraphrases(a: str, b: str):
    assert disagreement(a, b) is None


def test_refusal_checks_similarity_first():
    a, b = "Does aspirin reduce the risk of stroke?", "Does aspirin raise the risk of stroke?"
    assert refusal(a, b, 0.5, 0.85) == "similarity"
    assert refusal(a, b, 0.99, 0.85) == "comparatives"
    assert refusal(a, b, 0.99, 0.85, rules=[]) is None


def test_questions_worded_alike_need_less_similarity():
    """The embedding reads "avg" and "average" apart; the same words once normalised are a
    paraphrase down to `same_words_threshold`, other wordings are not."""
    a, b = "How long does the avg request take?", "How long does the average request take?"
    assert refusal(a, b, 0.77, 0.85, same_words_threshold=0.75) is None
    assert refusal(a, b, 0.77, 0.85) == "similarity"  # the band is off by default
    assert refusal(a, b, 0.70, 0.85, same_words_threshold=0.75) == "similarity"
    other = "How long does the average upload take?"
    assert refusal(a, other, 0.8, 0.85, same_words_threshold=0.75) == "similarity"
    assert same_words("Which DB do runs use?", "Which database does a run use?")
    assert not same_words("Which DB do runs use?", "Which cache does a run use?")


def test_shipped_guard_on_the_pair_files():
    """The shipped threshold and rules, through `keel eval --pairs`'s scorer and the real
    model: our held-out pairs keep their hit rate with no false hit, and SciFact's own
    near-duplicate claims (mostly contrasts written by its annotators) are mostly turned down."""
    embedder, settings = MiniLMEmbedder(cache_size=0), Settings()
    pairs = Path(__file__).parents[2] / "evals" / "data"
    for name in ("tune", "heldout"):
        report = score_pairs(load_pairs(pairs / f"cache_pairs_{name}.jsonl"), embedder, settings)
        assert report["false_hits"] == 0, report["errors"]
        assert report["paraphrase_hit_rate"] >= 0.85
    # Issue 26: pairs written apart from the rules; "final" was unread until the guard was done.
    for name, floor in (("independent", 0.85), ("final", 0.9)):
        report = score_pairs(load_pairs(pairs / f"cache_pairs_{name}.jsonl"), embedder, settings)
        assert report["false_hits"] == 0, report["errors"]
        assert report["paraphrase_hit_rate"] >= floor, report["errors"]
    report = score_pairs(load_pairs(pairs / "cache_pairs_scifact.jsonl"), embedder, settings)
    assert (report["paraphrase_pairs"], report["contrast_pairs"]) == (4, 38)
    assert report["paraphrase_hit_rate"] == 1.0
    assert report["false_hits"] <= 2, report["errors"]


def test_guard_rules_are_validated_settings():
    assert Settings(cache_guard_rules="numbers, units").cache_guard_rules == ["numbers", "units"]
    with pytest.raises(ValueError, match="unknown cache guard rules"):
        Settings(cache_guard_rules="numbers,vibes")


def unit(seed: int, dim: int = 384) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


async def check_store(store: CacheStore, scope: str) -> None:
    """TTL, scope partition and incremental sync, the same for both stores."""
    a, b = unit(1), unit(2)
    await store.put("ka", {"answer": "A"}, ttl_s=60)
    await store.add_question(scope, "ka", "question a", a, ttl_s=60)
    await store.add_question(scope, "short", "question short", b, ttl_s=1)
    found = await store.similar(scope, a, 2)
    assert found[0].key == "ka" and found[0].question == "question a"
    assert found[0].similarity == pytest.approx(1.0, abs=2e-3)
    assert {c.key for c in found} == {"ka", "short"}
    assert await store.similar(scope + "-other-tenant-or-version", a, 2) == []
    near_b = b + 0.05 * unit(3)
    await store.add_question(scope, "kb", "question b", near_b / np.linalg.norm(near_b), 60)
    await asyncio.sleep(1.2)
    keys = [c.key for c in await store.similar(scope, b, 3)]  # synced the new one, not the expired
    assert keys[0] == "kb" and "short" not in keys


async def test_sqlite_store_questions(tmp_path: Path):
    store = SqliteCacheStore(tmp_path / "cache.sqlite")
    try:
        await check_store(store, "scope-1")
    finally:
        await store.aclose()
    reopened = SqliteCacheStore(tmp_path / "cache.sqlite")  # a fresh replica reads the file
    try:
        assert [c.key for c in await reopened.similar("scope-1", unit(1), 1)] == ["ka"]
    finally:
        await reopened.aclose()


async def test_redis_store_questions_shared_by_replicas(redis_url: str):
    prefix = f"keel-test:{time.time_ns()}:"
    store, replica = (
        RedisCacheStore(redis_url, prefix=prefix),
        RedisCacheStore(redis_url, prefix=prefix),
    )
    try:
        await check_store(store, "scope-1")
        assert [c.key for c in await replica.similar("scope-1", unit(1), 1)] == ["ka"]
        assert await replica.get("ka") == {"answer": "A"}
    finally:
        await store.aclose()
        await replica.aclose()


@pytest.fixture
async def deps(data_dir: Path):
    built = Deps.from_settings(Settings(data_dir=data_dir), [])
    yield built
    await built.aclose()


def rt(**knobs: Any) -> Runtime:
    return Runtime(context=Context(**knobs))


QUESTION = "Does keel avoid duplicate chunks when the same file is ingested twice?"
PARAPHRASE = "When the same file is ingested twice, does keel avoid duplicate chunks?"
CONTRAST = "Does keel not avoid duplicate chunks when the same file is ingested twice?"


async def test_lookup_semantic_hit_guard_and_tenant(deps: Deps):
    lookup = make_cache_lookup(deps)
    first = rt(tenant="t1")
    state: dict[str, Any] = {"question": QUESTION, "messages": []}
    await store_answer(deps, first.context, state, {"answer": "A [1]", "citations": []})

    hit = await lookup({"question": PARAPHRASE, "messages": []}, rt(tenant="t1"))
    assert hit["cached"] is True and hit["answer"] == "A [1]"
    assert hit["cache"]["kind"] == "semantic" and 0.85 <= hit["cache"]["similarity"] < 1

    miss = await lookup({"question": CONTRAST, "messages": []}, rt(tenant="t1"))
    assert miss["cache"] == {
        "hit": False,
        "kind": None,
        "similarity": miss["cache"]["similarity"],
        "rejected": "negation",
    }
    other = await lookup({"question": QUESTION, "messages": []}, rt(tenant="t2"))
    assert other["cache"]["hit"] is False and "answer" not in other


async def test_lookup_serves_a_question_worded_alike_below_the_threshold(deps: Deps):
    """MiniLM puts "avg" and "average" at 0.77; spelled out, they are the same words."""
    lookup, asked = make_cache_lookup(deps), "How long does the avg request take to answer?"
    state: dict[str, Any] = {"question": asked, "messages": []}
    await store_answer(deps, rt(tenant="t5").context, state, {"answer": "B [1]", "citations": []})
    spelled = "How long does the average request take to answer?"
    hit = await lookup({"question": spelled, "messages": []}, rt(tenant="t5"))
    assert hit["answer"] == "B [1]" and hit["cache"]["similarity"] < 0.8
    reworded = "How long does the average upload take to answer?"
    miss = await lookup({"question": reworded, "messages": []}, rt(tenant="t5"))
    assert miss["cache"]["hit"] is False and "answer" not in miss
    other_settings = await lookup(
        {"question": PARAPHRASE, "messages": []}, rt(tenant="t1", top_k=2)
    )
    assert other_settings["cache"]["hit"] is False
    deps.corpora.get("t1").ingest([Document("new", "A new document.", "New", "test")])
    after_ingest = await lookup({"question": PARAPHRASE, "messages": []}, rt(tenant="t1"))
    assert after_ingest["cache"]["hit"] is False  # the corpus version moved


async def test_near_answer_rung_is_looser_but_guarded_and_grounded(deps: Deps):
    # The LLM-down rung: 0.80 <= similarity < 0.85 serves only if the guard passes and the
    # answer cites a passage this run retrieved.
    stored = "How does keel avoid duplicate chunks when the same file is ingested twice?"
    near = "How are duplicate chunks avoided when the same file is ingested twice?"
    contrast = "How are duplicate chunks avoided when the same file is ingested three times?"
    far = "How are duplicate chunks avoided when the same file is uploaded twice?"  # 0.72
    citation = {"n": 1, "id": "chunk-a", "source": "s", "snippet": "x"}
    answer = {"answer": "A [1]", "citations": [citation]}
    await store_answer(deps, Context(tenant="t9"), {"question": stored, "messages": []}, answer)
    retrieved: list[Any] = [{"id": "chunk-a"}, {"id": "chunk-b"}]

    miss = await make_cache_lookup(deps)({"question": near, "messages": []}, rt(tenant="t9"))
    assert miss["cache"]["hit"] is False  # below the normal threshold
    found = await near_answer(deps, Context(tenant="t9"), near, retrieved)
    assert found is not None and found[0] == answer
    assert found[1]["kind"] == "fallback" and 0.80 <= found[1]["similarity"] < 0.85
    assert await near_answer(deps, Context(tenant="t9"), contrast, retrieved) is None
    assert await near_answer(deps, Context(tenant="t9"), far, retrieved) is None
    elsewhere: list[Any] = [{"id": "chunk-z"}]  # cites nothing this run retrieved
    assert await near_answer(deps, Context(tenant="t9"), near, elsewhere) is None
    assert await near_answer(deps, Context(tenant="t9", use_cache=False), near, retrieved) is None


async def test_a_question_is_embedded_once_however_many_ask(deps: Deps, monkeypatch):
    calls: list[list[str]] = []
    embed = MiniLMEmbedder.embed

    def counted(self: MiniLMEmbedder, texts: list[str], *args: Any, **kwargs: Any) -> np.ndarray:
        calls.append(list(texts))
        return embed(self, texts, *args, **kwargs)

    monkeypatch.setattr(MiniLMEmbedder, "embed", counted)
    question = f"{QUESTION} ({time.time_ns()})"  # not in the embedder's own cache
    started = deps.corpora.start_query(question)  # as a run's submission does
    vectors = await asyncio.gather(*(deps.corpora.query_vector(question) for _ in range(3)))
    assert calls == [[question]] and all(v is vectors[0] for v in vectors)
    assert started.done() and np.isclose(np.linalg.norm(vectors[0]), 1.0)
    # One caller giving up does not cancel the call for the others.
    other = f"{PARAPHRASE} ({time.time_ns()})"
    waiter = asyncio.ensure_future(deps.corpora.query_vector(other))
    await asyncio.sleep(0)
    waiter.cancel()
    assert (await deps.corpora.query_vector(other)).shape == (384,)
    assert calls == [[question], [other]]


async def test_a_run_starts_its_redacted_questions_embedding_when_submitted(
    tmp_path: Path, monkeypatch
):
    started: list[str] = []
    embedded: list[str] = []
    start, embed = Corpora.start_query, MiniLMEmbedder.embed

    def spy_start(self: Corpora, text: str) -> Any:
        started.append(text)
        return start(self, text)

    def spy_embed(self: MiniLMEmbedder, texts: list[str], *args: Any, **kwargs: Any) -> Any:
        embedded.extend(texts)
        return embed(self, texts, *args, **kwargs)

    monkeypatch.setattr(Corpora, "start_query", spy_start)
    monkeypatch.setattr(MiniLMEmbedder, "embed", spy_embed)
    raw = f"Mail jane.doe@example.com: how do I resume a stream? ({time.time_ns()})"
    async with open_keel(Settings(data_dir=tmp_path), []) as keel:
        redacted = keel.deps.redactor.redact(raw).text
        assert "jane.doe" not in redacted
        thread = await create_thread(keel.persistence, "default")
        context = RunRequest(message=raw).context.model_dump()
        run = await keel.runs.submit("default", thread["thread_id"], raw, context)
        assert started == [redacted]  # before the graph ran: by the submission itself
        name, _ = await keel.runs.outcome(run)
    assert name == "run.finished"
    assert embedded.count(redacted) == 1  # cache_lookup and retrieve awaited that one call
    assert not any("jane.doe" in text for text in embedded)


async def test_loading_the_corpora_readies_the_question_model(tmp_path: Path, monkeypatch):
    """The one-thread session single texts run on is made at start-up (`Corpora.load`, which
    the server's lifespan calls), not by the first question."""
    corpora = open_corpora(Settings(data_dir=tmp_path))
    corpora.load()
    made: list[int] = []
    new_session = MiniLMEmbedder._new_session

    def counted(self: MiniLMEmbedder, threads: int) -> Any:
        made.append(threads)
        return new_session(self, threads)

    monkeypatch.setattr(MiniLMEmbedder, "_new_session", counted)
    vector = await corpora.query_vector(f"{QUESTION} ({time.time_ns()})")
    assert made == [] and vector.shape == (384,)
