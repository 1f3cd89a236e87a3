"""Trains the reranker (`integrations/rerank.py`, `LearnedReranker`) and writes its weights.

Ingests a `keel eval` dataset (default: SciFact; unchanged documents are skipped), embeds every
chunk's sentences as a served corpus's warmer does, runs the first stage for each question and
reads the candidates' `features` exactly as the reranker does. Every candidate of a turn is a
training example (`--depth`, 40), although a turn re-scores only the first
`KEEL_RERANK_DEPTH` (20): more negatives, and the cold-corpus eval came out best that way
(SciFact train nDCG@10 0.7269 cold, against 0.7248 for weights fitted on cold features). A linear model is fitted listwise
(softmax over each question's candidates, cross-entropy against its relevant documents, L2) in
numpy. It prints nDCG@10 of the first stage, of the weights in place and of the new model, all
over `--folds` folds of the questions (the new model is fitted on the other folds each time),
then fits on every question and writes the weights (`--out`).

Run: `python -m scripts.train_reranker [--dataset DIR] [--split train] [--data-dir DIR]`; with
your own labelled questions (the `keel eval` format: `--dataset questions.jsonl --corpus DIR`,
docs/evaluation.md) that is how the reranker learns your documents. About 10 minutes for SciFact train on 2 cores, most of it the
warm-up's embedding."""

import argparse
import asyncio
from collections.abc import Callable
from pathlib import Path

import numpy as np

from evals import SCIFACT, metrics
from evals.datasets import EvalDataset, EvalQuery, load_dataset
from evals.runner import eval_settings, prepare_corpus
from graph.context import Context
from graph.deps import Deps
from graph.settings import Settings
from integrations.rerank import FEATURES, MODEL_DEPTH, WEIGHTS, LinearModel, features
from nodes.retrieve import first_stage

Scorer = Callable[[np.ndarray], np.ndarray]
# One question's candidates: their chunk ids, then the feature rows and relevance (0 or the
# grade) of those the reranker re-scores.
Group = tuple[list[str], np.ndarray, np.ndarray]


def candidates(deps: Deps, dataset: EvalDataset, depth: int) -> list[Group]:
    """Each question's first-stage candidates (as many as a turn retrieves), the first `depth`
    read as the reranker reads them; the rest follow in their order."""
    corpus = deps.corpora.get()
    groups = []
    for query in dataset.queries:
        vector = corpus.embed_query(query.question)
        passages = first_stage(corpus, query.question, vector, Context.candidates, "hybrid")
        ids = [p["id"] for p in passages]
        matches = corpus.match_scores(ids[:depth], vector, MODEL_DEPTH)
        relevance = np.array([query.relevant.get(p["doc_id"], 0.0) for p in passages[:depth]])
        groups.append((ids, features(query.question, passages[:depth], matches), relevance))
    return groups


def fit(groups: list[Group], l2: float, epochs: int = 300, rate: float = 0.05) -> LinearModel:
    """Listwise softmax regression (Adam), on questions with at least one relevant candidate."""
    rows = np.vstack([x for _, x, _ in groups])
    mean, scale = rows.mean(axis=0), rows.std(axis=0) + 1e-6
    lists = [((x - mean) / scale, y / y.sum()) for _, x, y in groups if y.sum() > 0]
    weights = np.zeros(len(FEATURES))
    first, second = np.zeros_like(weights), np.zeros_like(weights)
    for step in range(1, epochs + 1):
        gradient = l2 * weights
        for x, target in lists:
            scores = x @ weights
            p = np.exp(scores - scores.max())
            gradient += x.T @ (p / p.sum() - target) / len(lists)
        first = 0.9 * first + 0.1 * gradient
        second = 0.999 * second + 0.001 * gradient**2
        weights -= rate * (first / (1 - 0.9**step)) / (np.sqrt(second / (1 - 0.999**step)) + 1e-8)
    return LinearModel(mean, scale, weights)


def ndcg(groups: list[Group], queries: list[EvalQuery], score: Scorer) -> float:
    """Mean nDCG@10 of the documents when each question's candidates are ordered by `score`."""
    values = []
    for (ids, rows, _), query in zip(groups, queries, strict=True):
        head = [ids[n] for n in np.argsort(-score(rows), kind="stable")]
        ranking = metrics.doc_ranking([*head, *ids[len(head) :]])
        values.append(metrics.ndcg_at_k(ranking, query.relevant, 10))
    return float(np.mean(values))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=SCIFACT)
    parser.add_argument("--split", default="train")
    parser.add_argument(
        "--corpus", type=Path, action="append", help="documents of a questions JSONL (repeatable)"
    )
    parser.add_argument("--data-dir", type=Path, default=Path(".keel/train-reranker"))
    parser.add_argument(
        "--depth", type=int, default=Context.candidates, help="candidates re-scored"
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--l2", type=float, default=1e-3)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    args = parser.parse_args()
    dataset = load_dataset(args.dataset, args.split, args.corpus)
    settings = eval_settings(Settings(), dataset, {"rerank": True}, args.data_dir)
    deps = Deps.from_settings(settings)
    try:
        prepare_corpus(deps, dataset)
        while deps.corpora.warm_step(chunks=256):
            pass
        groups = candidates(deps, dataset, args.depth)
    finally:
        asyncio.run(deps.aclose())
    folds = np.arange(len(groups)) % args.folds
    held_out: dict[str, list[float]] = {"first stage": [], "weights in place": [], "new model": []}
    shipped = LinearModel.load() if WEIGHTS.exists() else None
    for fold in range(args.folds):
        train = [g for g, f in zip(groups, folds, strict=True) if f != fold]
        test = [g for g, f in zip(groups, folds, strict=True) if f == fold]
        queries = [q for q, f in zip(dataset.queries, folds, strict=True) if f == fold]
        model = fit(train, args.l2)
        held_out["first stage"].append(ndcg(test, queries, lambda x: -np.arange(len(x))))
        if shipped is not None:
            held_out["weights in place"].append(ndcg(test, queries, shipped.score))
        held_out["new model"].append(ndcg(test, queries, model.score))
    for name, values in held_out.items():
        if values:
            print(f"{name:>16}: nDCG@10 {np.mean(values):.4f} over {args.folds} folds")
    model = fit(groups, args.l2)
    model.save(args.out)
    print("weights:", dict(zip(FEATURES, np.round(model.weights, 3).tolist(), strict=True)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
