"""Evidence ceiling: the extractive selector's evidence precision/recall on SciFact when handed
only each claim's gold abstract(s), as if retrieval were perfect, at the shipped settings and
over a grid of them. Run: `python -m scripts.evidence_ceiling [--dataset DIR] [--split train]`.

What it answers: whether the evidence goal (issue 9) is out of reach of retrieval or of the
sentence scorer itself (MiniLM cosine plus lexical overlap, `nodes.extractive`)."""

import argparse
import itertools
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

import nodes.extractive as extractive
from evals import SCIFACT, metrics
from evals.datasets import abstract_sentences, load_beir
from integrations.embeddings import MiniLMEmbedder

GRID = {
    "MAX_SENTENCES": (1, 2, 3, 4),
    "MAX_GAP": (0.02, 0.05, 0.1, 0.2),
    "LEXICAL_WEIGHT": (0.0, 0.4, 0.8, 1.2),
}


@contextmanager
def _settings(values: dict[str, float]) -> Iterator[None]:
    saved = {name: getattr(extractive, name) for name in values}
    for name, value in values.items():
        setattr(extractive, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(extractive, name, value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=SCIFACT)
    parser.add_argument("--split", default="train")
    args = parser.parse_args()
    dataset = load_beir(args.dataset, args.split)
    texts = {d.id: d.text for d in dataset.documents or []}
    model = MiniLMEmbedder()
    claims = []
    for query in dataset.queries:
        if not query.evidence:
            continue
        gold = list(dict.fromkeys(doc for doc, _ in query.evidence))
        candidates = []
        for doc in gold:
            sentences = abstract_sentences(texts[doc])
            vectors = model.embed(sentences) if sentences else np.zeros((0, model.dim))
            candidates.append((sentences, vectors))
        claims.append((query, gold, candidates, model.embed([query.question])[0]))

    def score() -> tuple[float, float]:
        precision, recall = [], []
        for query, gold, candidates, vector in claims:
            picked = extractive.select_sentences(query.question, vector, candidates)
            chosen = {(gold[s.passage], s.position) for s in picked}
            p, r = metrics.evidence_precision_recall(chosen, query.evidence)
            precision.append(p or 0.0)
            recall.append(r or 0.0)
        return round(float(np.mean(precision)), 3), round(float(np.mean(recall)), 3)

    shipped = score()
    grid = []
    for combo in itertools.product(*GRID.values()):
        values = dict(zip(GRID, combo, strict=True))
        with _settings(values):
            p, r = score()
        grid.append({**values, "precision": p, "recall": r})
    best = max(grid, key=lambda row: min(row["precision"], row["recall"]))
    report = {
        "claims_with_evidence": len(claims),
        "shipped": {"precision": shipped[0], "recall": shipped[1]},
        "best_of_grid": best,
        "settings_tried": len(grid),
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
