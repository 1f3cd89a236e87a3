"""Fits the evidence model (`nodes/evidence.py`) on a dataset's annotated evidence sentences and
writes its weights. Run: `python -m scripts.train_evidence [--dataset DIR] [--split train]
[--out nodes/evidence_model.npz]`.

Each claim with annotated evidence is scored in three settings: as if retrieval were perfect
(its gold abstracts only: the ceiling), with its gold abstracts among the `--distractors` other
abstracts of the pool closest to it (to learn to pass over the wrong documents), and as a cold
corpus serves them (twice as many distractors, each abstract cut into chunks as ingestion cuts it,
each chunk offering the `COLD_SENTENCES` sentences its static vectors find closest, as `keel eval`
meets them). It prints the evidence precision, recall and F1 of the hand rule the model replaced
and of the model over five folds by claim (claims that share an abstract in one; fitted on the
other four each time on every setting's sentences, its threshold, relative floor and
per-passage cap chosen there for F1 in the cold setting), then fits on every claim and writes the weights (about 3 KB). Sentence vectors are
cached under `--cache`."""

import argparse
import hashlib
import itertools
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from langchain_text_splitters import RecursiveCharacterTextSplitter

from corpus.lexical import tokenize
from evals import SCIFACT, metrics
from evals.datasets import abstract_sentences, grouped_folds, load_beir
from graph.settings import Settings
from integrations.embeddings import MiniLMEmbedder, StaticEmbedder
from integrations.text import split_sentences
from nodes import extractive
from nodes.evidence import FEATURES, WEIGHTS, EvidenceModel, fit_logistic

FOLDS = 5
THRESHOLDS = np.round(np.arange(0.1, 0.71, 0.025), 3)
PER_PASSAGE = (1, 2, 3, 4)
RELATIVE = (0.0, 0.3, 0.5, 0.7)
COLD = extractive.COLD_SENTENCES


@dataclass
class Claim:
    """A claim with its candidate passages: their sentences and vectors, each passage's
    abstract, the rank of that abstract and the abstract's index of each sentence."""

    id: str
    question: str
    vector: np.ndarray
    docs: list[str]
    candidates: list[tuple[list[str], np.ndarray]]
    evidence: tuple[tuple[str, int], ...]
    doc_ranks: list[int]
    positions: list[list[int]]

    def pair(self, passage: int, position: int) -> tuple[str, int]:
        """(abstract id, sentence index) of a passage's sentence, as evidence is annotated."""
        return self.docs[passage], self.positions[passage][position]


def _embed(model: MiniLMEmbedder, texts: list[str], cache: Path) -> np.ndarray:
    key = hashlib.sha1("\n".join(texts).encode()).hexdigest()[:16]
    path = cache / f"{key}.npy"
    if path.exists():
        return np.load(path)
    vectors = model.embed(texts) if texts else np.zeros((0, model.dim), dtype=np.float32)
    cache.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors


def _cold(static: StaticEmbedder, sentences: list[str], query: np.ndarray, keep: int) -> list[int]:
    """The `keep` sentences a chunk not embedded yet offers: closest to the query by static
    vector, in order (`SentenceVectors.scoring_vectors`)."""
    if not sentences:
        return []
    near = np.argsort(-(static.embed(sentences) @ query), kind="stable")
    return sorted(int(i) for i in near[:keep])


def _chunked(
    chunker: RecursiveCharacterTextSplitter, text: str, sentences: list[str]
) -> list[list[int]]:
    """The abstract cut into chunks as ingestion cuts it (`corpus.chunking`): each chunk's
    sentences as indexes of the abstract's, matched by text as `keel eval` matches answers."""
    index = {s: i for i, s in reversed(list(enumerate(sentences)))}
    return [
        [index[s] for s in split_sentences(chunk) if s in index]
        for chunk in chunker.split_text(text) or [text]
    ]


def load_claims(
    dataset_dir: Path, split: str, cache: Path, distractors: int, cold: int = 0
) -> list[Claim]:
    """Claims with annotated evidence, their gold abstracts and, when `distractors`, that many
    other abstracts of the same pool (every gold abstract of the split) closest to the claim.
    With `cold`, each abstract is cut into chunks as ingestion cuts it and each chunk offers only
    that many sentences, those its static vectors find closest to the claim, as a chunk not
    embedded yet does (`SentenceVectors.scoring_vectors`)."""
    dataset = load_beir(dataset_dir, split)
    texts = {d.id: d.text for d in dataset.documents or []}
    queries = [q for q in dataset.queries if q.evidence]
    pool = sorted({doc for q in queries for doc, _ in q.evidence})
    sentences = {doc: abstract_sentences(texts[doc]) for doc in pool}
    model = MiniLMEmbedder()
    flat = [s for doc in pool for s in sentences[doc]]
    vectors = _embed(model, flat, cache)
    by_doc, offset = {}, 0
    for doc in pool:
        by_doc[doc] = vectors[offset : offset + len(sentences[doc])]
        offset += len(sentences[doc])
    claim_vectors = _embed(model, [q.question for q in queries], cache)
    static = StaticEmbedder(model)
    settings = Settings()
    chunker = RecursiveCharacterTextSplitter(
        chunk_size=settings.chunk_size, chunk_overlap=settings.chunk_overlap
    )
    claims = []
    for query, vector in zip(queries, claim_vectors, strict=True):
        gold = list(dict.fromkeys(doc for doc, _ in query.evidence))
        docs = list(gold)
        if distractors:
            best = {d: float((by_doc[d] @ vector).max()) for d in pool if d not in gold}
            docs += sorted(best, key=lambda d: -best[d])[:distractors]
            # Ranked as a retriever would: by best sentence cosine.
            docs.sort(key=lambda d: -float((by_doc[d] @ vector).max()))
        candidates, owners, ranks, positions = [], [], [], []
        for rank, d in enumerate(docs):
            whole = [list(range(len(sentences[d])))]
            for kept in _chunked(chunker, texts[d], sentences[d]) if cold else whole:
                if cold:
                    near = _cold(static, [sentences[d][i] for i in kept], vector, cold)
                    kept = [kept[i] for i in near]
                candidates.append(([sentences[d][i] for i in kept], by_doc[d][kept]))
                owners.append(d)
                ranks.append(rank)
                positions.append(kept)
        claims.append(
            Claim(
                query.id,
                query.question,
                vector,
                owners,
                candidates,
                query.evidence,
                ranks,
                positions,
            )
        )
    return claims


@dataclass
class Scored:
    """A claim's choosable sentences with their features and labels."""

    claim: Claim
    found: extractive.Candidates | None
    labels: np.ndarray


def _scored(claim: Claim) -> Scored:
    found = extractive.candidate_sentences(
        claim.question, claim.vector, claim.candidates, claim.doc_ranks
    )
    gold = set(claim.evidence)
    owners = found.owners if found else []
    labels = np.array([claim.pair(p, i) in gold for p, i in owners], dtype=np.float32)
    return Scored(claim, found, labels)


def _score(claims: list[Claim], picks: list[set[tuple[str, int]]]) -> dict[str, float]:
    precision, recall = [], []
    for claim, chosen in zip(claims, picks, strict=True):
        p, r = metrics.evidence_precision_recall(chosen, claim.evidence)
        precision.append(p)
        recall.append(r)
    p, r = float(np.mean(precision)), float(np.mean(recall))
    return {"precision": round(p, 3), "recall": round(r, 3), "f1": round(2 * p * r / (p + r), 3)}


def hand_rule(
    question: str,
    query: np.ndarray,
    candidates: list[tuple[list[str], np.ndarray]],
    doc_ranks: list[int],
) -> list[tuple[int, int]]:
    """The selection the model replaced, as (passage, position) pairs: cosine plus 0.8 x the
    share of the question's words, from 0.5 and within 0.2 of the best, at most 4, no
    near-duplicates (0.85 cosine)."""
    owners, cosine, overlap, blocks = [], [], [], []
    asked = set(tokenize(question))
    for rank, (sentences, vectors) in enumerate(candidates):
        block = np.asarray(vectors, dtype=np.float32)
        for i, sentence in enumerate(sentences):
            if extractive.is_heading(sentence):
                continue
            owners.append((rank, i))
            blocks.append(block[i])
            cosine.append(float(block[i] @ query))
            words = asked.intersection(tokenize(sentence))
            overlap.append(len(words) / len(asked) if asked else 0.0)
    if not owners:
        return []
    matrix = np.vstack(blocks)
    ranks = np.array([doc_ranks[passage] for passage, _ in owners])
    relevance = np.array(cosine) + 0.8 * np.array(overlap) - 0.05 * ranks
    order = np.argsort(-relevance, kind="stable")
    floor = max(0.5, float(relevance[order[0]]) - 0.2)
    chosen: list[int] = []
    for i in order:
        if relevance[i] < floor or len(chosen) == 4:
            break
        if chosen and float((matrix[chosen] @ matrix[i]).max()) >= 0.85:
            continue
        chosen.append(int(i))
    return [owners[i] for i in chosen]


def _hand_picks(claim: Claim) -> set[tuple[str, int]]:
    chosen = hand_rule(claim.question, claim.vector, claim.candidates, claim.doc_ranks)
    return {claim.pair(p, i) for p, i in chosen}


def _picks(item: Scored, model: EvidenceModel) -> set[tuple[str, int]]:
    if item.found is None:
        return set()
    chosen = extractive.choose(item.found, model.probability(item.found.rows), model)
    return {item.claim.pair(*item.found.owners[i]) for i in chosen}


def fit(train: list[Scored], tune: list[Scored], l2: float) -> EvidenceModel:
    """The logistic regression on the sentences of `train`, with the threshold and per-passage
    cap that give the claims of `tune` the best evidence F1."""
    rows = np.vstack([i.found.rows for i in train if i.found is not None])
    labels = np.concatenate([i.labels for i in train])
    mean, scale, weights, bias = fit_logistic(rows, labels, l2)
    claims = [i.claim for i in tune]
    best, best_f1 = None, -1.0
    for per_passage, threshold, relative in itertools.product(PER_PASSAGE, THRESHOLDS, RELATIVE):
        model = EvidenceModel(mean, scale, weights, bias, float(threshold), per_passage, relative)
        f1 = _score(claims, [_picks(i, model) for i in tune])["f1"]
        if f1 > best_f1:
            best, best_f1 = model, f1
    assert best is not None
    return best


def cross_validate(
    settings: dict[str, list[Claim]], l2: float
) -> tuple[dict[str, dict[str, float]], EvidenceModel]:
    """Fold scores of the hand rule and of the model in each setting (the same folds by claim,
    claims that share an abstract in one: `grouped_folds`),
    and the model fitted on every claim. The model learns from every setting's sentences and
    takes its threshold from the last one (the closest to a retriever's candidates)."""
    items = {name: [_scored(c) for c in claims] for name, claims in settings.items()}
    last = list(items)[-1]
    n = len(items[last])
    folds = np.array(grouped_folds([{doc for doc, _ in c.evidence} for c in settings[last]], FOLDS))
    picks: dict[str, list[set[tuple[str, int]]]] = {name: [set()] * n for name in items}
    for fold in range(FOLDS):
        train = [k for k in range(n) if folds[k] != fold]
        model = fit(
            [it[k] for it in items.values() for k in train], [items[last][k] for k in train], l2
        )
        for name in items:
            for k in np.flatnonzero(folds == fold):
                picks[name][k] = _picks(items[name][k], model)
    report: dict[str, dict[str, float]] = {}
    for name, claims in settings.items():
        report[f"hand rule, {name}"] = _score(claims, [_hand_picks(c) for c in claims])
        report[f"model, {name}"] = _score(claims, picks[name])
    return report, fit([it for its in items.values() for it in its], items[last], l2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=SCIFACT)
    parser.add_argument("--split", default="train")
    parser.add_argument("--distractors", type=int, default=2)
    parser.add_argument("--l2", type=float, default=1.0)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/keel-evidence-cache"))
    parser.add_argument("--out", type=Path, default=WEIGHTS)
    args = parser.parse_args()

    def claims(distractors: int, cold: int = 0) -> list[Claim]:
        return load_claims(args.dataset, args.split, args.cache, distractors, cold)

    settings = {
        "gold abstracts": claims(0),
        f"gold + {args.distractors} distractors": claims(args.distractors),
        f"cold chunks, gold + {2 * args.distractors}": claims(2 * args.distractors, COLD),
    }
    report, model = cross_validate(settings, args.l2)
    print(json.dumps({"claims": len(settings["gold abstracts"]), **report}, indent=2))
    print(
        json.dumps(
            {
                "threshold": model.threshold,
                "relative": model.relative,
                "per_passage": model.per_passage,
                "weights": dict(zip(FEATURES, np.round(model.weights, 3).tolist(), strict=True)),
            }
        )
    )
    model.save(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
