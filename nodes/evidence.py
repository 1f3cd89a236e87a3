"""The evidence model: the probability that a sentence of a ranked passage is evidence for the
question, from what keel's own models give (MiniLM cosine and its standing within the passage and
among all candidates, stemmed and IDF-weighted word overlap, shared numbers and identifiers,
length, result wording, the document's rank), by a logistic regression fitted on SciFact train's
rationale sentences by `scripts/train_evidence.py` and loaded from `evidence_model.npz` with numpy.

Not the sentence's position: SciFact's abstracts state results last, most documents do not, a
cold chunk offers only a few of its sentences, and without it the cold setting measured better."""

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Self

import numpy as np

from corpus.lexical import tokenize
from integrations.weights import read_weights, write_weights

WEIGHTS: Final = Path(__file__).with_name("evidence_model.npz")
FEATURES: Final = (
    "cosine",
    "cosine_margin_passage",
    "cosine_margin_all",
    "cosine_rank_passage",
    "overlap",
    "overlap_idf",
    "overlap_margin_passage",
    "bm25",
    "shared_codes",
    "log_words",
    "result_cues",
    "doc_rank",
    "relevance",
    "relevance_margin_all",
)
# Relevance, what abstention judges (`nodes.extractive`) and two of the model's inputs (itself and
# its gap to the best candidate's): cosine + 0.8 x word share - 0.05 x the document's rank.
LEXICAL_WEIGHT, RANK_PENALTY = 0.8, 0.05
_WORD = re.compile(r"[a-z0-9]+")
# Wording that reports a finding rather than background or method (SciFact's rationales do).
_CUES = re.compile(
    r"\b(?:we (?:found|show|observed|demonstrate|report)|found|show(?:s|ed|n)?|demonstrat\w*|"
    r"associat\w*|increas\w*|decreas\w*|reduc\w*|improv\w*|higher|lower|significant\w*|"
    r"correlat\w*|result(?:s|ed)? in|led to|induc\w*|inhibit\w*|requir\w*|suggest\w*|"
    r"indicat\w*|conclu\w*|odds ratio|hazard ratio|confidence interval|p\s*[<=]|\d+(?:\.\d+)?\s*%)"
)
BM25_K1, BM25_B = 1.2, 0.75


def _codes(text: str) -> set[str]:
    """Numbers and identifiers (words with a digit: "eIF3f", "CCL19", "1.5")."""
    return {w for w in _WORD.findall(text.lower()) if any(c.isdigit() for c in w)}


def sentence_features(
    question: str,
    query: np.ndarray,
    candidates: list[tuple[list[str], np.ndarray]],
    doc_ranks: list[int] | None = None,
) -> np.ndarray:
    """One row of `FEATURES` per sentence of `candidates` (each passage's sentences and their
    unit vectors, in passage order), for the question and its unit vector `query`."""
    asked = set(tokenize(question))
    asked_codes = _codes(question)
    words = [[tokenize(s) for s in sentences] for sentences, _ in candidates]
    flat = [w for passage in words for w in passage]
    # IDF over the candidate sentences: a word every candidate has tells them apart by nothing.
    count = len(flat)
    df: dict[str, int] = {}
    for sentence_words in flat:
        for word in set(sentence_words).intersection(asked):
            df[word] = df.get(word, 0) + 1
    idf = {w: math.log(1 + (count + 1) / (df.get(w, 0) + 0.5)) for w in asked}
    idf_total = sum(idf.values()) or 1.0
    mean_len = (sum(len(w) for w in flat) / count) if count else 1.0
    by_passage = doc_ranks if doc_ranks is not None else list(range(len(candidates)))
    cosines = [
        np.asarray(v, dtype=np.float32).reshape(len(s), -1) @ query.astype(np.float32)
        if len(s)
        else np.zeros(0, dtype=np.float32)
        for s, v in candidates
    ]
    best_all = max((float(c.max()) for c in cosines if len(c)), default=0.0)
    rows: list[list[float]] = []
    for n, (sentences, _) in enumerate(candidates):
        cos = cosines[n]
        if not len(sentences):
            continue
        shared = [asked.intersection(w) for w in words[n]]
        overlap = [len(s) / len(asked) if asked else 0.0 for s in shared]
        order = np.argsort(-cos, kind="stable")
        rank = np.empty(len(cos), dtype=np.float32)
        rank[order] = np.arange(len(cos))
        for i, sentence in enumerate(sentences):
            tf: dict[str, int] = {}
            for word in words[n][i]:
                if word in asked:
                    tf[word] = tf.get(word, 0) + 1
            norm = BM25_K1 * (1 - BM25_B + BM25_B * len(words[n][i]) / (mean_len or 1.0))
            bm25 = sum(idf[w] * f * (BM25_K1 + 1) / (f + norm) for w, f in tf.items())
            rows.append(
                [
                    float(cos[i]),
                    float(cos[i] - cos.max()),
                    float(cos[i]) - best_all,
                    1.0 / (1.0 + float(rank[i])),
                    overlap[i],
                    sum(idf[w] for w in shared[i]) / idf_total,
                    overlap[i] - max(overlap),
                    bm25 / idf_total,
                    float(len(asked_codes.intersection(_codes(sentence))) > 0),
                    math.log1p(len(sentence.split())),
                    float(len(_CUES.findall(sentence.lower()))),
                    float(by_passage[n]),
                ]
            )
    out = np.array(rows, dtype=np.float32).reshape(len(rows), len(FEATURES) - 2)
    relevance = out[:, 0] + LEXICAL_WEIGHT * out[:, 4] - RANK_PENALTY * out[:, -1]
    best = relevance.max() if len(relevance) else 0.0
    return np.hstack([out, relevance[:, None], (relevance - best)[:, None]])


@dataclass(frozen=True)
class EvidenceModel:
    """P(evidence) = sigmoid(((x - mean) / scale) . weights + bias); a sentence is chosen when it
    reaches `threshold` and `relative` x the best sentence's, at most `per_passage` of each
    passage."""

    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    threshold: float
    per_passage: int
    relative: float = 0.0

    @classmethod
    def load(cls, path: Path = WEIGHTS) -> Self:
        stored = read_weights(path, FEATURES)
        return cls(
            stored["mean"],
            stored["scale"],
            stored["weights"],
            float(stored["bias"]),
            float(stored["threshold"]),
            int(stored["per_passage"]),
            float(stored["relative"]),
        )

    def save(self, path: Path = WEIGHTS) -> None:
        write_weights(
            path,
            FEATURES,
            {
                "mean": self.mean,
                "scale": self.scale,
                "weights": self.weights,
                "bias": self.bias,
                "threshold": self.threshold,
                "per_passage": self.per_passage,
                "relative": self.relative,
            },
        )

    def probability(self, rows: np.ndarray) -> np.ndarray:
        """Each row's probability of being evidence."""
        logits = ((rows - self.mean) / self.scale) @ self.weights + self.bias
        return 1.0 / (1.0 + np.exp(-np.clip(logits, -30, 30)))


def fit_logistic(
    rows: np.ndarray, labels: np.ndarray, l2: float = 1.0, steps: int = 50
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Mean, scale, weights and bias of an L2-regularised logistic regression (Newton steps)."""
    mean = rows.mean(axis=0)
    scale = rows.std(axis=0)
    scale[scale < 1e-6] = 1.0
    x = np.hstack([(rows - mean) / scale, np.ones((len(rows), 1), dtype=np.float32)])
    x = x.astype(np.float64)
    y = labels.astype(np.float64)
    w = np.zeros(x.shape[1])
    penalty = np.full(x.shape[1], l2)
    penalty[-1] = 0.0
    for _ in range(steps):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ w, -30, 30)))
        gradient = x.T @ (p - y) + penalty * w
        hessian = (x * (p * (1 - p))[:, None]).T @ x + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hessian, gradient)
        w -= step
        if np.abs(step).max() < 1e-7:
            break
    return mean, scale, w[:-1], float(w[-1])
