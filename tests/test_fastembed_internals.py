"""What _fastembed.py assumes about fastembed's private parts, checked on the installed fastembed.

These tests fail when a fastembed upgrade moves what the package reads behind the public API;
the public-API fallback is checked here too, on a fake and on real weights.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import ClassVar

import numpy as np
import onnx
import pytest
from fastembed import SparseTextEmbedding, TextEmbedding
from fastembed.rerank.cross_encoder import TextCrossEncoder
from onnx import numpy_helper

import offline_models
from conftest import make_nodes
from llama_index_fastembed_rerank import FastEmbedRerank, _fastembed, kept_graph

QUERY = "Which film is about a woman on trial?"
TEXTS = [
    "In 1431, Jeanne d'Arc is placed on trial on charges of heresy.",
    "A story",
    " ".join(["A long description of a film about nothing much at all."] * 8),
    "Two musicians flee the state after they witness a mob hit.",
]


@pytest.fixture
def own_encoder(offline_cache) -> TextCrossEncoder:
    """A TextCrossEncoder of this test's own (the tests swap its session), on one thread."""
    return TextCrossEncoder(
        offline_models.STANDIN_RERANK_MODEL,
        cache_dir=str(offline_cache),
        local_files_only=True,
        threads=1,
    )


def test_tokenizer_is_the_one_fastembed_counts_tokens_with(real_cross_encoder, real_text_embedding):
    pairs = [(QUERY, t) for t in TEXTS]
    tokenizer = _fastembed.tokenizer(real_cross_encoder)
    assert tokenizer is not None
    lengths = [sum(e.attention_mask) for e in tokenizer.encode_batch(pairs)]
    assert lengths == [real_cross_encoder.token_count([p]) for p in pairs]
    # What the reranker relies on: a window to truncate to, padding on the right.
    assert tokenizer.truncation["max_length"] == 512
    assert tokenizer.padding["direction"] == "right"
    embedding_tokenizer = _fastembed.tokenizer(real_text_embedding)
    assert embedding_tokenizer is not None
    counts = [sum(e.attention_mask) for e in embedding_tokenizer.encode_batch(TEXTS)]
    assert counts == [real_text_embedding.token_count(t) for t in TEXTS]


def test_tokenizer_of_sparse_models(real_splade_embedding, real_sparse_embedding):
    tokenizer = _fastembed.tokenizer(real_splade_embedding)
    assert tokenizer is not None
    counts = [sum(e.attention_mask) for e in tokenizer.encode_batch(TEXTS)]
    assert counts == [real_splade_embedding.token_count(t) for t in TEXTS]
    # BM25 splits words itself: no tokenizer, and the sparse class batches by count.
    assert _fastembed.tokenizer(real_sparse_embedding) is None


def test_session_runner_scores_as_rerank_does(real_cross_encoder):
    tokenizer = _fastembed.tokenizer(real_cross_encoder)
    encodings = tokenizer.encode_batch([(QUERY, t) for t in TEXTS])
    lengths = [sum(e.attention_mask) for e in encodings]
    run = _fastembed.session_runner(real_cross_encoder, encodings, lengths)
    assert run is not None
    scores = [0.0] * len(TEXTS)
    for rows in ([1, 3], [0, 2]):  # batches of their own widths
        for row, score in zip(rows, run(rows), strict=True):
            scores[row] = float(score)
    expected = list(real_cross_encoder.rerank(QUERY, TEXTS))
    np.testing.assert_allclose(scores, expected, atol=1e-5, rtol=0)


def test_onnx_inputs_are_what_the_session_scores(real_cross_encoder):
    feed = _fastembed.onnx_inputs(real_cross_encoder, [(QUERY, t) for t in TEXTS])
    assert set(feed) == {"input_ids", "attention_mask", "token_type_ids"}
    logits = _fastembed.session(real_cross_encoder).run(None, feed)[0][:, 0]
    np.testing.assert_allclose(logits, list(real_cross_encoder.rerank(QUERY, TEXTS)), atol=1e-5)


def test_model_files_name_the_file_fastembed_loaded(own_encoder, offline_cache):
    (model_file,) = _fastembed.model_files(own_encoder)
    snapshots = offline_cache / "models--local--ms-marco-MiniLM-L-6-v2-untrained-head" / "snapshots"
    assert model_file.parent.parent.parent == snapshots
    assert model_file.relative_to(model_file.parent.parent).as_posix() == "onnx/model.onnx"
    inputs = {i.name for i in onnx.load(str(model_file), load_external_data=False).graph.input}
    assert inputs == {i.name for i in _fastembed.session(own_encoder).get_inputs()}


def test_load_session_runs_the_given_graph_with_fastembeds_options(own_encoder, tmp_path):
    published = list(own_encoder.rerank(QUERY, TEXTS))
    (model_file,) = _fastembed.model_files(own_encoder)
    model = onnx.load(str(model_file))
    bias = next(t for t in model.graph.initializer if t.name == "classifier.bias")
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 1, bias.name))
    shifted = tmp_path / "shifted.onnx"
    onnx.save(model, str(shifted))

    _fastembed.load_session(own_encoder, shifted)
    # fastembed's public rerank now runs the given graph, with the options it was built with.
    np.testing.assert_allclose(
        list(own_encoder.rerank(QUERY, TEXTS)), np.add(published, 1), atol=1e-5
    )
    assert _fastembed.session(own_encoder).get_session_options().intra_op_num_threads == 1
    assert _fastembed.model_files(own_encoder) == [model_file]  # the description is restored

    _fastembed.drop_session(own_encoder)
    assert _fastembed.session(own_encoder) is None
    # fastembed loads the published graph again on its own when it is needed.
    np.testing.assert_allclose(list(own_encoder.rerank(QUERY, TEXTS)), published, atol=1e-6)


def test_lazy_load_has_files_but_no_session_until_loaded(offline_cache):
    encoder = TextCrossEncoder(
        offline_models.STANDIN_RERANK_MODEL,
        cache_dir=str(offline_cache),
        local_files_only=True,
        lazy_load=True,
    )
    assert _fastembed.session(encoder) is None
    assert _fastembed.tokenizer(encoder) is None
    assert _fastembed.model_files(encoder)[0].is_file()
    _fastembed.load_session(encoder)
    assert _fastembed.session(encoder) is not None
    assert _fastembed.tokenizer(encoder) is not None


def test_missing_model_error_is_recognised(tmp_path):
    offline_models.register_standin()
    with pytest.raises(ValueError) as error:  # noqa: PT011 - the point is which ValueError
        TextCrossEncoder(
            offline_models.STANDIN_RERANK_MODEL, cache_dir=str(tmp_path), local_files_only=True
        )
    assert _fastembed.is_missing_model_error(error.value)
    assert not _fastembed.is_missing_model_error(ValueError("Provider X is not available."))


# --- the public-API fallback ----------------------------------------------------------------


class PublicOnlyCrossEncoder:
    """A cross-encoder with fastembed's public API and none of its private parts."""

    list_supported_models = TextCrossEncoder.list_supported_models
    instances: ClassVar[list[PublicOnlyCrossEncoder]] = []

    def __init__(self, model_name, **kwargs):
        self.model_name = model_name
        self.calls = []
        PublicOnlyCrossEncoder.instances.append(self)

    def rerank(self, query, documents, batch_size=64):
        documents = list(documents)
        self.calls.append((documents, batch_size))
        for d in documents:
            yield float(len(d))


@pytest.fixture
def public_only(monkeypatch, fake_encoder):
    monkeypatch.setattr(PublicOnlyCrossEncoder, "instances", [])
    monkeypatch.setattr(
        "llama_index_fastembed_rerank.rerank.TextCrossEncoder", PublicOnlyCrossEncoder
    )
    return PublicOnlyCrossEncoder


def test_accessors_find_nothing_on_an_engine_without_fastembeds_internals():
    engine = PublicOnlyCrossEncoder("x")
    assert _fastembed.tokenizer(engine) is None
    assert _fastembed.session(engine) is None
    assert _fastembed.model_files(engine) is None
    assert _fastembed.session_runner(engine, [], []) is None


def test_rerank_falls_back_to_fastembeds_public_rerank(public_only, caplog):
    reranker = FastEmbedRerank(top_n=None, batch_size=2)
    with caplog.at_level(logging.INFO, logger=kept_graph.__name__):
        out = reranker.postprocess_nodes(make_nodes(["ccc", "a", "bb"]), query_str=QUERY)
    assert [n.node.get_content() for n in out] == ["ccc", "bb", "a"]
    assert [n.score for n in out] == [3.0, 2.0, 1.0]
    (engine,) = public_only.instances
    assert engine.calls == [(["ccc", "a", "bb"], 2)]  # fastembed's loop, at our batch size
    assert "ONNX graph kept as published" in caplog.text


@pytest.mark.filterwarnings("ignore:.*query-document pairs were longer")
@pytest.mark.parametrize("missing", ["tokenizer", "session"])
def test_real_rerank_without_internals_equals_fastembed(
    standin_reranker, real_cross_encoder, monkeypatch, missing
):
    monkeypatch.setattr(_fastembed, missing, lambda engine: None)
    texts = [*TEXTS, " ".join(TEXTS * 20)]  # one pair past the window
    expected = list(real_cross_encoder.rerank(QUERY, texts))
    np.testing.assert_allclose(standin_reranker.score(QUERY, texts), expected, atol=1e-5)


def test_this_file_is_the_only_one_reading_fastembeds_private_parts():
    package = Path(_fastembed.__file__).parent
    private = (
        "._model_dir",
        "._build_onnx_input",
        "ONNX_OUTPUT_NAMES",
        ".model.tokenizer",
        "_REGISTRY",
        "EXPOSED_SESSION_OPTIONS",
        "_list_supported_models",
    )
    for path in package.glob("*.py"):
        if path.name == "_fastembed.py":
            continue
        text = path.read_text()
        assert not [p for p in private if p in text], path.name


# --- what validation and load errors read -------------------------------------------------------


def test_engine_options_are_the_ones_fastembeds_model_class_takes(offline_cache):
    offline_models.register_standin()
    model_class, options = _fastembed.engine_options(
        TextCrossEncoder, offline_models.STANDIN_RERANK_MODEL
    )
    assert model_class.__name__ == "CustomTextCrossEncoder"
    assert {"enable_cpu_mem_arena", "local_files_only", "specific_model_path"} <= options
    # What it names is what fastembed acts on: the arena option reaches the session.
    encoder = TextCrossEncoder(
        offline_models.STANDIN_RERANK_MODEL,
        cache_dir=str(offline_cache),
        local_files_only=True,
        enable_cpu_mem_arena=False,
    )
    assert _fastembed.session(encoder).get_session_options().enable_cpu_mem_arena is False
    model_class, options = _fastembed.engine_options(SparseTextEmbedding, "Qdrant/bm25")
    assert model_class.__name__ == "Bm25"
    assert {"k", "b", "avg_len", "language", "stopwords", "disable_stemmer"} <= options
    model_class, options = _fastembed.engine_options(TextEmbedding, "minishlab/potion-base-8M")
    assert (model_class.__name__, "mmap" in options) == ("StaticTextEmbedding", True)


def test_engine_options_know_nothing_without_a_registry_or_model():
    assert _fastembed.engine_options(TextCrossEncoder, "no/such-model") is None
    assert (
        _fastembed.engine_options(PublicOnlyCrossEncoder, "Xenova/ms-marco-MiniLM-L-6-v2") is None
    )


def test_output_shape_is_the_output_fastembed_reads(
    real_cross_encoder, real_text_embedding, real_splade_embedding, real_sparse_embedding
):
    assert _fastembed.output_shape(real_cross_encoder) == ["batch", 1]
    assert _fastembed.output_shape(real_text_embedding) == ["batch", "sequence", 384]
    assert _fastembed.output_shape(real_splade_embedding)[-1] == 30522
    assert _fastembed.output_shape(real_sparse_embedding) is None  # BM25 has no ONNX graph
    scores = list(real_cross_encoder.rerank(QUERY, TEXTS[:2]))
    assert np.shape(scores) == (2,)  # one logit per pair, as [batch, 1] says


def test_tokenizer_file_damage_is_what_the_tokenizer_library_says(offline_cache, tmp_path):
    good = offline_cache.parent / "standin-cross-encoder" / "tokenizer.json"
    assert _fastembed.tokenizer_file_damage(good) == ""
    bad = tmp_path / "tokenizer.json"
    bad.write_text('{"version": "1.0"}')
    assert "the tokenizer library cannot read it" in _fastembed.tokenizer_file_damage(bad)
