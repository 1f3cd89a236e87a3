"""An in-memory BM25 index (Okapi, k1/b) with Snowball stemming, rebuilt from the vector store."""

import math
import re
from collections import Counter, defaultdict
from collections.abc import Sequence

import numpy as np
import Stemmer

# Hyphenated compounds split into their parts ("soil-transmitted" matches "soil transmitted"):
# +0.028 nDCG@10 for BM25 on SciFact train over keeping them whole.
_TOKEN = re.compile(r"[a-z0-9]+")
_STOPWORDS = frozenset(
    "a an and are as at be but by for from has have in into is it its of on or that the their "
    "there these this those to was were which with".split()
)
_stemmer = Stemmer.Stemmer("english")


def tokenize(text: str) -> list[str]:
    """Lower-cases, splits on non-alphanumerics, drops stop words and stems (Snowball)."""
    words = [w for w in _TOKEN.findall(text.lower()) if w not in _STOPWORDS]
    return _stemmer.stemWords(words)


class BM25Index:
    """Okapi BM25 over a fixed list of documents; scoring is vectorised per query term."""

    def __init__(self, ids: Sequence[str], texts: Sequence[str], k1: float = 1.2, b: float = 0.75):
        self.ids = list(ids)
        self.k1, self.b = k1, b
        postings: dict[str, list[tuple[int, int]]] = defaultdict(list)
        lengths = np.zeros(len(self.ids), dtype=np.float32)
        for row, text in enumerate(texts):
            counts = Counter(tokenize(text))
            lengths[row] = sum(counts.values())
            for term, tf in counts.items():
                postings[term].append((row, tf))
        self._avgdl = float(lengths.mean()) if len(lengths) else 0.0
        self._norm = k1 * (1 - b + b * lengths / max(self._avgdl, 1e-9))
        n = len(self.ids)
        self._postings = {
            term: (
                np.array([r for r, _ in rows], dtype=np.int64),
                np.array([tf for _, tf in rows], dtype=np.float32),
                math.log(1 + (n - len(rows) + 0.5) / (len(rows) + 0.5)),
            )
            for term, rows in postings.items()
        }

    def __len__(self) -> int:
        return len(self.ids)

    def search(self, query: str, k: int) -> list[tuple[str, float]]:
        """The top `k` (id, score) pairs with a positive score, best first."""
        scores = np.zeros(len(self.ids), dtype=np.float32)
        for term, qtf in Counter(tokenize(query)).items():
            hit = self._postings.get(term)
            if hit is None:
                continue
            rows, tf, idf = hit
            scores[rows] += qtf * idf * tf * (self.k1 + 1) / (tf + self._norm[rows])
        top = np.argsort(-scores)[:k]
        return [(self.ids[i], float(scores[i])) for i in top if scores[i] > 0]
