"""The MiniLM model as keel runs it: the package's int8 weights as integer matrix products."""

from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from integrations.embeddings import MiniLMEmbedder, _model_files, integer_model

TEXTS = [
    "Vitamin D deficiency is associated with a higher risk of fractures.",
    "Low vitamin D levels raise the chance of broken bones.",
    "How do I resume a stream after a disconnect?",
    "Ingestion accepts Markdown, HTML, PDF and plain text files.",
    "0-dimensional biomaterials show inductive properties.",
]


def test_integer_model_is_built_once_into_the_cache_dir(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    source, _ = _model_files()
    built = integer_model(source)
    assert built.parent == tmp_path / "keel" and built.stat().st_size > 0
    assert [p.name for p in built.parent.iterdir()] == [built.name]  # no build leftovers
    stamp = built.stat().st_mtime_ns
    assert integer_model(source) == built and built.stat().st_mtime_ns == stamp  # reused
    ops = Counter(node.op_type for node in onnx.load(str(built)).graph.node)
    # 6 layers x (query, key, value, output, two feed-forward) weight products run on integers;
    # the attention products (activations by activations) stay float.
    assert ops["MatMulInteger"] == 36 and ops["DynamicQuantizeLinear"] > 0
    assert ops["MatMul"] == 12


def test_integer_model_keeps_the_float_models_vectors():
    """Against the package's model as onnxruntime runs it unchanged (float products)."""
    model = MiniLMEmbedder(cache_size=0)
    source, _ = _model_files()
    model._session = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
    expected = model.embed(TEXTS)
    actual = MiniLMEmbedder(cache_size=0).embed(TEXTS)
    cosines = (actual * expected).sum(axis=1)
    assert cosines.min() >= 0.98 and cosines.mean() >= 0.99, cosines
    np.testing.assert_allclose(np.linalg.norm(actual, axis=1), 1.0, rtol=1e-5)
    # what is near stays near: the paraphrase pair is each other's nearest text
    similarity = actual @ actual.T
    np.fill_diagonal(similarity, -1)
    assert similarity[0].argmax() == 1 and similarity[1].argmax() == 0
    assert similarity[0, 1] == pytest.approx(expected[0] @ expected[1], abs=0.02)


def test_one_text_alone_gets_the_vector_it_gets_in_a_batch():
    """A single text runs on the model's one-thread session, a batch on its all-cores one; the
    vectors differ only as activations quantized over another batch do."""
    model = MiniLMEmbedder(threads=2, cache_size=0)
    batch = model.embed(TEXTS)
    alone = np.stack([model.embed([text])[0] for text in TEXTS])
    cosines = (alone * batch).sum(axis=1)
    assert cosines.min() >= 0.98 and cosines.mean() >= 0.99, cosines
