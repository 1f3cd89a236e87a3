"""Evaluation metrics as pure functions: ranking quality, latency, rates, evidence and citations.

Rankings are lists of ids, best first; relevance judgements map an id to a graded score (> 0 is
relevant). Every function returns a float in [0, 1] (or milliseconds for latencies) and treats an
empty judgement set as "nothing to measure" by returning 0.0, the BEIR convention.
"""

import math
import re
from collections.abc import Iterable, Mapping, Sequence

_CITATION = re.compile(r"\[(\d+)\]")


def doc_ranking(chunk_ids: Iterable[str], separator: str = "#") -> list[str]:
    """Chunk ids (`doc#n`) to document ids, best first: a document ranks at its best chunk."""
    seen: dict[str, None] = {}
    for chunk_id in chunk_ids:
        seen.setdefault(chunk_id.split(separator, 1)[0], None)
    return list(seen)


def dcg_at_k(ranking: Sequence[str], qrels: Mapping[str, float], k: int) -> float:
    """Discounted cumulative gain with linear gains: sum of rel / log2(rank + 1)."""
    return sum(
        float(qrels.get(doc, 0.0)) / math.log2(rank + 1)
        for rank, doc in enumerate(ranking[:k], start=1)
    )


def ndcg_at_k(ranking: Sequence[str], qrels: Mapping[str, float], k: int = 10) -> float:
    """nDCG@k (linear gains, as trec_eval and BEIR compute it)."""
    ideal = sorted((float(v) for v in qrels.values() if v > 0), reverse=True)[:k]
    idcg = sum(g / math.log2(rank + 1) for rank, g in enumerate(ideal, start=1))
    return dcg_at_k(ranking, qrels, k) / idcg if idcg > 0 else 0.0


def recall_at_k(ranking: Sequence[str], qrels: Mapping[str, float], k: int) -> float:
    """Share of the relevant ids found in the top k."""
    relevant = {doc for doc, score in qrels.items() if score > 0}
    if not relevant:
        return 0.0
    return len(relevant & set(ranking[:k])) / len(relevant)


def mrr_at_k(ranking: Sequence[str], qrels: Mapping[str, float], k: int = 10) -> float:
    """Reciprocal rank of the first relevant id within the top k, else 0."""
    for rank, doc in enumerate(ranking[:k], start=1):
        if qrels.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


def hit_at_k(ranking: Sequence[str], qrels: Mapping[str, float], k: int) -> float:
    """1.0 when any relevant id is in the top k, else 0.0."""
    return 1.0 if any(qrels.get(doc, 0) > 0 for doc in ranking[:k]) else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) with linear interpolation between ranks; 0.0 when empty."""
    if not values:
        return 0.0
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latency_summary(values_ms: Sequence[float]) -> dict[str, float]:
    """count, mean, p50, p95 and max of latencies in milliseconds."""
    if not values_ms:
        return {"count": 0, "mean": 0.0, "p50": 0.0, "p95": 0.0, "max": 0.0}
    return {
        "count": len(values_ms),
        "mean": sum(values_ms) / len(values_ms),
        "p50": percentile(values_ms, 50),
        "p95": percentile(values_ms, 95),
        "max": max(values_ms),
    }


def rate(flags: Sequence[bool]) -> float:
    """The share of true flags; 0.0 for none."""
    return sum(1 for f in flags if f) / len(flags) if flags else 0.0


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean; 0.0 for none."""
    return sum(values) / len(values) if values else 0.0


def evidence_precision_recall(
    selected: Iterable[tuple[str, int]], evidence: Iterable[tuple[str, int]]
) -> tuple[float, float]:
    """Precision and recall of selected (doc id, sentence index) pairs against annotated ones.

    Precision is 0.0 when nothing was selected; recall is 0.0 when nothing is annotated.
    """
    chosen, gold = set(selected), set(evidence)
    hits = len(chosen & gold)
    precision = hits / len(chosen) if chosen else 0.0
    recall = hits / len(gold) if gold else 0.0
    return precision, recall


def citation_numbers(answer: str) -> list[int]:
    """Every [n] marker in an answer, in order (repeats kept)."""
    return [int(m.group(1)) for m in _CITATION.finditer(answer)]


def citation_faithfulness(answer: str, n_passages: int) -> dict[str, float]:
    """Judge-free faithfulness of an answer's [n] markers against the `n_passages` it was given.

    `cited`: the answer cites at least one passage; `in_range`: share of markers that point at a
    passage it was given (1.0 when there are none); `all_in_range`: no marker is out of range.
    """
    numbers = citation_numbers(answer)
    valid = [n for n in numbers if 1 <= n <= n_passages]
    return {
        "cited": 1.0 if numbers else 0.0,
        "in_range": len(valid) / len(numbers) if numbers else 1.0,
        "all_in_range": 1.0 if len(valid) == len(numbers) else 0.0,
    }
