"""FastEmbedSparseEmbedding: unit tests on a fake engine, then real BM25 offline."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from llama_index.core.instrumentation.events.embedding import (
    SparseEmbeddingEndEvent,
    SparseEmbeddingStartEvent,
)
from pydantic import ValidationError

import offline_models
from conftest import PYDANTIC_ROUND_TRIPS
from llama_index_fastembed_rerank import FastEmbedSparseEmbedding

MOVIES = json.loads((Path(__file__).parents[1] / "examples" / "data" / "movies.json").read_text())

NON_DEFAULTS = {
    "model_name": "prithivida/Splade_PP_en_v1",
    "batch_size": 4,
    "max_batch_tokens": 100,
    "parallel": 2,
    "embed_batch_size": 100,
    "num_workers": 3,
    "cache_dir": "/models",
    "threads": 3,
    "providers": ["CPUExecutionProvider"],
    "cuda": False,
    "device_ids": [1],
    "local_files_only": True,
    "specific_model_path": "/models/splade",
    "model_kwargs": {"enable_cpu_mem_arena": False},
    "quantize": "int8",
}


def test_sparse_defaults_to_bm25_which_needs_idf():
    sparse = FastEmbedSparseEmbedding()
    assert sparse.model_name == "Qdrant/bm25"
    assert sparse.requires_idf is True
    assert FastEmbedSparseEmbedding("prithivida/Splade_PP_en_v1").requires_idf is False
    assert sparse.class_name() == "FastEmbedSparseEmbedding"


def test_sparse_construction_and_serialization_never_load(fake_sparse):
    sparse = FastEmbedSparseEmbedding(**NON_DEFAULTS)
    sparse.model_dump_json()
    assert fake_sparse.instances == []


@PYDANTIC_ROUND_TRIPS
def test_sparse_round_trip_keeps_every_option(round_trip):
    assert set(FastEmbedSparseEmbedding.model_fields) == set(NON_DEFAULTS)
    again = round_trip(FastEmbedSparseEmbedding(**NON_DEFAULTS))
    assert isinstance(again, FastEmbedSparseEmbedding)
    for name, value in NON_DEFAULTS.items():
        assert json.dumps(getattr(again, name)) == json.dumps(value), name


def test_sparse_warm_up_forwards_engine_options(fake_sparse):
    FastEmbedSparseEmbedding(
        "Qdrant/bm25",
        cache_dir="/models",
        threads=2,
        local_files_only=True,
        model_kwargs={"k": 1.5, "avg_len": 100.0},
    ).warm_up()
    (engine,) = fake_sparse.instances
    assert engine.model_name == "Qdrant/bm25"
    assert engine.kwargs["cache_dir"] == "/models"
    assert engine.kwargs["threads"] == 2
    assert engine.kwargs["local_files_only"] is True
    assert engine.kwargs["k"] == 1.5
    assert engine.kwargs["avg_len"] == 100.0


def test_sparse_queries_use_query_embed_and_documents_passage_embed(fake_sparse):
    sparse = FastEmbedSparseEmbedding(batch_size=7, parallel=0)
    assert sparse.get_query_embedding("aa b aa") == {2: 1.0, 1: 1.0}
    assert sparse.get_text_embedding("aa b aa") == {2: 2.0, 1: 1.0}
    (engine,) = fake_sparse.instances
    assert [name for name, _, _ in engine.calls] == ["query_embed", "passage_embed"]
    assert engine.calls[1][2] == {"batch_size": 7, "parallel": 0}


def test_sparse_documents_run_in_length_order_and_come_back_in_input_order(fake_sparse):
    sparse = FastEmbedSparseEmbedding()
    texts = ["ccc ccc ccc", "a", "bb bb"]
    vectors = sparse.get_text_embedding_batch(texts)
    (engine,) = fake_sparse.instances
    assert engine.calls == [("passage_embed", ["a", "bb bb", "ccc ccc ccc"], engine.calls[0][2])]
    assert vectors == [{3: 3.0}, {1: 1.0}, {2: 2.0}]


def test_sparse_vectors_are_python_ints_and_floats(fake_sparse):
    vector = FastEmbedSparseEmbedding().get_query_embedding("a bb")
    assert all(type(i) is int and type(v) is float for i, v in vector.items())


def test_sparse_doc_fn_and_query_fn_have_the_stores_shape(fake_sparse):
    sparse = FastEmbedSparseEmbedding()
    assert sparse.doc_fn(["aa b aa", "ccc"]) == ([[2, 1], [3]], [[2.0, 1.0], [1.0]])
    assert sparse.query_fn(["aa b aa"]) == ([[2, 1]], [[1.0, 1.0]])
    calls = [name for name, _, _ in fake_sparse.instances[0].calls]
    assert calls == ["passage_embed", "query_embed"]


def test_sparse_doc_fn_emits_llamaindex_events(fake_sparse, events):
    FastEmbedSparseEmbedding().doc_fn(["a", "b"])
    kinds = [type(e) for e in events]
    assert kinds == [SparseEmbeddingStartEvent, SparseEmbeddingEndEvent]


def test_sparse_async_equals_sync(fake_sparse):
    sparse = FastEmbedSparseEmbedding()

    async def main():
        return (
            await sparse.aget_query_embedding("aa b"),
            await sparse.aget_text_embedding_batch(["ccc", "a a"]),
        )

    query, documents = asyncio.run(main())
    assert query == sparse.get_query_embedding("aa b")
    assert documents == sparse.get_text_embedding_batch(["ccc", "a a"])


def test_sparse_instances_share_one_model(fake_sparse):
    for _ in range(3):
        FastEmbedSparseEmbedding().warm_up()
    assert len(fake_sparse.instances) == 1


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model_name": "Qdrant/bm26"}, "Did you mean 'Qdrant/bm25'"),
        ({"batch_size": 0}, "greater than or equal to 1"),
        ({"parallel": -1}, "greater than or equal to 0"),
        ({"batch_sise": 8}, "Extra inputs are not permitted"),
        ({"model_kwargs": {"threads": 2}}, "pass threads=... directly"),
    ],
    ids=["unknown-model", "batch-size", "parallel", "misspelt", "duplicate-option"],
)
def test_sparse_rejects_bad_options(options, message):
    with pytest.raises(ValidationError, match=message):
        FastEmbedSparseEmbedding(**options)


def test_sparse_bm25_folder_without_stopwords_is_refused(tmp_path):
    with pytest.raises(ValidationError, match=r"no stopword list at .*english\.txt"):
        FastEmbedSparseEmbedding(specific_model_path=str(tmp_path))
    # German needs german.txt; inline stopwords need no file.
    (tmp_path / "english.txt").write_text("the\n")
    with pytest.raises(ValidationError, match=r"german\.txt"):
        FastEmbedSparseEmbedding(
            specific_model_path=str(tmp_path), model_kwargs={"language": "german"}
        )
    FastEmbedSparseEmbedding(specific_model_path=str(tmp_path), model_kwargs={"stopwords": {"a"}})


# --- real BM25, offline ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def bm25(offline_cache):
    return FastEmbedSparseEmbedding(
        offline_models.SPARSE_MODEL, cache_dir=str(offline_cache), local_files_only=True
    )


def _as_dict(vector):
    return dict(zip(vector.indices.tolist(), vector.values.tolist(), strict=True))


def test_real_sparse_query_vectors_equal_fastembeds_query_embed(bm25, real_sparse_embedding):
    queries = [MOVIES["query"], "Joan of Arc heresy trial", "story story story", "the of and"]
    for query in queries:
        expected = _as_dict(next(iter(real_sparse_embedding.query_embed(query))))
        assert bm25.get_query_embedding(query) == expected, query
    # BM25's query weights are 1 per distinct term; its document weights are not.
    assert set(bm25.get_query_embedding("story story story").values()) == {1.0}
    assert bm25.get_text_embedding("story story story") != bm25.get_query_embedding(
        "story story story"
    )


def test_real_sparse_document_vectors_equal_fastembeds_embed(bm25, real_sparse_embedding):
    texts = [*MOVIES["descriptions"], "", "the of and"]
    expected = [_as_dict(v) for v in real_sparse_embedding.embed(texts)]
    assert bm25.get_text_embedding_batch(texts) == expected
    indices, values = bm25.doc_fn(texts)
    assert [dict(zip(i, v, strict=True)) for i, v in zip(indices, values, strict=True)] == expected


def test_real_sparse_loads_from_a_stopword_folder(offline_cache, real_sparse_embedding):
    folder = offline_models.build_bm25(offline_cache.parent / "bm25")
    sparse = FastEmbedSparseEmbedding(specific_model_path=str(folder))
    text = MOVIES["descriptions"][0]
    assert sparse.get_text_embedding(text) == _as_dict(
        next(iter(real_sparse_embedding.embed([text])))
    )


def test_offline_builds_are_reused_remade_when_older_and_never_replace_foreign_files(tmp_path):
    folder = offline_models.build_bm25(tmp_path / "bm25")
    stopwords = (folder / "english.txt").read_text()
    assert {"the", "of", "and"} <= set(stopwords.split())
    (folder / "english.txt").write_text("kept\n")  # a build of this version is reused as is
    assert (offline_models.build_bm25(folder) / "english.txt").read_text() == "kept\n"
    (folder / ".build-version").write_text("1")  # an older build is made again
    assert (offline_models.build_bm25(folder) / "english.txt").read_text() == stopwords
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bm25"]  # no staging left behind
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a build")
    with pytest.raises(FileExistsError, match="not a complete build; remove it first"):
        offline_models.build_bm25(foreign)
    assert (foreign / "notes.txt").read_text() == "not a build"


# --- a trained neural sparse model: SPLADE-tiny, offline --------------------------------------


def _close(ours, theirs, atol=1e-5):
    """Sparse vectors equal up to float noise (a padded batch changes the last digits)."""
    keys = set(ours) | set(theirs)
    return max((abs(ours.get(k, 0.0) - theirs.get(k, 0.0)) for k in keys), default=0.0) < atol


@pytest.mark.parametrize(
    ("batch_size", "max_batch_tokens"),
    [(1, None), (4, None), (64, None), (64, 64), (64, 512)],
    ids=["one", "four", "sixty-four", "64-tokens", "default-budget"],
)
def test_real_splade_documents_equal_fastembeds_embed_in_any_batching(
    splade_model_dir, real_splade_embedding, batch_size, max_batch_tokens
):
    sparse = FastEmbedSparseEmbedding(
        offline_models.SPLADE_MODEL,
        specific_model_path=str(splade_model_dir),
        batch_size=batch_size,
        max_batch_tokens=max_batch_tokens,
    )
    texts = [*MOVIES["descriptions"], "Paris.", ""]
    expected = [_as_dict(v) for v in real_splade_embedding.embed(texts, batch_size=1)]
    ours = sparse.get_text_embedding_batch(texts)
    assert all(_close(o, e) for o, e in zip(ours, expected, strict=True))
    assert sum(len(v) for v in ours) > 10 * len(texts)  # expanded, not near-empty


def test_real_splade_queries_equal_fastembeds_query_embed(splade_model_dir, real_splade_embedding):
    sparse = FastEmbedSparseEmbedding(
        offline_models.SPLADE_MODEL, specific_model_path=str(splade_model_dir)
    )
    assert sparse.requires_idf is False
    for query in (MOVIES["query"], "capital of France"):
        expected = _as_dict(next(iter(real_splade_embedding.query_embed(query))))
        assert _close(sparse.get_query_embedding(query), expected)
