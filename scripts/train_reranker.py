"""Trains the reranker (`integrations/rerank.py`, `LearnedReranker`) and writes its weights.

Ingests a `keel eval` dataset (default: SciFact; unchanged documents are skipped), embeds every
chunk's sentences as a served corpus's warmer does, runs the first stage for each question and
reads the candidates' `features` exactly as the reranker does, twice: as a warm corpus reads them
(every sentence embedded) and as a cold one does (only the sentence static vectors pick, for the
first `MODEL_DEPTH`; see `cold_matches`). Every candidate of a turn is a training example
(`--depth`, 40), although a turn re-scores only the first `KEEL_RERANK_DEPTH` (20): more
negatives. The model is `--members` small networks (`--hidden` tanh units and a linear part, from
different random starts) fitted listwise (softmax over each question's candidates, cross-entropy
against its relevant documents, L2, Adam) in numpy on the warm and the cold lists together, and
averaged into one `RerankModel`. It prints nDCG@10 of the first stage and of the new model, warm
and cold, over `--folds` folds of the questions (the model is fitted on the other folds each
time; questions that share a relevant document share a fold, `EvalDataset.folds`), re-scoring the first `KEEL_RERANK_DEPTH` as a turn does, then fits on every question and
writes the weights (`--out`).

Run: `python -m scripts.train_reranker [--dataset DIR] [--split train] [--data-dir DIR]`; with
your own labelled questions (the `keel eval` format: `--dataset questions.jsonl --corpus DIR`,
docs/evaluation.md) that is how the reranker learns your documents. About 15 minutes for SciFact
train on 2 cores, most of it the warm-up's embedding and the 5-fold report."""

import argparse
import math
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import cast

import numpy as np

from corpus import Corpus, open_corpora
from corpus.lexical import tokenize
from corpus.sentences import STATIC_OFFSET, STATIC_SCALE, Matches
from evals import SCIFACT, metrics
from evals.datasets import EvalDataset, EvalQuery, load_dataset
from evals.runner import eval_settings, prepare_corpus
from graph.context import Context
from graph.deps import Deps
from graph.settings import Settings
from integrations.rerank import (
    FEATURES,
    MODEL_DEPTH,
    WEIGHTS,
    RerankModel,
    features,
    soft_matches,
    units,
)
from nodes.retrieve import first_stage

Scorer = Callable[[np.ndarray], np.ndarray]


class Group:
    """One question's candidates: their chunk ids (as many as a turn retrieves), the feature
    rows of the first `depth` as a warm and as a cold corpus gives them, and their relevance
    (0 or the grade of their document)."""

    def __init__(self, ids: list[str], warm: np.ndarray, cold: np.ndarray, relevance: np.ndarray):
        self.ids, self.warm, self.cold, self.relevance = ids, warm, cold, relevance


def cold_matches(corpus: Corpus, ids: list[str], query: np.ndarray, warm: Matches) -> Matches:
    """`warm` as a corpus without stored sentence vectors gives it (`match_scores`' cold
    branch): the model's cosine of the sentence static vectors rank first for the first
    `MODEL_DEPTH`, that static cosine on the model's scale below."""
    stored = corpus.sentence_vectors(ids)
    model, best = warm.model.copy(), list(warm.best)
    for n, cid in enumerate(ids):
        sentences, vectors = stored.get(cid, ([], np.zeros((0, query.size))))
        if not sentences:
            continue
        static = corpus.sentences.static.embed(sentences) @ query
        top = int(np.argmax(static))
        best[n] = sentences[top]
        model[n] = (
            float(vectors[top] @ query)
            if n < MODEL_DEPTH
            else STATIC_SCALE * float(static[top]) + STATIC_OFFSET
        )
    return Matches(model, warm.static, best)


def candidates(corpus: Corpus, dataset: EvalDataset, depth: int) -> list[Group]:
    """Each question's first-stage candidates (as many as an eval retrieves), the first `depth`
    read as the reranker reads them, warm and cold; the rest follow in their order."""
    groups = []
    for query in dataset.queries:
        vector = corpus.embed_query(query.question)
        passages = first_stage(corpus, query.question, vector, 100, "hybrid")
        ids = [p["id"] for p in passages]
        head = passages[:depth]
        warm = corpus.match_scores(ids[:depth], vector, MODEL_DEPTH)
        cold = cold_matches(corpus, ids[:depth], vector, warm)
        idf = corpus.inverse_frequencies(tokenize(query.question))
        soft = soft_matches(*units(corpus, query.question, head))
        relevance = np.array([query.relevant.get(p["doc_id"], 0.0) for p in head])
        groups.append(
            Group(
                ids,
                features(query.question, passages, warm, idf, soft),
                features(query.question, passages, cold, idf, soft),
                relevance,
            )
        )
    return groups


def fit(
    lists: list[tuple[np.ndarray, np.ndarray]],
    hidden: int,
    members: int,
    l2: float,
    epochs: int = 300,
    rate: float = 0.05,
) -> RerankModel:
    """`members` networks fitted listwise (Adam) on the (rows, relevance) lists that have a
    relevant candidate, from different random starts, averaged into one."""
    rows = np.vstack([x for x, _ in lists])
    mean, scale = rows.mean(axis=0), rows.std(axis=0) + 1e-6
    kept = [(x, y) for x, y in lists if y.sum() > 0]
    length, width = max(len(x) for x, _ in kept), rows.shape[1]
    z = np.zeros((len(kept), length, width))
    mask = np.zeros((len(kept), length), dtype=bool)
    target = np.zeros((len(kept), length))
    for n, (x, y) in enumerate(kept):
        z[n, : len(x)] = (x - mean) / scale
        mask[n, : len(x)] = True
        target[n, : len(y)] = y / y.sum()
    parts = [
        _fit_member(z, mask, target, hidden, l2, epochs, rate, seed) for seed in range(members)
    ]
    return RerankModel(
        mean,
        scale,
        np.mean([p["linear"] for p in parts], axis=0),
        np.hstack([p["hidden"] for p in parts]),
        np.hstack([p["bias"] for p in parts]),
        np.hstack([p["out"] for p in parts]) / members,
    )


def _fit_member(
    z: np.ndarray,
    mask: np.ndarray,
    target: np.ndarray,
    hidden: int,
    l2: float,
    epochs: int,
    rate: float,
    seed: int,
) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    width = z.shape[2]
    params = {
        "linear": np.zeros(width),
        "hidden": rng.normal(0, 1 / math.sqrt(width), (width, hidden)),
        "bias": np.zeros(hidden),
        "out": rng.normal(0, 0.1 / math.sqrt(hidden), hidden),
    }
    first = {k: np.zeros_like(v) for k, v in params.items()}
    second = {k: np.zeros_like(v) for k, v in params.items()}
    for step in range(1, epochs + 1):
        h = np.tanh(z @ params["hidden"] + params["bias"])
        scores = np.where(mask, z @ params["linear"] + h @ params["out"], -1e9)
        p = np.exp(scores - scores.max(axis=1, keepdims=True)) * mask
        error = (p / p.sum(axis=1, keepdims=True) - target) / len(z)  # d loss / d score
        back = error[..., None] * params["out"] * (1 - h**2)
        gradients = {
            "linear": np.einsum("ql,qlf->f", error, z) + l2 * params["linear"],
            "hidden": np.einsum("qlh,qlf->fh", back, z) + l2 * params["hidden"],
            "bias": back.sum(axis=(0, 1)),
            "out": np.einsum("ql,qlh->h", error, h) + l2 * params["out"],
        }
        for k, gradient in gradients.items():
            first[k] = 0.9 * first[k] + 0.1 * gradient
            second[k] = 0.999 * second[k] + 0.001 * gradient**2
            params[k] -= (
                rate
                * (first[k] / (1 - 0.9**step))
                / (np.sqrt(second[k] / (1 - 0.999**step)) + 1e-8)
            )
    return params


def ndcg(
    groups: list[Group], queries: list[EvalQuery], score: Scorer, cold: bool, depth: int
) -> float:
    """Mean nDCG@10 of the documents when each question's first `depth` candidates are ordered
    by `score` (of their warm or cold rows) and the rest follow."""
    values = []
    for group, query in zip(groups, queries, strict=True):
        rows = (group.cold if cold else group.warm)[:depth]
        head = [group.ids[n] for n in np.argsort(-score(rows), kind="stable")]
        ranking = metrics.doc_ranking([*head, *group.ids[len(head) :]])
        values.append(metrics.ndcg_at_k(ranking, query.relevant, 10))
    return float(np.mean(values))


def training_lists(groups: list[Group]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Each question twice: as a warm and as a cold corpus reads its candidates."""
    return [(g.warm, g.relevance) for g in groups] + [(g.cold, g.relevance) for g in groups]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=SCIFACT)
    parser.add_argument("--split", default="train")
    parser.add_argument(
        "--corpus", type=Path, action="append", help="documents of a questions JSONL (repeatable)"
    )
    parser.add_argument("--data-dir", type=Path, default=Path(".keel/train-reranker"))
    parser.add_argument(
        "--depth", type=int, default=Context.candidates, help="candidates per training list"
    )
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--hidden", type=int, default=8, help="tanh units of each network")
    parser.add_argument("--members", type=int, default=5, help="networks averaged")
    parser.add_argument("--l2", type=float, default=1e-2)
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    args = parser.parse_args()
    dataset = load_dataset(args.dataset, args.split, args.corpus)
    settings = eval_settings(Settings(), dataset, {"rerank": True}, args.data_dir)
    # The corpus alone: `Deps` would load the weights in place, which may read other features.
    corpora = open_corpora(settings)
    try:
        prepare_corpus(cast(Deps, SimpleNamespace(settings=settings, corpora=corpora)), dataset)
        while corpora.warm_step(chunks=256):
            pass
        groups = candidates(corpora.get(), dataset, args.depth)
    finally:
        corpora.close()
    depth = settings.rerank_depth
    folds = dataset.folds(args.folds)
    held_out: dict[str, list[float]] = {
        "first stage": [],
        "new model, warm": [],
        "new model, cold": [],
    }
    for fold in range(args.folds):
        train = [g for g, f in zip(groups, folds, strict=True) if f != fold]
        test = [g for g, f in zip(groups, folds, strict=True) if f == fold]
        queries = [q for q, f in zip(dataset.queries, folds, strict=True) if f == fold]
        model = fit(training_lists(train), args.hidden, args.members, args.l2)
        unranked: Scorer = lambda x: -np.arange(len(x))  # noqa: E731
        held_out["first stage"].append(ndcg(test, queries, unranked, False, depth))
        held_out["new model, warm"].append(ndcg(test, queries, model.score, False, depth))
        held_out["new model, cold"].append(ndcg(test, queries, model.score, True, depth))
    for name, values in held_out.items():
        print(f"{name:>16}: nDCG@10 {np.mean(values):.4f} over {args.folds} folds")
    model = fit(training_lists(groups), args.hidden, args.members, args.l2)
    model.save(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, {len(FEATURES)} features)")


if __name__ == "__main__":
    main()
