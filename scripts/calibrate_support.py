"""Support calibration: how `nodes.grounding.support_scores` separates SciFact train claims'
rationale sentences from sentences that do not support them, and where `SUPPORT_THRESHOLD`
falls. Run: `python -m scripts.calibrate_support [--dataset DIR] [--split train] [--limit N]`.

For each claim with annotated evidence, at each threshold: the share of claims whose best score
over the rationale sentences of their gold abstracts passes (should), over the sentences of
another claim's gold abstract (should not), and per sentence, the share of rationale sentences
and of the other sentences of the gold abstracts (same topic, no support) that pass."""

import argparse
import json
import random
from pathlib import Path

import numpy as np

from evals import SCIFACT
from evals.datasets import abstract_sentences, load_beir
from integrations.embeddings import MiniLMEmbedder
from nodes.grounding import SUPPORT_THRESHOLD, support_scores

THRESHOLDS = [round(0.6 + 0.05 * i, 2) for i in range(13)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=SCIFACT)
    parser.add_argument("--split", default="train")
    parser.add_argument("--limit", type=int, default=0, help="first N claims with evidence")
    args = parser.parse_args()
    dataset = load_beir(args.dataset, args.split)
    texts = {d.id: d.text for d in dataset.documents or []}
    queries = [q for q in dataset.queries if q.evidence]
    if args.limit:
        queries = queries[: args.limit]
    model = MiniLMEmbedder()
    embedded: dict[str, tuple[list[str], np.ndarray]] = {}

    def sentences_of(doc: str) -> tuple[list[str], np.ndarray]:
        if doc not in embedded:
            sentences = abstract_sentences(texts[doc])
            embedded[doc] = (sentences, model.embed(sentences))
        return embedded[doc]

    rng = random.Random(0)
    rationale, other, rationale_sentences, topic_sentences = [], [], [], []
    for query in queries:
        vector = model.embed([query.question])[0]
        gold = list(dict.fromkeys(doc for doc, _ in query.evidence))
        best = -1.0
        for doc in gold:
            sentences, vectors = sentences_of(doc)
            scores = support_scores(query.question, vector, sentences, vectors).tolist()
            marked = {i for d, i in query.evidence if d == doc}
            for i, score in enumerate(scores):
                (rationale_sentences if i in marked else topic_sentences).append(score)
            best = max([best, *(scores[i] for i in marked if i < len(scores))])
        rationale.append(best)
        foreign = rng.choice([q for q in queries if not set(q.relevant) & set(gold)])
        sentences, vectors = sentences_of(next(iter(foreign.relevant)))
        other.append(float(support_scores(query.question, vector, sentences, vectors).max()))

    def passing(scores: list[float], threshold: float) -> float:
        return round(float(np.mean(np.array(scores) >= threshold)), 3)

    report = {
        "claims": len(queries),
        "threshold": SUPPORT_THRESHOLD,
        "by_threshold": [
            {
                "threshold": t,
                "claims_supported_by_rationale": passing(rationale, t),
                "claims_supported_by_another_abstract": passing(other, t),
                "rationale_sentences_passing": passing(rationale_sentences, t),
                "other_gold_abstract_sentences_passing": passing(topic_sentences, t),
            }
            for t in THRESHOLDS
        ],
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
