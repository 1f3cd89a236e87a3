"""Sentence vectors of one collection: what the reranker (late interaction at sentence level)
and the extractive answerer score by.

They are computed the first time a chunk reaches them and stored in the chunk store for every
replica; `keel serve` embeds the rest in the background (`warm`). Until then a query embeds only
the few sentences of a chunk that static vectors (a per-token table distilled from the same
model) find closest to it (`scoring_vectors`).
"""

import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from corpus.store import ChunkStore
from integrations.embeddings import Embedder, StaticEmbedder
from integrations.text import split_sentences

log = logging.getLogger("keel.corpus")

# `match_scores`: a static cosine mapped to the model's scale (least squares of the best model
# cosine on the best static one, over SciFact train's first-stage candidates; correlation 0.40).
STATIC_SCALE, STATIC_OFFSET = 0.789, 0.351
MAX_WANTED = 10_000  # cold chunks remembered for the warmer
# Chunks whose stored sentences and vectors stay in memory (~15 KB each), most recently used.
MAX_CACHED_CHUNKS = 2048

Scored = dict[str, tuple[list[str], np.ndarray]]


@dataclass(frozen=True)
class Matches:
    """How chunks' sentences match a query, in chunk order: `model`, the best sentence's model
    cosine (see `SentenceVectors.match_scores`); `best`, that sentence; `static`, the best two
    static cosines of the chunk's sentences (one sentence: twice the same)."""

    model: np.ndarray
    static: np.ndarray
    best: list[str]


class SentenceVectors:
    """Stored, cached and cold-scored sentence vectors of one collection."""

    def __init__(
        self,
        store: ChunkStore,
        collection: str,
        embedder: Embedder,
        static: StaticEmbedder,
        batch_size: int,
    ):
        self._store, self._collection = store, collection
        self._embedder, self._static, self._batch_size = embedder, static, batch_size
        # Chunks a query scored cold (oldest first): warmed first, even while runs go on.
        self._wanted: dict[str, None] = {}
        # (corpus version, chunk id) -> stored sentences and vectors, least recently used first
        self._cached: OrderedDict[tuple[int, str], tuple[list[str], np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()
        self._complete = False  # every chunk had sentence vectors at the last full warm step

    @property
    def static(self) -> StaticEmbedder:
        """The static vectors that score sentences not embedded yet."""
        return self._static

    def embed_and_store(
        self, chunks: Sequence[tuple[str, str]], embedder: Embedder | None = None
    ) -> Scored:
        """Embeds the sentences of chunks (id, text) and stores them; returns them."""
        split = {cid: split_sentences(text) for cid, text in chunks}
        texts = [s for sentences in split.values() for s in sentences]
        vectors = (
            (embedder or self._embedder).embed(texts, batch_size=self._batch_size)
            if texts
            else np.zeros((0, self._embedder.dim), dtype=np.float32)
        )
        out, offset = {}, 0
        for cid, sentences in split.items():
            out[cid] = (sentences, vectors[offset : offset + len(sentences)])
            offset += len(sentences)
        self._store.store_sentences(self._collection, [(c, s, v) for c, (s, v) in out.items()])
        return out

    def vectors(self, chunk_ids: Sequence[str], version: int) -> Scored:
        """Each chunk's sentences and their vectors, in order; embedded and stored on first use."""
        out, cold = self._stored(chunk_ids, version)
        if cold:
            out.update(self.embed_and_store(list(cold.items())))
        return out

    def scoring_vectors(
        self,
        chunk_ids: Sequence[str],
        query: np.ndarray,
        version: int,
        cold_sentences: int,
    ) -> Scored:
        """Sentences and model vectors to score chunks against `query` by: all of a chunk's
        stored ones, and for a chunk not embedded yet only its `cold_sentences` sentences
        closest to the query by static vector, embedded now (not stored). So a cold chunk costs
        a few sentences of model time, and every score is a model cosine. Without a static
        table this is `vectors`."""
        out, cold_texts = self._stored(chunk_ids, version)
        cold = {cid: split_sentences(text) for cid, text in cold_texts.items()}
        texts = [s for sentences in cold.values() for s in sentences]
        if not texts:
            return out
        with self._lock:
            if len(self._wanted) < MAX_WANTED:
                self._wanted.update(dict.fromkeys(cold))
        closeness = self._static.embed(texts) @ query.astype(np.float32)
        picked, offset = {}, 0
        for cid, sentences in cold.items():
            near = np.argsort(-closeness[offset : offset + len(sentences)], kind="stable")
            picked[cid] = [sentences[i] for i in sorted(near[:cold_sentences].tolist())]
            offset += len(sentences)
        vectors = self._embedder.embed(
            [s for sentences in picked.values() for s in sentences], self._batch_size
        )
        offset = 0
        for cid, sentences in picked.items():
            out[cid] = (sentences, vectors[offset : offset + len(sentences)])
            offset += len(sentences)
        return out

    def match_scores(
        self, chunk_ids: Sequence[str], query: np.ndarray, version: int, model_depth: int
    ) -> Matches:
        """How well each chunk's sentences match `query`, in chunk order (zeros and no sentence
        for a chunk deleted since). The model's side: the cosine of its best stored sentence
        vector; for a chunk not embedded yet among the first `model_depth`, the model's cosine
        of the sentence its static vectors rank first, embedded now; below them, that best
        static cosine on the model's scale. So a query costs at most `model_depth` sentences of
        model time, and a warm corpus is scored by the model alone. The static side (the best
        two static cosines) is computed for every chunk: ~1000x cheaper than the model."""
        stored, cold_texts = self._stored(chunk_ids, version)
        model = np.zeros(len(chunk_ids), dtype=np.float32)
        static = np.zeros((len(chunk_ids), 2), dtype=np.float32)
        best = [""] * len(chunk_ids)
        split: dict[int, list[str]] = {}
        for n, cid in enumerate(chunk_ids):
            if cid in stored:
                sentences, vectors = stored[cid]
                if len(vectors):
                    cosines = vectors @ query
                    top = int(np.argmax(cosines))
                    model[n], best[n] = float(cosines[top]), sentences[top]
                    split[n] = sentences
            elif cid in cold_texts and (sentences := split_sentences(cold_texts[cid])):
                split[n] = sentences
        if not split:
            return Matches(model, static, best)
        texts = [sentence for sentences in split.values() for sentence in sentences]
        closeness = self._static.embed(texts) @ query.astype(np.float32)
        picks: dict[int, str] = {}  # position -> the cold sentence the model embeds now
        offset = 0
        for n, sentences in split.items():
            near = closeness[offset : offset + len(sentences)]
            offset += len(sentences)
            ranked = np.sort(near)[::-1]
            static[n] = ranked[0], ranked[min(1, len(ranked) - 1)]
            if chunk_ids[n] in stored:
                continue
            top = int(np.argmax(near))
            model[n], best[n] = STATIC_SCALE * float(near[top]) + STATIC_OFFSET, sentences[top]
            if n < model_depth:
                picks[n] = sentences[top]
        if picks:
            with self._lock:
                if len(self._wanted) < MAX_WANTED:
                    self._wanted.update(dict.fromkeys(chunk_ids[n] for n in picks))
            vectors = self._embedder.embed(list(picks.values()), self._batch_size)
            for (n, _), vector in zip(picks.items(), vectors, strict=True):
                model[n] = float(vector @ query)
        return Matches(model, static, best)

    def warm(self, chunks: int, wanted_only: bool, embedder: Embedder | None = None) -> int:
        """Embeds (with `embedder`, default the collection's own) and stores the sentences of
        up to `chunks` chunks that have none yet, those queries scored cold first (with
        `wanted_only`, only those); returns how many it took (0 when none is left)."""
        with self._lock:
            wanted = list(self._wanted)[:chunks]
            for cid in wanted:
                self._wanted.pop(cid, None)
        if wanted_only and not wanted:
            return 0  # while runs go on, looking up the store every step is waste
        todo = self._store.cold(self._collection, chunks, wanted) if wanted else []
        if not wanted_only and len(todo) < chunks:
            taken = {cid for cid, _ in todo}
            more = self._store.cold(self._collection, chunks)
            todo += [row for row in more if row[0] not in taken][: chunks - len(todo)]
        if todo:
            self.embed_and_store(todo, embedder)
            self._complete = False
        if not wanted_only and len(todo) < chunks and not self._complete:
            self._complete = True  # the store had no more cold chunks: said once
            count = self._store.count(self._collection)
            log.info("sentence vectors of all %d chunks of %s stored", count, self._collection)
        return len(todo)

    def _stored(self, chunk_ids: Sequence[str], version: int) -> tuple[Scored, dict[str, str]]:
        """The stored sentences and vectors of those chunks that have them (from memory when a
        recent query read them at this corpus version), and the texts of those that have none."""
        out: Scored = {}
        with self._lock:
            for cid in chunk_ids:
                if (hit := self._cached.get((version, cid))) is not None:
                    self._cached.move_to_end((version, cid))
                    out[cid] = hit
        cold: dict[str, str] = {}
        if missing := [cid for cid in chunk_ids if cid not in out]:
            rows = self._store.sentence_rows(self._collection, missing)
            with self._lock:
                for cid in missing:
                    row = rows.get(cid)
                    if row is None:
                        continue  # deleted since it was retrieved
                    if row.sentences is None:
                        cold[cid] = row.text
                        continue
                    empty = np.zeros((0, self._embedder.dim), dtype=np.float32)
                    value = (row.sentences, row.vectors if row.vectors is not None else empty)
                    out[cid] = self._cached[(version, cid)] = value
                while len(self._cached) > MAX_CACHED_CHUNKS:
                    self._cached.popitem(last=False)
        return out, cold
