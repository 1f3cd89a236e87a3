"""`keel eval --pairs FILE`: how the semantic cache decides on question pairs.

A pairs file is JSONL of `{"a": str, "b": str, "hit": bool, "kind"?: str}`: `hit` says whether
`b` may be served the answer cached for `a`. Each pair is decided as the cache decides (cosine
similarity of the MiniLM vectors against `KEEL_CACHE_SIMILARITY`, or the lower
`KEEL_CACHE_SAME_WORDS_SIMILARITY` for questions worded alike, then the false-hit guard with
`KEEL_CACHE_GUARD_RULES`); the report gives the paraphrase hit rate (pairs that should hit and
do) and the false-hit rate (pairs that should miss and hit), per contrast kind too."""

import json
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from graph.errors import InvalidInput
from graph.settings import Settings
from integrations.embeddings import Embedder
from integrations.hit_guard import refusal


@dataclass(frozen=True)
class Pair:
    """Two questions and whether the second may reuse the first's answer."""

    a: str
    b: str
    hit: bool
    kind: str


def load_pairs(path: Path) -> list[Pair]:
    """Reads a pairs file; a malformed line is an `InvalidInput` naming the line."""
    pairs = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            hit = row["hit"]
            if not isinstance(hit, bool):
                raise TypeError("hit must be true or false")
            kind = row.get("kind") or ("paraphrase" if hit else "contrast")
            pairs.append(Pair(str(row["a"]), str(row["b"]), hit, str(kind)))
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidInput(f"{path}:{n}: expected {{a, b, hit}}: {exc}") from exc
    return pairs


def score_pairs(pairs: list[Pair], embedder: Embedder, settings: Settings) -> dict[str, Any]:
    """Decides every pair as the cache would and sums up; `errors` lists the wrong decisions."""
    texts = sorted({p.a for p in pairs} | {p.b for p in pairs})
    vectors = dict(zip(texts, embedder.embed(texts), strict=True))
    should_hit, hits, should_miss, false_hits = 0, 0, Counter[str](), Counter[str]()
    errors = []
    for pair in pairs:
        similarity = float(vectors[pair.a] @ vectors[pair.b])
        reason = refusal(
            pair.b,
            pair.a,
            similarity,
            settings.cache_similarity,
            settings.cache_guard_rules,
            settings.cache_same_words_similarity,
        )
        decided = reason is None
        if pair.hit:
            should_hit += 1
            hits += decided
        else:
            should_miss[pair.kind] += 1
            false_hits[pair.kind] += decided
        if decided != pair.hit:
            errors.append({**pair.__dict__, "similarity": round(similarity, 4), "reason": reason})
    contrasts = sum(should_miss.values())
    return {
        "pairs": len(pairs),
        "similarity_threshold": settings.cache_similarity,
        "guard_rules": list(settings.cache_guard_rules),
        "paraphrase_pairs": should_hit,
        "paraphrase_hit_rate": round(hits / should_hit, 4) if should_hit else None,
        "contrast_pairs": contrasts,
        "false_hits": sum(false_hits.values()),
        "false_hit_rate": round(sum(false_hits.values()) / contrasts, 4) if contrasts else None,
        "false_hits_by_kind": {k: f"{false_hits[k]}/{n}" for k, n in sorted(should_miss.items())},
        "errors": errors,
    }


def pairs_report(summary: dict[str, Any]) -> str:
    """The summary as text: headline rates, per-kind false hits, then each wrong decision."""
    lines = [
        f"pairs: {summary['pairs']} (threshold {summary['similarity_threshold']}, "
        f"rules {','.join(summary['guard_rules']) or 'none'})",
        f"paraphrase hit rate: {summary['paraphrase_hit_rate']} of {summary['paraphrase_pairs']}",
        f"false-hit rate: {summary['false_hit_rate']} "
        f"({summary['false_hits']} of {summary['contrast_pairs']} contrast pairs)",
        "false hits by kind: "
        + ", ".join(f"{k} {v}" for k, v in summary["false_hits_by_kind"].items()),
    ]
    for e in summary["errors"]:
        verdict = "missed" if e["hit"] else "FALSE HIT"
        lines.append(
            f"  {verdict} [{e['kind']}] sim={e['similarity']} reason={e['reason']}: "
            f"{e['a']!r} / {e['b']!r}"
        )
    return "\n".join(lines)
