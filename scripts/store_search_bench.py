"""Semantic store search: how long ranking a namespace's vectors takes (`keel_store_vectors`,
paged reads, numpy), on SQLite (the embedded default) or Postgres. Prints JSON: the fields
ranked, p50 and p95 of a query's ranking, fields ranked a second, and whether the top ten match
a brute-force ranking of the same vectors.

    PYTHONPATH=$PWD python -m scripts.store_search_bench --fields 100000 \\
        [--database-url postgresql://postgres@127.0.0.1:5432/keel_bench]

Random unit vectors (384 dimensions, MiniLM's) stand in for embedded fields: the ranking's cost
does not depend on what they encode. The query embedding is not timed (one MiniLM call)."""

import argparse
import asyncio
import json
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from checkpoints import open_persistence
from checkpoints.store_vectors import joined

DIM = 384
FIELDS_PER_ITEM = 3  # 2,000-row pages then cut through items: their best field still counts


def _unit(rows: int, rng: np.random.Generator) -> np.ndarray:
    vectors = rng.standard_normal((rows, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


async def bench(database_url: str, fields: int, queries: int) -> dict[str, Any]:
    """Writes `fields` vectors under a fresh namespace, ranks `queries` random queries, and
    removes the vectors again."""
    rng = np.random.default_rng(7)
    namespace = ("keel", "store", f"bench{uuid.uuid4().hex[:8]}", "docs")
    vectors = _unit(fields, rng)
    async with open_persistence(database_url) as persistence:
        store = persistence.vectors
        started = time.perf_counter()
        fields -= fields % FIELDS_PER_ITEM
        vectors = vectors[:fields]
        for item in range(0, fields, FIELDS_PER_ITEM):
            rows = vectors[item : item + FIELDS_PER_ITEM]
            await store.replace(namespace, f"k{item}", {f"f{n}": v for n, v in enumerate(rows)})
        write_s = time.perf_counter() - started
        timings, agree = [], True
        for query in _unit(queries, rng):
            t0 = time.perf_counter()
            top = await store.ranked(namespace[:3], query, 10)
            timings.append(time.perf_counter() - t0)
            scores = (vectors @ query).reshape(-1, FIELDS_PER_ITEM).max(axis=1)
            best = [f"k{int(i) * FIELDS_PER_ITEM}" for i in np.argsort(-scores)[:10]]
            agree &= [key for _, key, _ in top] == best
        for item in range(0, fields, FIELDS_PER_ITEM):
            await store.remove(namespace, f"k{item}")
    p50 = statistics.median(timings)
    return {
        "database": persistence.kind,
        "namespace": joined(namespace),
        "fields": fields,
        "write_fields_per_s": round(fields / write_s),
        "query_ms": {
            "p50": round(p50 * 1000, 1),
            "p95": round(sorted(timings)[int(0.95 * (len(timings) - 1))] * 1000, 1),
        },
        "fields_ranked_per_s": round(fields / p50),
        "top10_matches_brute_force": agree,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fields", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=20)
    parser.add_argument("--database-url", default="", help="default: SQLite in a temp dir")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'bench.sqlite'}"
        report = asyncio.run(bench(url, args.fields, args.queries))
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
