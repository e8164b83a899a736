"""Bad values and wrong types at the API of every public class and function: each gets a clear
error that names the argument, or is accepted as LlamaIndex users pass it.

Load-time faults (broken files, unusable caches) are in test_broken_files.py.
"""

from __future__ import annotations

import asyncio
import math

import numpy as np
import pytest
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.schema import ImageNode, MetadataMode, NodeWithScore, QueryBundle, TextNode
from llama_index.core.vector_stores.types import VectorStoreQueryResult
from pydantic import ValidationError
from qdrant_client import QdrantClient

import offline_models
from conftest import make_nodes
from llama_index_fastembed_rerank import (
    FastEmbedEmbedding,
    FastEmbedRerank,
    FastEmbedSparseEmbedding,
    distribution_based_score_fusion,
    qdrant_hybrid_store,
    reciprocal_rank_fusion,
)

QUERY = "what is it"
CLASSES = pytest.mark.parametrize(
    "cls",
    [FastEmbedRerank, FastEmbedEmbedding, FastEmbedSparseEmbedding],
    ids=["rerank", "embedding", "sparse"],
)
FUSIONS = pytest.mark.parametrize(
    "fuse", [reciprocal_rank_fusion, distribution_based_score_fusion], ids=["rrf", "dbsf"]
)


def texts_of(nodes: list[NodeWithScore]) -> list[str]:
    return [n.node.get_content() for n in nodes]


# --- values that validation used to let through -----------------------------------------------


def test_rerank_refuses_a_nan_threshold():
    with pytest.raises(ValidationError, match="score_threshold must be a number or None, got nan"):
        FastEmbedRerank(score_threshold=float("nan"))
    reranker = FastEmbedRerank(score_threshold=0.5)
    with pytest.raises(ValidationError, match="every node would be dropped"):
        reranker.score_threshold = math.nan
    assert reranker.score_threshold == 0.5
    # Infinities compare as numbers do: -inf keeps every node, inf none.
    assert FastEmbedRerank(score_threshold=-math.inf).score_threshold == -math.inf


@pytest.mark.parametrize(
    ("cls", "field", "value"),
    [
        (FastEmbedRerank, "top_n", True),
        (FastEmbedRerank, "batch_size", True),
        (FastEmbedRerank, "max_batch_tokens", True),
        (FastEmbedRerank, "score_threshold", False),
        (FastEmbedRerank, "threads", True),
        (FastEmbedRerank, "device_ids", [True]),
        (FastEmbedEmbedding, "batch_size", True),
        (FastEmbedEmbedding, "parallel", False),
        (FastEmbedEmbedding, "embed_batch_size", True),
        (FastEmbedSparseEmbedding, "batch_size", True),
        (FastEmbedSparseEmbedding, "parallel", True),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else str(v),
)
def test_booleans_are_refused_where_numbers_are_meant(cls, field, value):
    with pytest.raises(ValidationError, match=rf"{field} takes numbers, not booleans: got"):
        cls(**{field: value})
    instance = cls()
    default = getattr(instance, field)
    with pytest.raises(ValidationError, match=f"{field} takes numbers"):
        setattr(instance, field, value)
    assert getattr(instance, field) == default


@pytest.mark.parametrize(
    ("cls", "kwargs", "message"),
    [
        (
            FastEmbedRerank,
            {"enable_cpu_mem_arenaa": False},
            r"not an option of fastembed's OnnxTextCrossEncoder.*"
            r"Did you mean 'enable_cpu_mem_arena'\?",
        ),
        (FastEmbedEmbedding, {"mmap": True}, r"'mmap'\] is not an option of .*OnnxTextEmbedding"),
        (FastEmbedSparseEmbedding, {"kk": 1.5}, r"Bm25.*ignore it\. Did you mean 'k'\?"),
    ],
    ids=["rerank", "embedding", "sparse"],
)
def test_unknown_model_kwargs_are_refused(cls, kwargs, message):
    with pytest.raises(ValidationError, match=message):
        cls(model_kwargs=kwargs)
    instance = cls()
    with pytest.raises(ValidationError, match="fastembed would silently ignore it"):
        instance.model_kwargs = kwargs
    assert instance.model_kwargs == {}


@pytest.mark.parametrize(
    ("cls", "options"),
    [
        (FastEmbedRerank, {"model_kwargs": {"enable_cpu_mem_arena": False}}),
        (FastEmbedEmbedding, {"model_kwargs": {"enable_cpu_mem_arena": False}}),
        (
            FastEmbedEmbedding,
            {"model_name": "minishlab/potion-base-8M", "model_kwargs": {"mmap": True}},
        ),
        (FastEmbedSparseEmbedding, {"model_kwargs": {"k": 1.5, "b": 0.7, "language": "german"}}),
    ],
    ids=["rerank", "embedding", "static-embedding", "bm25"],
)
def test_model_kwargs_fastembed_takes_are_accepted(cls, options):
    assert cls(**options).model_kwargs == options["model_kwargs"]


def test_unknown_model_kwargs_are_refused_after_the_model_changes():
    embed = FastEmbedEmbedding("minishlab/potion-base-8M", model_kwargs={"mmap": True})
    with pytest.raises(ValidationError, match=r"'mmap'\] is not an option"):
        embed.model_name = "BAAI/bge-small-en-v1.5"


@CLASSES
def test_provider_options_are_masked_in_repr_and_str_only(cls):
    providers = [("CUDAExecutionProvider", {"user_compute_stream": "s3cret"}), "CPU"]
    instance = cls(providers=providers)
    for shown in (repr(instance), str(instance)):
        assert "s3cret" not in shown
        assert "('CUDAExecutionProvider', {'user_compute_stream': '***'}), 'CPU'" in shown
    assert instance.providers == providers  # the option itself, and its serialization, keep it
    assert "s3cret" in instance.model_dump_json()
    assert cls.model_validate_json(instance.model_dump_json()).providers == providers


@CLASSES
def test_model_validate_takes_model_dump_back(cls):
    instance = cls(threads=2)
    assert cls.model_validate(instance.model_dump()).model_dump() == instance.model_dump()
    with pytest.raises(ValidationError, match="does not describe a"):
        cls.model_validate({**instance.model_dump(), "class_name": "SomethingElse"})


@pytest.mark.parametrize("query", ["", "   "], ids=["empty", "blank"])
def test_rerank_score_refuses_an_empty_query_as_postprocess_nodes_does(fake_encoder, query):
    reranker = FastEmbedRerank()
    with pytest.raises(ValueError, match=r"needs a non-empty query.*call score\(query, texts\)"):
        reranker.score(query, ["a text"])
    with pytest.raises(ValueError, match="needs a non-empty query"):
        reranker.postprocess_nodes(make_nodes(["a text"]), query_str=query)
    assert fake_encoder.instances == []  # refused before the model loads


# --- wrong types at the API ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ("abc", r"texts must be a list of str, got str 'abc'"),
        (["a", 1], r"texts\[1\] is int 1"),
        (["a", None], r"texts\[1\] is None"),
        (None, "got None"),
        (b"abc", "got bytes"),
    ],
    ids=["string", "int-item", "none-item", "none", "bytes"],
)
def test_rerank_score_refuses_what_is_not_a_list_of_texts(fake_encoder, texts, message):
    with pytest.raises(TypeError, match=message):
        FastEmbedRerank().score(QUERY, texts)


def test_rerank_score_takes_any_iterable_of_texts(fake_encoder):
    fake_encoder.scores = {"a": 1.0, "b": 2.0}
    reranker = FastEmbedRerank()
    assert reranker.score(QUERY, (t for t in "ab")) == [1.0, 2.0]
    assert reranker.score(QUERY, ("a", "b")) == [1.0, 2.0]


@pytest.mark.parametrize("query", [5, None, b"q", ["q"]], ids=["int", "none", "bytes", "list"])
def test_rerank_score_refuses_a_query_that_is_not_a_string(fake_encoder, query):
    error = ValueError if query is None else TypeError
    with pytest.raises(error, match=r"query"):
        FastEmbedRerank().score(query, ["a"])


@pytest.mark.parametrize("top_n", [None, 2], ids=["all", "top-2"])
def test_rerank_takes_nodes_as_any_iterable(fake_encoder, events, top_n):
    fake_encoder.scores = {"a": 1.0, "b": 3.0, "c": 2.0}
    reranker = FastEmbedRerank(top_n=top_n)
    expected = texts_of(reranker.postprocess_nodes(make_nodes("abc"), query_str=QUERY))
    assert expected == ["b", "c", "a"][:top_n]
    for nodes in (
        iter(make_nodes("abc")),
        tuple(make_nodes("abc")),
        (n for n in make_nodes("abc")),
    ):
        assert texts_of(reranker.postprocess_nodes(nodes, query_str=QUERY)) == expected
    starts = [e for e in events if isinstance(e, ReRankStartEvent)]
    assert all(len(e.nodes) == 3 for e in starts)  # the event saw every node, too


async def _apostprocess(reranker, nodes, **kwargs):
    return await reranker.apostprocess_nodes(nodes, **kwargs)


def test_rerank_async_takes_a_generator_too(fake_encoder):
    fake_encoder.scores = {"a": 1.0, "b": 3.0}
    out = asyncio.run(
        _apostprocess(FastEmbedRerank(), (n for n in make_nodes("ab")), query_str=QUERY)
    )
    assert texts_of(out) == ["b", "a"]


@pytest.mark.parametrize(
    ("nodes", "message"),
    [
        ("abc", "got str 'abc'"),
        (None, "got None"),
        ([TextNode(text="a")], r"nodes\[0\] is a TextNode: wrap each node as NodeWithScore"),
        (make_nodes("a")[0], "got a NodeWithScore"),
        ({"a": make_nodes("a")[0]}, "got dict"),
        ([*make_nodes("a"), "b"], r"nodes\[1\] is str 'b'"),
    ],
    ids=["string", "none", "text-nodes", "one-node", "dict", "mixed"],
)
def test_rerank_refuses_nodes_that_are_not_nodes_with_scores(fake_encoder, events, nodes, message):
    with pytest.raises(TypeError, match=rf"nodes must be a list of NodeWithScore.*{message}"):
        FastEmbedRerank().postprocess_nodes(nodes, query_str=QUERY)
    assert not [e for e in events if isinstance(e, ReRankStartEvent | ReRankEndEvent)]


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"query_str": 5}, TypeError, "the query must be a str, got int 5"),
        ({"query_bundle": QueryBundle(query_str=["q"])}, TypeError, "got list"),
        ({"query_bundle": 5}, TypeError, r"query_bundle must be a QueryBundle, got int 5"),
    ],
    ids=["query-str-int", "bundle-of-list", "bundle-int"],
)
def test_rerank_refuses_a_query_that_is_not_text(fake_encoder, kwargs, error, message):
    with pytest.raises(error, match=message):
        FastEmbedRerank().postprocess_nodes(make_nodes("ab"), **kwargs)


def test_rerank_takes_the_query_as_a_string_in_query_bundles_place(fake_encoder):
    fake_encoder.scores = {"a": 1.0, "b": 3.0}
    reranker = FastEmbedRerank()
    assert texts_of(reranker.postprocess_nodes(make_nodes("ab"), QUERY)) == ["b", "a"]


@pytest.mark.parametrize(
    "cls", [FastEmbedEmbedding, FastEmbedSparseEmbedding], ids=["dense", "sparse"]
)
@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda e: e.get_text_embedding_batch("abc"), "texts must be a list of str, got str 'abc'"),
        (lambda e: e.get_text_embedding_batch(["a", 5]), r"texts\[1\] is int 5"),
        (lambda e: asyncio.run(e.aget_text_embedding_batch("abc")), "got str 'abc'"),
        (lambda e: e.get_query_embedding(5), "query must be a str, got int 5"),
        (lambda e: asyncio.run(e.aget_query_embedding(None)), "query must be a str, got None"),
        (lambda e: e.get_text_embedding(None), "text must be a str, got None"),
    ],
    ids=[
        "batch-string",
        "batch-int-item",
        "async-batch-string",
        "query-int",
        "async-query-none",
        "text-none",
    ],
)
def test_embeddings_refuse_what_is_not_text(fake_embedding, fake_sparse, cls, call, message):
    with pytest.raises(TypeError, match=message):
        call(cls())
    assert fake_embedding.instances == fake_sparse.instances == []


@pytest.mark.parametrize(
    "cls", [FastEmbedEmbedding, FastEmbedSparseEmbedding], ids=["dense", "sparse"]
)
def test_embeddings_take_documents_as_any_iterable(fake_embedding, fake_sparse, cls):
    embed = cls()
    expected = embed.get_text_embedding_batch(["a b", "ccc"])
    assert embed.get_text_embedding_batch(t for t in ["a b", "ccc"]) == expected
    assert embed.get_text_embedding_batch(("a b", "ccc")) == expected


@pytest.mark.parametrize("fn", ["doc_fn", "query_fn"])
def test_sparse_store_functions_refuse_a_single_string(fake_sparse, fn):
    with pytest.raises(TypeError, match="texts must be a list of str, got str 'abc'"):
        getattr(FastEmbedSparseEmbedding(), fn)("abc")


# --- nodes without text -------------------------------------------------------------------------


def test_rerank_leaves_nodes_without_text_unscored_and_last(fake_encoder):
    fake_encoder.scores = {"b": -3.0, "d": 2.0}
    nodes = [
        NodeWithScore(node=ImageNode(image="aGVsbG8=", id_="image"), score=0.9),
        *make_nodes(["b", "", "d", "   \n"], scores=[0.8, 0.7, 0.6, 0.5]),
    ]
    out = FastEmbedRerank(top_n=None).postprocess_nodes(nodes, query_str=QUERY)
    assert [n.node.node_id for n in out] == ["node-2", "node-0", "image", "node-1", "node-3"]
    assert [n.score for n in out] == [2.0, -3.0, None, None, None]
    scored = [d for call in fake_encoder.instances[0].calls for d in call[1]]
    assert sorted(scored) == ["b", "d"]  # the model never saw an empty text


def test_rerank_scores_an_image_node_by_its_metadata_text(fake_encoder):
    image = ImageNode(image="aGVsbG8=", metadata={"caption": "a cat on a mat"})
    out = FastEmbedRerank().postprocess_nodes([NodeWithScore(node=image)], query_str=QUERY)
    (call,) = fake_encoder.instances[0].calls
    assert call[1] == [image.get_content(metadata_mode=MetadataMode.EMBED)]
    assert out[0].score == 6.0  # the fake's score: the words of "caption: a cat on a mat"


def test_rerank_nodes_without_text_count_in_top_n_and_fail_any_threshold(fake_encoder):
    fake_encoder.scores = {"a": -5.0}
    nodes = make_nodes(["", "a", ""])
    assert texts_of(FastEmbedRerank(top_n=2).postprocess_nodes(nodes, query_str=QUERY)) == ["a", ""]
    thresholded = FastEmbedRerank(top_n=None, score_threshold=-math.inf)
    assert texts_of(thresholded.postprocess_nodes(nodes, query_str=QUERY)) == ["a"]


def test_rerank_of_only_nodes_without_text_does_not_load_the_model(fake_encoder):
    nodes = make_nodes(["", " "], scores=[0.3, 0.2])
    out = FastEmbedRerank(top_n=None, keep_retrieval_score=True).postprocess_nodes(
        nodes, query_str=QUERY
    )
    assert [(n.score, n.node.metadata) for n in out] == [
        (None, {"retrieval_score": 0.3}),
        (None, {"retrieval_score": 0.2}),
    ]
    assert fake_encoder.instances == []


# --- fusion ---------------------------------------------------------------------------------


def result(*points: tuple[str, object]) -> VectorStoreQueryResult:
    return VectorStoreQueryResult(
        nodes=[TextNode(text=i, id_=i) for i, _ in points],
        similarities=[s for _, s in points],
        ids=[i for i, _ in points],
    )


@FUSIONS
@pytest.mark.parametrize("side", ["dense", "sparse"])
@pytest.mark.parametrize("bad", [None, [], "result"], ids=["none", "list", "string"])
def test_fusion_refuses_what_is_not_a_query_result(fuse, side, bad):
    sides = {"dense_result": result(("a", 1.0)), "sparse_result": result(("a", 1.0))}
    sides[f"{side}_result"] = bad
    with pytest.raises(TypeError, match=rf"^{side}_result must be a VectorStoreQueryResult"):
        fuse(**sides)


@FUSIONS
@pytest.mark.parametrize("similarity", [math.inf, -math.inf, math.nan, None, "0.5", True], ids=repr)
def test_fusion_refuses_similarities_that_are_not_finite_numbers(fuse, similarity):
    with pytest.raises(ValueError, match=r"the sparse result's similarity 1 is .*must be finite"):
        fuse(result(("a", 0.5)), result(("b", 2.0), ("c", similarity)))


@FUSIONS
def test_fusion_refuses_an_id_listed_twice_on_one_side(fuse):
    with pytest.raises(ValueError, match="the dense result lists id 'a' twice"):
        fuse(result(("a", 0.9), ("b", 0.8), ("a", 0.7)), result())


@FUSIONS
def test_fusion_takes_numpy_numbers(fuse):
    dense, sparse = result(("a", np.float32(0.9)), ("b", 0.2)), result(("b", np.float64(3.0)))
    fused = fuse(dense, sparse, alpha=np.float32(0.25), top_k=np.int64(2))
    assert fused == fuse(result(("a", 0.9), ("b", 0.2)), result(("b", 3.0)), alpha=0.25, top_k=2)
    assert all(type(s) is float for s in fused.similarities)


def test_rrf_takes_a_numpy_k():
    assert reciprocal_rank_fusion(result(("a", 1.0)), result(), k=np.int64(60)).similarities == [
        1 / 60
    ]


# --- qdrant_hybrid_store --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        (
            {"sparse_model": "Qdrant/bm25"},
            TypeError,
            r"sparse_model=FastEmbedSparseEmbedding\('Qdrant/bm25'\)",
        ),
        ({"fusion": "rrf"}, TypeError, "fusion must be a function such as reciprocal_rank_fusion"),
        ({"api_key": "secret"}, ValueError, "api_key is used only with url="),
        (
            {"client": "http://localhost:6333"},
            TypeError,
            r"client must be QdrantClient\(\.\.\.\), got str",
        ),
        (
            {"aclient": QdrantClient(":memory:")},
            TypeError,
            r"aclient must be AsyncQdrantClient\(\.\.\.\), got a QdrantClient",
        ),
        ({"enable_hybrid": False}, ValueError, "always builds a hybrid store"),
        ({"sparse_doc_fn": len}, ValueError, "sparse_doc_fn is set by qdrant_hybrid_store"),
        ({"hybrid_fusion_fn": len}, ValueError, "pass fusion= instead"),
        ({"fastembed_sparse_model": "Qdrant/bm25"}, ValueError, "pass sparse_model="),
    ],
    ids=[
        "sparse-model-name",
        "fusion-name",
        "api-key-without-url",
        "client-url-string",
        "sync-client-as-aclient",
        "enable-hybrid",
        "sparse-doc-fn",
        "hybrid-fusion-fn",
        "fastembed-sparse-model",
    ],
)
def test_hybrid_store_refuses_arguments_it_would_fail_on_or_ignore(kwargs, error, message):
    arguments = {"client": QdrantClient(":memory:"), **kwargs}
    with pytest.raises(error, match=message):
        qdrant_hybrid_store("c", **arguments)


def test_sparse_refused_stopword_folder_leaves_the_instance_as_it_was(tmp_path):
    sparse = FastEmbedSparseEmbedding()
    with pytest.raises(ValidationError, match="no stopword list"):
        sparse.specific_model_path = str(tmp_path)
    assert sparse.specific_model_path is None


# --- texts longer than the model's window -----------------------------------------------------

LONG = " ".join(["a long document about the history of the French capital"] * 60)


@pytest.fixture(scope="module")
def embedder(offline_cache):
    return FastEmbedEmbedding(
        offline_models.EMBED_MODEL, cache_dir=str(offline_cache), local_files_only=True
    )


def test_real_embedding_warns_how_many_texts_were_truncated(embedder):
    with pytest.warns(
        UserWarning, match=r"^1 of 3 texts were longer than the 256-token window"
    ) as w:
        embedder.get_text_embedding_batch(["short", LONG, "also short"])
    assert offline_models.EMBED_MODEL in str(w[0].message)
    assert w[0].filename == __file__  # points at the caller, not at the package
    with pytest.warns(UserWarning, match=r"^1 of 1 texts were longer"):
        embedder.get_query_embedding(LONG)


def test_real_embedding_says_nothing_of_texts_that_fit(embedder, recwarn):
    embedder.get_text_embedding_batch(["short", "a little longer text", ""])
    embedder.get_query_embedding("a query")
    assert not [w for w in recwarn if "window" in str(w.message)]


def test_real_sparse_warns_for_splade_and_not_for_bm25(splade_model_dir, offline_cache, recwarn):
    splade = FastEmbedSparseEmbedding(
        offline_models.SPLADE_MODEL, specific_model_path=str(splade_model_dir)
    )
    with pytest.warns(UserWarning, match=r"^1 of 2 texts were longer than the 512-token window"):
        splade.get_text_embedding_batch([LONG, "short"])
    recwarn.clear()
    bm25 = FastEmbedSparseEmbedding(cache_dir=str(offline_cache), local_files_only=True)
    bm25.get_text_embedding_batch([LONG, "short"])  # BM25 has no window: nothing is cut
    assert not [w for w in recwarn if "window" in str(w.message)]
