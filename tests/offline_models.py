"""The test suite's models without a model hub: the real ones PyPI ships, and a stand-in.

The real models (all-MiniLM-L6-v2, BM25's stopwords, SPLADE-tiny) are the package's own
builds, ``llama_index_fastembed_rerank.pypi_weights``. The stand-in is the tests' alone: a
cross-encoder with the interface of ``Xenova/ms-marco-MiniLM-L-6-v2``, all-MiniLM-L6-v2's
encoder under an untrained, seeded head. Its scores test plumbing, batching, speed and
agreement with fastembed, never relevance. It has a name of its own
(``STANDIN_RERANK_MODEL``); only the tests' private caches hold it under a real model's name.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from llama_index_fastembed_rerank import bert_onnx, pypi_weights
from llama_index_fastembed_rerank.cache_layout import TOKENIZER_FILES
from llama_index_fastembed_rerank.pypi_weights import (
    EMBED_MODEL,
    SPLADE_MODEL,
    build_bm25,
    build_minilm_encoder,
    build_once,
    build_splade_tiny,
    default_build_dir,
    minilm_checkpoint,
)

__all__ = [
    "EMBED_MODEL",
    "SPARSE_MODEL",
    "SPLADE_MODEL",
    "STANDIN_RERANK_MODEL",
    "build_bm25",
    "build_minilm_encoder",
    "build_splade_tiny",
    "build_standin_cross_encoder",
    "provision",
    "provision_splade",
    "register_standin",
]

# A name of its own: this is not ms-marco-MiniLM-L-6-v2, only a model with its interface.
STANDIN_RERANK_MODEL = "local/ms-marco-MiniLM-L-6-v2-untrained-head"
SPARSE_MODEL = pypi_weights.BM25_MODEL
HEAD_STD = 1.0  # spreads the untrained logits over a few units, so rankings are not near-ties
# Bump when the stand-in's bytes change (the real builds follow pypi_weights.BUILD_VERSION).
STANDIN_VERSION = f"{pypi_weights.BUILD_VERSION}.1"


def provision(root: Path | None = None) -> Path:
    """Build the models once and import them into a fastembed cache of their own; return it.

    Later calls reuse the builds. Afterwards ``FastEmbedEmbedding(EMBED_MODEL, cache_dir=...)``,
    ``FastEmbedRerank(STANDIN_RERANK_MODEL, cache_dir=...)`` and
    ``FastEmbedSparseEmbedding(SPARSE_MODEL, cache_dir=...)`` load with no network.

    Args:
        root: Where builds and the cache live; default ``pypi_weights.default_build_dir()``.
    """
    from llama_index_fastembed_rerank.offline import import_model

    root = root or default_build_dir()
    register_standin()
    cache = root / "fastembed"
    import_model(build_minilm_encoder(root / "all-MiniLM-L6-v2"), EMBED_MODEL, cache)
    standin = build_standin_cross_encoder(root / "standin-cross-encoder")
    import_model(standin, STANDIN_RERANK_MODEL, cache)
    import_model(build_bm25(root / "bm25"), SPARSE_MODEL, cache)
    return cache


def provision_splade(root: Path | None = None) -> Path:
    """Build SPLADE-tiny once (``pypi_weights.build_splade_tiny``); return its folder."""
    return build_splade_tiny((root or default_build_dir()) / "splade-tiny")


def register_standin() -> None:
    """Register the stand-in's name with fastembed (once per process, as fastembed requires)."""
    from fastembed.common.model_description import ModelSource
    from fastembed.rerank.cross_encoder import TextCrossEncoder

    known = {m["model"] for m in TextCrossEncoder.list_supported_models()}
    if STANDIN_RERANK_MODEL not in known:
        TextCrossEncoder.add_custom_model(
            model=STANDIN_RERANK_MODEL,
            sources=ModelSource(hf=STANDIN_RERANK_MODEL),
            model_file="onnx/model.onnx",
            description="all-MiniLM-L6-v2 with an untrained one-logit head (tests only)",
            license="apache-2.0",
            size_in_gb=0.09,
        )


def build_standin_cross_encoder(dest: Path, seed: int = 0) -> Path:
    """Build a cross-encoder with the interface of ``Xenova/ms-marco-MiniLM-L-6-v2``.

    The encoder is all-MiniLM-L6-v2 followed, as in ``BertForSequenceClassification`` with one
    label, by the BERT pooler (dense + tanh on the [CLS] vector) and a linear layer to a single
    logit. The pooler comes from the checkpoint (seeded if absent); the final layer is drawn from
    ``numpy.random.default_rng(seed)``, so it is untrained and the scores are not relevance.

    Writes ``dest/onnx/model.onnx`` (float32 ``logits`` [batch, 1] out), the tokenizer files
    and a ``config.json`` that describes the classifier and flags the stand-in.

    Args:
        dest: Directory to create. A complete build of this version there is reused, whatever
            seed it was built with.
        seed: Seed for the untrained head.

    Returns:
        ``dest``, usable as ``specific_model_path`` for ``STANDIN_RERANK_MODEL``.
    """

    def fill(tmp: Path) -> None:
        weights, config, files = minilm_checkpoint(dest.parent / "wheels")
        size = config["hidden_size"]
        rng = np.random.default_rng(seed)
        if "pooler.dense.weight" not in weights:  # sentence-transformers exports may drop it
            weights["pooler.dense.weight"] = rng.normal(0, 0.02, (size, size)).astype(np.float32)
            weights["pooler.dense.bias"] = np.zeros(size, np.float32)
        weights["classifier.weight"] = rng.normal(0, HEAD_STD, (1, size)).astype(np.float32)
        weights["classifier.bias"] = rng.normal(0, HEAD_STD, (1,)).astype(np.float32)

        graph = bert_onnx.Graph()
        hidden = bert_onnx.encoder(graph, weights, config)
        # The pooler reads the [CLS] token, always first; a scalar index drops the sequence axis.
        cls = graph.op("Gather", hidden, graph.const(np.array(0, np.int64)), axis=1)
        pooled = graph.op("Tanh", bert_onnx.linear(graph, weights, cls, "pooler.dense"))
        bert_onnx.linear(graph, weights, pooled, "classifier", out="logits")
        (tmp / "onnx").mkdir()
        bert_onnx.save(graph, "logits", ["batch", 1], tmp / "onnx")

        for name, data in files.items():
            (tmp / name).write_bytes(data)
        config = {
            **config,
            "architectures": ["BertForSequenceClassification"],
            "id2label": {"0": "LABEL_0"},  # one label, serialized the way transformers does
            "label2id": {"LABEL_0": 0},
            "_standin": f"untrained head (seed {seed}): scores are not relevance",
        }
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    files = tuple(n for n in TOKENIZER_FILES if n != "preprocessor_config.json")
    return build_once(Path(dest), ("onnx/model.onnx", *files), fill, STANDIN_VERSION)
