"""The injection classifier: logistic regression over the question's MiniLM vector and lexical
features, with weights trained by `scripts/train_guard.py` and committed beside this module.

It backs the guard's rules (`nodes.injection_rules`): the rules name what they know
exactly, the classifier catches rewordings of them. Its vector is the one the run computes for
retrieval anyway (`Corpora.query_vector`), so at question time it costs a dot product."""

import functools
import itertools
import math
import re
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

WEIGHTS = Path(__file__).with_name("injection_model.npz")
# Hashed word unigrams and bigrams: enough buckets that collisions are rare among the few
# thousand words that matter, few enough that the weights stay kilobytes.
BUCKETS = 2048
SHAPE = 8
_WORD = re.compile(r"[a-z0-9']+|[^\sa-z0-9]")
_TOKEN = re.compile(r"\S+")


def _bucket(term: str) -> int:
    return zlib.crc32(term.encode()) % BUCKETS


def lexical_features(text: str) -> np.ndarray:
    """Hashed word unigrams and bigrams (L2-normalised presence) and the text's shape: length,
    symbols, capitals, long or mixed tokens, vowel-less words, second person, line breaks."""
    lowered = text.lower()
    words = _WORD.findall(lowered[:4000])
    out = np.zeros(BUCKETS + SHAPE, dtype=np.float32)
    terms = {*words, *(f"{a} {b}" for a, b in itertools.pairwise(words))}
    for term in terms:
        out[_bucket(term)] = 1.0
    if terms:
        out[:BUCKETS] /= math.sqrt(len(terms))
    tokens = _TOKEN.findall(text[:4000]) or [""]
    chars = max(len(text), 1)
    alpha = [t for t in tokens if t.isalpha()]
    out[BUCKETS:] = (
        math.log1p(len(text)) / 10,
        sum(not (c.isalnum() or c.isspace()) for c in text[:4000]) / min(chars, 4000),
        sum(c.isupper() for c in text[:4000]) / min(chars, 4000),
        min(max(len(t) for t in tokens), 60) / 60,
        sum(any(c.isdigit() for c in t) and any(c.isalpha() for c in t) for t in tokens)
        / len(tokens),
        sum(not re.search(r"[aeiouy]", t.lower()) for t in alpha) / max(len(alpha), 1),
        sum(w in ("you", "your", "you're", "yourself") for w in words) / max(len(words), 1),
        text.count("\n") / chars * 20,
    )
    return out


def features(text: str, vector: np.ndarray) -> np.ndarray:
    """The classifier's input: the text's MiniLM vector, then its lexical features."""
    return np.concatenate([np.asarray(vector, dtype=np.float32), lexical_features(text)])


@dataclass(frozen=True)
class InjectionModel:
    """Weights, bias and the decision threshold (chosen on the training split)."""

    weights: np.ndarray
    bias: float
    threshold: float

    def probability(self, text: str, vector: np.ndarray) -> float:
        """How likely the text is an injection or jailbreak attempt (0..1)."""
        z = float(features(text, vector) @ self.weights) + self.bias
        return 1.0 / (1.0 + math.exp(-max(min(z, 50.0), -50.0)))

    def flags(self, text: str, vector: np.ndarray) -> bool:
        """Whether the text is over the threshold."""
        return self.probability(text, vector) >= self.threshold

    def save(self, path: Path = WEIGHTS) -> None:
        """Writes the weights (float16: kilobytes, and the decision moves by < 1e-3)."""
        np.savez_compressed(
            path,
            weights=self.weights.astype(np.float16),
            bias=np.float32(self.bias),
            threshold=np.float32(self.threshold),
        )


@functools.cache
def load_model(path: Path = WEIGHTS) -> InjectionModel:
    """The committed classifier."""
    with np.load(path) as stored:
        return InjectionModel(
            stored["weights"].astype(np.float32),
            float(stored["bias"]),
            float(stored["threshold"]),
        )
