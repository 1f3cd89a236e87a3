"""`keel bench --cache`: the semantic cache's costs. A cache-hit turn end to end (POST to
`run.finished`, exact and semantic hits) against a real `keel serve` on the embedded stores (over
the `--corpus` ingested in `--data-dir`, whose answer cache is emptied first), and
the semantic lookup (`CacheStore.similar`) with 100k cached questions in one scope, on the SQLite
store and, given a Redis URL, on the Redis store."""

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from cli.bench import _ingest, _pct, _server
from cli.wire import Wire
from integrations.cache_stores import CacheStore, RedisCacheStore, SqliteCacheStore
from integrations.embeddings import MiniLMEmbedder

SCOPE = "bench-scope"


def _stats(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "p50": round(_pct(values, 0.5), 2),
        "p95": round(_pct(values, 0.95), 2),
    }


async def _turn(wire: Wire, message: str) -> tuple[float, dict]:
    """Milliseconds from the POST to `run.finished`, and its data (thread made beforehand)."""
    thread_id = (await wire.post_json("/v1/threads", {}))["thread_id"]
    started, finished = time.perf_counter(), None
    async for event, data in wire.events(
        f"/v1/threads/{thread_id}/runs/stream", {"message": message}
    ):
        if event == "run.finished":
            finished = (time.perf_counter() - started) * 1000, json.loads(data)
    if finished is None:
        raise RuntimeError(f"no run.finished for {message!r}")
    return finished


async def _ask(url: str, questions: list[str], paraphrases: list[str]) -> dict[str, object]:
    wire = Wire(url)
    times: dict[str, list[float]] = {"exact": [], "semantic": []}
    cached_first = 0
    for question in questions:
        _, result = await _turn(wire, question)
        cached_first += not result["degraded"]
    for message in questions + paraphrases:
        ms, result = await _turn(wire, message.lower() if message in questions else message)
        if result["cached"]:
            times[result["cache"]["kind"]].append(ms)
    await wire.aclose()
    return {
        "questions_answered_and_cached": f"{cached_first}/{len(questions)}",
        "paraphrase_turns": len(paraphrases),
        **{f"{kind}_hit_turn_ms": _stats(v) for kind, v in times.items() if v},
    }


def _hit_turns(data_dir: Path, pairs: list[dict], log: Path) -> dict[str, object]:
    """First asks each distinct question (filling the cache), then its exact repeat and its
    paraphrases; reports the hit turns' times by kind (timed by `cli.wire`'s lean client)."""
    questions = sorted({p["a"] for p in pairs})
    paraphrases = [p["b"] for p in pairs if p["hit"]]
    env = {"KEEL_DATA_DIR": str(data_dir), "KEEL_DATABASE_URL": f"sqlite:///{log.parent}/c.sqlite"}
    with _server(env, log) as server:
        return asyncio.run(_ask(server.url, questions, paraphrases))


async def _lookup(store: CacheStore, size: int, queries: int) -> dict[str, object]:
    """Fills one scope with `size` questions (clustered random unit vectors), catches up a cold
    index, then times `similar` for near-duplicate queries."""
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((size // 100 + 1, 384)).astype(np.float32)
    vectors = centers[rng.integers(0, len(centers), size)] + rng.standard_normal(
        (size, 384)
    ).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    started = time.perf_counter()
    for i, vector in enumerate(vectors):
        await store.add_question(SCOPE, f"k{i}", f"question {i}", vector, 900)
    fill_s = time.perf_counter() - started
    started, syncs = time.perf_counter(), 0
    while True:  # a cold replica: each lookup indexes up to cache_sync_batch entries
        syncs += 1
        t0 = time.perf_counter()
        await store.similar(SCOPE, vectors[0], 4)
        if (time.perf_counter() - t0) < 0.05 and syncs > 1:
            break
    catch_up_s = time.perf_counter() - started
    samples, found = [], 0
    for i in rng.integers(0, size, queries):
        query = vectors[i] + 0.02 * rng.standard_normal(384).astype(np.float32)
        query /= np.linalg.norm(query)
        t0 = time.perf_counter()
        best = await store.similar(SCOPE, query, 4)
        samples.append((time.perf_counter() - t0) * 1000)
        found += bool(best) and best[0].key == f"k{i}"
    await store.aclose()
    return {
        "questions": size,
        "fill_s": round(fill_s, 1),
        "cold_catch_up": {"lookups": syncs, "seconds": round(catch_up_s, 1)},
        "lookup_ms": _stats(samples),
        "recall_at_1": round(found / queries, 3),
    }


def _embed_ms(questions: list[str]) -> dict[str, float]:
    """The question embedding a semantic lookup needs (MiniLM int8 ONNX, one at a time)."""
    embedder = MiniLMEmbedder(cache_size=0)
    embedder.embed(["warm-up"])
    samples = []
    for question in questions:
        t0 = time.perf_counter()
        embedder.embed([question])
        samples.append((time.perf_counter() - t0) * 1000)
    return _stats(samples)


def run_cache_bench(args: argparse.Namespace) -> int:
    """Prints one JSON report of the semantic cache's costs."""
    pairs = [
        json.loads(line)
        for path in args.pairs
        for line in path.read_text().splitlines()
        if line.strip()
    ]
    report: dict[str, object] = {"ingest": _ingest(args.corpus, args.data_dir)}
    for stale in args.data_dir.glob("cache.sqlite*"):  # earlier bench runs' answers
        stale.unlink()
    with tempfile.TemporaryDirectory() as tmp:
        report["hit_turns"] = _hit_turns(args.data_dir, pairs, Path(tmp) / "server.log")
        report["embed_question_ms"] = _embed_ms([p["b"] for p in pairs])
        size = args.cache_questions
        report["lookup_sqlite"] = asyncio.run(
            _lookup(SqliteCacheStore(Path(tmp) / "bench-cache.sqlite"), size, 300)
        )
        if args.redis_url:
            prefix = f"keel-bench:{time.time_ns()}:"
            store = RedisCacheStore(args.redis_url, prefix=prefix, max_questions=size)
            report["lookup_redis"] = asyncio.run(_lookup(store, size, 300))
    print(json.dumps(report, indent=2))
    return 0
