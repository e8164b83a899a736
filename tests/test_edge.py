"""QdrantEdgeVectorStore on the real qdrant-edge-py, against QdrantVectorStore on embedded Qdrant.

Real all-MiniLM-L6-v2 and BM25 (offline weights), the tutorial's movies, and
``QdrantClient(":memory:")`` as the reference: the edge store must return what
``qdrant_hybrid_store`` returns for the same nodes. Also LlamaIndex's own Qdrant store tests that
need no server (ported below, each named after its original), reopening, SIGKILL during
writes, two processes on one folder, threads, pushing to Qdrant, and the engine's behaviour that
the store relies on.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
import warnings
from pathlib import Path

import numpy as np
import pytest
import qdrant_edge as qe
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.schema import NodeRelationship, RelatedNodeInfo, TextNode
from llama_index.core.vector_stores.types import (
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import QdrantClient

import llama_index_fastembed_rerank
import offline_models
from llama_index_fastembed_rerank import (
    FastEmbedSparseEmbedding,
    QdrantEdgeVectorStore,
    distribution_based_score_fusion,
    push_to_qdrant,
    qdrant_hybrid_store,
    reciprocal_rank_fusion,
)
from llama_index_fastembed_rerank import edge as edge_module
from llama_index_fastembed_rerank.edge import FolderInUseError

MOVIES = json.loads((Path(__file__).parents[1] / "examples" / "data" / "movies.json").read_text())
# Queries whose top 10, dense and sparse, with and without HALF, have no two equal scores:
# each engine orders tied points its own way (Qdrant leaves it undefined), and rank fusion
# would differ.
QUERIES = [
    "Joan of Arc heresy trial",
    "a princess and seven dwarfs",
    "a story about drug abuse",
    "musicians witness a mob hit",
    "the of and",  # stopwords only: the sparse side finds nothing
]
# Two movies tie on BM25 for each of these: sparse results are the same up to the tie's order.
TIED = [MOVIES["query"], "a young boy's story of an assassination"]
HALF = MetadataFilters(filters=[MetadataFilter(key="half", value="second")])
PACKAGE_ROOT = str(Path(llama_index_fastembed_rerank.__file__).parents[1])


def movie_nodes() -> list[TextNode]:
    return [
        TextNode(
            id_=str(uuid.UUID(int=i)),
            text=text,
            metadata={"half": "first" if i < 10 else "second", "rank": i, "score": i / 4},
            relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=f"movie-{i % 5}")},
        )
        for i, text in enumerate(MOVIES["descriptions"])
    ]


@pytest.fixture(scope="module")
def qdrant_index(embed_model, sparse_model):
    client = QdrantClient(":memory:")
    store = qdrant_hybrid_store("movies", client=client, sparse_model=sparse_model)
    yield VectorStoreIndex(
        movie_nodes(),
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed_model,
    )
    client.close()


@pytest.fixture(scope="module")
def edge_index(tmp_path_factory, embed_model, sparse_model):
    store = QdrantEdgeVectorStore(
        tmp_path_factory.mktemp("edge") / "movies", sparse_model=sparse_model
    )
    yield VectorStoreIndex(
        movie_nodes(),
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed_model,
    )
    store.close()


def with_fusion(index, fusion):
    """The same edge collection, through another store object with another fusion."""
    store = index.vector_store
    other = QdrantEdgeVectorStore(store.path, sparse_model=store.sparse_model, fusion=fusion)
    return VectorStoreIndex.from_vector_store(other, embed_model=index._embed_model)


def qdrant_with_fusion(index, fusion, sparse_model):
    store = qdrant_hybrid_store(
        "movies", client=index.vector_store.client, sparse_model=sparse_model, fusion=fusion
    )
    return VectorStoreIndex.from_vector_store(store, embed_model=index._embed_model)


def retrieved(index, query, **kwargs):
    retriever = index.as_retriever(similarity_top_k=10, sparse_top_k=10, **kwargs)
    return [(n.node.node_id, n.score) for n in retriever.retrieve(query)]


def assert_same(ours, theirs):
    """The same ids and scores; points of equal score may come in either order.

    Each engine orders tied points its own way (Qdrant's docs leave it undefined).
    """

    def canonical(results):
        return sorted(results, key=lambda r: (-round(r[1], 5), r[0]))

    ours, theirs = canonical(ours), canonical(theirs)
    assert [i for i, _ in ours] == [i for i, _ in theirs]
    np.testing.assert_allclose([s for _, s in ours], [s for _, s in theirs], rtol=1e-5)


def small_nodes(n, dim=4, seed=0, **metadata):
    rng = np.random.default_rng(seed)
    return [
        TextNode(
            id_=str(uuid.UUID(int=seed * 1_000_000 + i + 1)),
            text=f"text {i}",
            embedding=rng.normal(size=dim).tolist(),
            metadata={k: v(i) for k, v in metadata.items()},
        )
        for i in range(n)
    ]


def run_python(code, *args, timeout=120):
    env = {**os.environ, "PYTHONPATH": PACKAGE_ROOT, "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code), *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )


# --- the same results as qdrant_hybrid_store on embedded Qdrant ---------------------------


@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.parametrize(
    ("mode", "kwargs"),
    [
        ("default", {}),
        ("default", {"vector_store_kwargs": {"search_params": {"exact": True}}}),
        ("sparse", {}),
        ("hybrid", {}),
        ("hybrid", {"alpha": 0.3, "hybrid_top_k": 7}),
        ("hybrid", {"alpha": 0.0}),
        ("default", {"filters": HALF}),
        ("sparse", {"filters": HALF}),
        ("hybrid", {"filters": HALF}),
    ],
    ids=[
        "dense",
        "dense-exact",
        "sparse",
        "hybrid-rrf",
        "weighted-rrf",
        "sparse-weighted",
        "dense-filter",
        "sparse-filter",
        "hybrid-filter",
    ],
)
def test_edge_returns_what_qdrant_hybrid_store_returns(
    edge_index, qdrant_index, query, mode, kwargs
):
    kwargs = {"vector_store_query_mode": mode, **kwargs}
    assert_same(retrieved(edge_index, query, **kwargs), retrieved(qdrant_index, query, **kwargs))


@pytest.mark.parametrize("query", TIED)
def test_edge_sparse_results_are_the_same_up_to_the_order_of_ties(edge_index, qdrant_index, query):
    ours = retrieved(edge_index, query, vector_store_query_mode="sparse")
    theirs = retrieved(qdrant_index, query, vector_store_query_mode="sparse")
    scores = [round(s, 5) for _, s in theirs]
    assert len(set(scores)) < len(scores)  # the tie this test is about
    assert_same(ours, theirs)


def test_edge_test_queries_have_no_ties(qdrant_index):
    # The precondition of the exact comparisons above.
    for query in QUERIES:
        for filters in (None, HALF):
            for mode in ("default", "sparse"):
                scores = [
                    round(s, 5)
                    for _, s in retrieved(
                        qdrant_index, query, vector_store_query_mode=mode, filters=filters
                    )
                ]
                assert len(set(scores)) == len(scores), (query, mode, filters)


@pytest.mark.parametrize(
    "fusion",
    [
        distribution_based_score_fusion,
        functools.partial(reciprocal_rank_fusion, k=60),
    ],
    ids=["dbsf", "rrf-k60"],
)
@pytest.mark.parametrize("query", QUERIES)
def test_edge_fuses_as_qdrant_hybrid_store_with_the_same_fusion(
    edge_index, qdrant_index, sparse_model, query, fusion
):
    ours = retrieved(with_fusion(edge_index, fusion), query, vector_store_query_mode="hybrid")
    theirs = retrieved(
        qdrant_with_fusion(qdrant_index, fusion, sparse_model),
        query,
        vector_store_query_mode="hybrid",
    )
    assert_same(ours, theirs)


def test_edge_hybrid_aretrieve_equals_retrieve(edge_index):
    retriever = edge_index.as_retriever(
        vector_store_query_mode="hybrid", similarity_top_k=10, sparse_top_k=10
    )

    async def main():
        return [[(n.node.node_id, n.score) for n in await retriever.aretrieve(q)] for q in QUERIES]

    expected = [[(n.node.node_id, n.score) for n in retriever.retrieve(q)] for q in QUERIES]
    assert asyncio.run(main()) == expected


def test_edge_collection_is_what_qdrant_hybrid_store_creates(edge_index, qdrant_index):
    config = edge_index.vector_store.collection_config
    params = qdrant_index.vector_store.client.get_collection("movies").config.params
    assert config.dense_size == params.vectors["text-dense"].size == 384
    assert config.sparse is True
    assert config.sparse_modifier == params.sparse_vectors["text-sparse-new"].modifier.value
    ours = {p.id: p.payload for p in edge_index.vector_store.iter_points()}
    theirs = {
        str(p.id): p.payload
        for p in qdrant_index.vector_store.client.scroll("movies", limit=100)[0]
    }
    assert ours == theirs  # the same point ids and payloads, key for key


def test_edge_nodes_round_trip_with_metadata_and_relationships(edge_index):
    nodes = {n.node_id: n for n in movie_nodes()}
    got = edge_index.vector_store.get_nodes(node_ids=list(nodes))
    assert len(got) == len(nodes)
    for node in got:
        original = nodes[node.node_id]
        assert node.text == original.text
        assert node.metadata == original.metadata
        assert node.relationships == original.relationships
        assert node.ref_doc_id == original.ref_doc_id
        assert len(node.embedding) == 384
    assert edge_index.vector_store.stores_text is True


# --- filters: every operator QdrantVectorStore maps, against embedded Qdrant ---------------

FILTER_VALUES = {
    "word": lambda i: ["alpha", "beta", "gamma"][i % 3],
    "number": lambda i: i,
    "real": lambda i: i / 2,
    "mixed": lambda i: [1, 2, "3", 4.5][i % 4],
    "text": lambda i: ["Hello world", "hello there", "goodbye"][i % 3],
    "maybe": lambda i: None if i % 4 == 0 else ("x" if i % 4 == 1 else []),
}


def f(key, value, operator=FilterOperator.EQ):
    return MetadataFilter(key=key, value=value, operator=operator)


FILTERS = {
    "eq-str": [f("word", "beta")],
    "eq-int": [f("number", 3)],
    "eq-float": [f("real", 1.5)],
    "ne-str": [f("word", "beta", FilterOperator.NE)],
    "ne-int": [f("number", 3, FilterOperator.NE)],
    "gt": [f("number", 5, FilterOperator.GT)],
    "gte": [f("real", 2.5, FilterOperator.GTE)],
    "lt": [f("real", 2.5, FilterOperator.LT)],
    "lte": [f("number", 5, FilterOperator.LTE)],
    "in-list": [f("word", ["alpha", "gamma"], FilterOperator.IN)],
    "in-ints": [f("number", [1, 2, 9], FilterOperator.IN)],
    "in-comma-string": [f("word", "alpha,beta", FilterOperator.IN)],
    "nin": [f("word", ["alpha"], FilterOperator.NIN)],
    "nin-ints": [f("number", [1, 2], FilterOperator.NIN)],
    "mixed-in": [f("mixed", [1, 2], FilterOperator.IN)],
    "mixed-nin": [f("mixed", [1, 2], FilterOperator.NIN)],
    "mixed-in-str": [f("mixed", ["3"], FilterOperator.IN)],
    "mixed-lt": [f("mixed", 3, FilterOperator.LT)],
    "text-match": [f("text", "hello", FilterOperator.TEXT_MATCH)],
    "text-match-insensitive": [f("text", "world", FilterOperator.TEXT_MATCH_INSENSITIVE)],
    "is-empty": [f("maybe", None, FilterOperator.IS_EMPTY)],
    "or": MetadataFilters(
        filters=[f("word", "alpha"), f("number", 4)], condition=FilterCondition.OR
    ),
    "not": MetadataFilters(filters=[f("word", "alpha")], condition=FilterCondition.NOT),
    "nested": MetadataFilters(
        filters=[
            f("number", 2, FilterOperator.GT),
            MetadataFilters(
                filters=[f("word", "beta"), f("real", 4.0, FilterOperator.GTE)],
                condition=FilterCondition.OR,
            ),
            MetadataFilters(filters=[f("number", 7)], condition=FilterCondition.NOT),
            MetadataFilters(filters=[]),  # skipped, as QdrantVectorStore skips it
        ]
    ),
}


@pytest.fixture(scope="module")
def filter_stores(tmp_path_factory):
    nodes = small_nodes(12, **FILTER_VALUES)
    client = QdrantClient(":memory:")
    theirs = QdrantVectorStore("filters", client=client)
    theirs.add([n.model_copy() for n in nodes])
    ours = QdrantEdgeVectorStore(tmp_path_factory.mktemp("edge") / "filters")
    ours.add(nodes)
    yield ours, theirs
    ours.close()
    client.close()


@pytest.mark.parametrize("filters", list(FILTERS.values()), ids=list(FILTERS))
def test_edge_filters_select_what_qdrant_selects(filter_stores, filters):
    ours, theirs = filter_stores
    if isinstance(filters, list):
        filters = MetadataFilters(filters=filters)
    expected = sorted(n.node_id for n in theirs.get_nodes(filters=filters))
    assert sorted(n.node_id for n in ours.get_nodes(filters=filters)) == expected
    assert ours.count(filters) == len(expected)
    query = VectorStoreQuery(query_embedding=[1.0, 0.0, 0.0, 0.0], similarity_top_k=20)
    query.filters = filters
    found, reference = ours.query(query), theirs.query(query)
    assert sorted(found.ids) == expected
    assert found.ids == reference.ids
    assert found.similarities == pytest.approx(reference.similarities)


def test_edge_filters_on_node_ids_and_doc_ids(filter_stores):
    ours, theirs = filter_stores
    ids = [str(uuid.UUID(int=2)), str(uuid.UUID(int=5))]
    query = VectorStoreQuery(query_embedding=[0.0, 1.0, 0.0, 0.0], similarity_top_k=5, node_ids=ids)
    assert ours.query(query).ids == theirs.query(query).ids
    assert sorted(ours.query(query).ids) == sorted(ids)
    query = VectorStoreQuery(query_embedding=[0.0, 1.0, 0.0, 0.0], doc_ids=["None"])
    assert ours.query(query).ids == theirs.query(query).ids


def test_edge_builds_payload_indexes_only_where_results_stay_the_same(tmp_path):
    store = QdrantEdgeVectorStore(tmp_path / "c")
    store.add(small_nodes(30, word=FILTER_VALUES["word"], mixed=FILTER_VALUES["mixed"]))
    assert set(store.client.info().payload_schema) == {"doc_id"}
    store.get_nodes(filters=MetadataFilters(filters=[f("word", "beta")]))
    store.get_nodes(filters=MetadataFilters(filters=[f("mixed", [1, 2], FilterOperator.IN)]))
    schema = store.client.info().payload_schema
    assert schema["word"].data_type == qe.PayloadSchemaType.Keyword
    assert "mixed" not in schema  # numbers and strings: an index would change NIN's results
    # A value of another type under an indexed key drops its index.
    store.add(
        [TextNode(id_=str(uuid.uuid4()), text="t", embedding=[1.0] * 4, metadata={"word": 7})]
    )
    assert "word" not in store.client.info().payload_schema
    got = store.get_nodes(filters=MetadataFilters(filters=[f("word", "beta", FilterOperator.NE)]))
    assert len(got) == 21  # 20 strings other than "beta", and the 7
    store.close()


@pytest.mark.parametrize(
    ("filters", "error", "match"),
    [
        ([f("real", [1.5, 2.5], FilterOperator.IN)], ValueError, "all str or all int"),
        ([f("number", "x", FilterOperator.GT)], ValueError, "needs a number"),
        ([f("number", 1.5, FilterOperator.NE)], ValueError, "str or an int"),
        ([f("word", "a", FilterOperator.CONTAINS)], NotImplementedError, "not one"),
    ],
    ids=["in-floats", "range-of-str", "ne-float", "contains"],
)
def test_edge_filter_errors_say_what_to_pass(filter_stores, filters, error, match):
    ours, _ = filter_stores
    with pytest.raises(error, match=match):
        ours.get_nodes(filters=MetadataFilters(filters=filters))


# --- LlamaIndex's own QdrantVectorStore tests that need no server, ported -----------------
# From run-llama/llama_index, llama-index-integrations/vector_stores/
# llama-index-vector-stores-qdrant/tests/ (conftest.py fixtures vector_store and
# hybrid_vector_store; test_vector_stores_qdrant.py). Not ported: the tests of mocked clients,
# sharding, payload_indexes, legacy vector names and parse_to_query_result (QdrantVectorStore's
# internals, with no counterpart here).


UPSTREAM_IDS = [
    "11111111-1111-1111-1111-111111111111",
    "22222222-2222-2222-2222-222222222222",
    "33333333-3333-3333-3333-333333333333",
]


def upstream_nodes(with_metadata=True):
    metadata = [{"some_key": 1}, {"some_key": 2}, {"some_key": "3"}]
    source = {NodeRelationship.SOURCE: RelatedNodeInfo(node_id="test-0")}
    return [
        TextNode(
            text=f"test{i + 1}",
            id_=UPSTREAM_IDS[i],
            embedding=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]][i],
            metadata=metadata[i] if with_metadata else {},
            relationships=source if i < 2 else {},
        )
        for i in range(3)
    ]


@pytest.fixture
def vector_store(tmp_path):
    store = QdrantEdgeVectorStore(tmp_path / "test")
    store.add(upstream_nodes())
    yield store
    store.close()


@pytest.fixture
def hybrid_vector_store(tmp_path, sparse_model):
    store = QdrantEdgeVectorStore(tmp_path / "test", sparse_model=sparse_model)
    store.add(upstream_nodes(with_metadata=False))
    yield store
    store.close()


def test_class():
    assert issubclass(QdrantEdgeVectorStore, edge_module.BasePydanticVectorStore)


def test_delete__and_get_nodes(vector_store):
    vector_store.delete_nodes(node_ids=[UPSTREAM_IDS[0]])
    assert len(vector_store.get_nodes(node_ids=UPSTREAM_IDS)) == 2


def test_clear(vector_store):
    # Upstream expects get_nodes to raise "Collection test not found"; here the folder's
    # collection is gone and get_nodes finds nothing.
    vector_store.clear()
    assert vector_store.get_nodes(node_ids=UPSTREAM_IDS) == []
    assert vector_store.collection_config is None


def test_adelete_and_aget(vector_store):
    async def main():
        await vector_store.adelete_nodes(node_ids=[UPSTREAM_IDS[0]])
        return await vector_store.aget_nodes(node_ids=UPSTREAM_IDS)

    assert len(asyncio.run(main())) == 2


def test_aclear(vector_store):
    async def main():
        await vector_store.aclear()
        return await vector_store.aget_nodes(node_ids=UPSTREAM_IDS)

    assert asyncio.run(main()) == []


def test_get_with_embedding(vector_store):
    nodes = asyncio.run(vector_store.aget_nodes(node_ids=UPSTREAM_IDS))
    assert all(node.embedding is not None for node in nodes)


def test_filter_conditions(vector_store):
    # Upstream checks the Qdrant Filter built from each condition; here, what it selects.
    def selected(filters):
        return sorted(n.text for n in vector_store.get_nodes(filters=filters))

    both = [f("some_key", 1), f("some_key", 2)]
    assert selected(MetadataFilters(filters=both, condition=FilterCondition.AND)) == []
    assert selected(MetadataFilters(filters=both, condition=FilterCondition.OR)) == [
        "test1",
        "test2",
    ]
    assert selected(MetadataFilters(filters=both[:1], condition="not")) == ["test2", "test3"]
    nested_not = MetadataFilters(
        filters=[
            f("some_key", [1, 2], FilterOperator.IN),
            MetadataFilters(filters=[f("some_key", 2)], condition="not"),
        ]
    )
    assert selected(nested_not) == ["test1"]


def test_filters_with_types(vector_store):
    def count(value, operator):
        filters = MetadataFilters(filters=[f("some_key", value, operator)])
        return len(vector_store.get_nodes(filters=filters))

    assert count([1, 2], FilterOperator.IN) == 2
    assert count([1, 2], FilterOperator.NIN) == 1
    assert count(["3"], FilterOperator.IN) == 1


def test_hybrid_vector_store_query(hybrid_vector_store):
    # Upstream queries with [0.0, 0.0], a tie of every point on the dense side, which each
    # engine breaks its own way; [0.0, 1.0] makes test2 the dense side's top 1 and test1 the
    # sparse side's, as upstream's two nodes are.
    query = VectorStoreQuery(
        query_embedding=[0.0, 1.0],
        query_str="test1",
        similarity_top_k=1,
        sparse_top_k=1,
        hybrid_top_k=2,
        mode=VectorStoreQueryMode.HYBRID,
    )
    assert len(hybrid_vector_store.query(query).nodes) == 2
    # Upstream turns enable_hybrid off; here a default-mode query is dense only.
    query.mode = VectorStoreQueryMode.DEFAULT
    assert len(hybrid_vector_store.query(query).nodes) == 1


def test_async_query_initializes_with_async_client_only(tmp_path):
    # Upstream: a store with only an async client answers aquery. Here one store object
    # serves async callers, with no client to choose.
    store = QdrantEdgeVectorStore(tmp_path / "async_init_test")
    node = TextNode(id_="11111111-1111-1111-1111-111111111111", text="hello", embedding=[1.0, 0])
    asyncio.run(store.async_add([node]))
    result = asyncio.run(store.aquery(VectorStoreQuery(query_embedding=[1.0, 0.0])))
    assert [n.text for n in result.nodes] == ["hello"]
    store.close()


# --- writes, deletes, bad input -----------------------------------------------------------


def test_edge_indexes_only_past_exact_below_and_in_add(tmp_path, monkeypatch):
    monkeypatch.setattr(edge_module, "EXACT_BELOW", 2_000)  # read when the shard is made
    store = QdrantEdgeVectorStore(tmp_path / "c")
    for seed in range(19):
        store.add(small_nodes(100, dim=32, seed=seed))
    assert store.client.info().indexed_vectors_count == 0  # 1,900: searched exactly
    store.add(small_nodes(200, dim=32, seed=19))
    assert store.client.info().indexed_vectors_count == 2_100  # the add built the index
    store.close()
    with QdrantEdgeVectorStore(tmp_path / "c") as store:  # the threshold outlives a reopen
        store.add(small_nodes(1_900, dim=32, seed=20))
        assert store.client.info().indexed_vectors_count == 2_100
        store.add(small_nodes(200, dim=32, seed=21))
        assert store.client.info().indexed_vectors_count == 4_200


def test_edge_add_replaces_a_node_with_the_same_id(tmp_path):
    store = QdrantEdgeVectorStore(tmp_path / "c")
    nodes = small_nodes(5)
    store.add(nodes)
    changed = nodes[0].model_copy(update={"text": "changed"})
    store.add([changed])
    assert store.count() == 5
    assert store.get_nodes(node_ids=[changed.node_id])[0].text == "changed"
    store.close()


def test_edge_delete_removes_a_documents_nodes(tmp_path):
    store = QdrantEdgeVectorStore(tmp_path / "c")
    nodes = [n.model_copy(update={"embedding": [1.0, 0.0]}) for n in movie_nodes()]
    store.add(nodes)
    store.delete("movie-1")
    assert store.count() == 16
    assert all(n.ref_doc_id != "movie-1" for n in store.get_nodes())
    store.delete_nodes(filters=HALF)
    assert store.count() == 8
    store.delete_nodes(node_ids=[nodes[0].node_id], filters=HALF)  # both: first half, kept
    assert store.count() == 8
    store.delete_nodes()
    assert store.count() == 0
    store.close()


@pytest.mark.parametrize(
    ("node", "match"),
    [
        (TextNode(id_="not-a-uuid", text="t", embedding=[1.0, 0.0]), "is not a UUID"),
        (TextNode(id_=str(uuid.uuid4()), text="t"), "has no embedding"),
        (TextNode(id_=str(uuid.uuid4()), text="t", embedding=[1.0, 0.0, 0.0]), "of 3 values"),
        (TextNode(id_=str(uuid.uuid4()), text="t", embedding=[float("nan"), 0.0]), "not finite"),
    ],
    ids=["id", "no-embedding", "size", "nan"],
)
def test_edge_add_refuses_bad_nodes_and_writes_none_of_the_batch(tmp_path, node, match):
    store = QdrantEdgeVectorStore(tmp_path / "c")
    store.add(small_nodes(2, dim=2))
    with pytest.raises(ValueError, match=match):
        store.add([*small_nodes(3, dim=2, seed=1), node])
    assert store.count() == 2
    store.close()


def test_edge_sparse_queries_need_a_sparse_model(tmp_path):
    store = QdrantEdgeVectorStore(tmp_path / "c")
    store.add(small_nodes(2))
    query = VectorStoreQuery(query_embedding=[1.0] * 4, query_str="x", mode="hybrid")
    with pytest.raises(ValueError, match="open the store with sparse_model="):
        store.query(query)
    with pytest.raises(ValueError, match="modes 'default', 'sparse' and 'hybrid'"):
        store.query(VectorStoreQuery(query_embedding=[1.0] * 4, mode="mmr"))
    store.close()


def test_edge_hybrid_collection_opened_without_the_sparse_model(tmp_path, sparse_model):
    with QdrantEdgeVectorStore(tmp_path / "c", sparse_model=sparse_model) as store:
        store.add(small_nodes(3))
    with QdrantEdgeVectorStore(tmp_path / "c") as dense_only:
        # Readable, and dense queries work; new points would lack sparse vectors.
        assert dense_only.count() == 3
        assert len(dense_only.query(VectorStoreQuery(query_embedding=[1.0] * 4)).ids) == 1
        with pytest.raises(ValueError, match="is hybrid"):
            dense_only.add(small_nodes(1, seed=2))


def test_edge_refuses_a_sparse_model_the_collection_cannot_serve(tmp_path, sparse_model):
    with QdrantEdgeVectorStore(tmp_path / "dense") as store:
        store.add(small_nodes(2))
    with pytest.raises(ValueError, match="has no sparse vectors"):
        QdrantEdgeVectorStore(tmp_path / "dense", sparse_model=sparse_model)
    with QdrantEdgeVectorStore(tmp_path / "bm25", sparse_model=sparse_model) as store:
        store.add(small_nodes(2))
    splade = FastEmbedSparseEmbedding("prithivida/Splade_PP_en_v1")  # loads on first use only
    with pytest.raises(ValueError, match="IDF modifier, but prithivida"):
        QdrantEdgeVectorStore(tmp_path / "bm25", sparse_model=splade)


def test_edge_bad_arguments_are_named(tmp_path):
    with pytest.raises(TypeError, match="sparse_model must be a FastEmbedSparseEmbedding"):
        QdrantEdgeVectorStore(tmp_path, sparse_model="Qdrant/bm25")
    with pytest.raises(TypeError, match="fusion must be a function"):
        QdrantEdgeVectorStore(tmp_path, fusion="rrf")
    with pytest.raises(TypeError, match="path must be a folder"):
        QdrantEdgeVectorStore(None)


# --- the folder: reopen, metadata, one process at a time, threads, durability -------------


def test_edge_reopens_with_nodes_metadata_and_results(tmp_path, embed_model, sparse_model):
    path = tmp_path / "movies"
    store = QdrantEdgeVectorStore(path, sparse_model=sparse_model)
    index = VectorStoreIndex(
        movie_nodes(),
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed_model,
    )
    store.write_metadata({"embed_model": offline_models.EMBED_MODEL, "sparse_model": "bm25"})
    before = [retrieved(index, q, vector_store_query_mode="hybrid") for q in QUERIES]
    store.close()
    with pytest.raises(RuntimeError, match="is closed"):
        store.count()
    reopened = QdrantEdgeVectorStore(path, sparse_model=sparse_model)
    index = VectorStoreIndex.from_vector_store(reopened, embed_model=embed_model)
    assert [retrieved(index, q, vector_store_query_mode="hybrid") for q in QUERIES] == before
    assert reopened.read_metadata()["sparse_model"] == "bm25"
    assert reopened.collection_config.dense_size == 384
    reopened.close()


def test_edge_store_round_trips_through_dict_and_pickle(tmp_path, sparse_model):
    store = QdrantEdgeVectorStore(tmp_path / "c", sparse_model=sparse_model)
    store.add(small_nodes(3))
    data = store.to_dict()
    assert data["path"] == str(tmp_path / "c")
    assert data["sparse_model"]["model_name"] == offline_models.SPARSE_MODEL
    assert "fusion" not in data  # a function: documented as not serialised
    again = QdrantEdgeVectorStore.from_dict(data)
    assert again.count() == 3
    assert again.sparse_model.model_dump() == sparse_model.model_dump()
    assert QdrantEdgeVectorStore.from_json(store.to_json()).sparse_model.model_dump() == (
        sparse_model.model_dump()
    )
    fused = QdrantEdgeVectorStore(tmp_path / "c", fusion=distribution_based_score_fusion)
    assert pickle.loads(pickle.dumps(fused)).fusion is distribution_based_score_fusion
    for s in (store, again, fused):
        s.close()


def test_edge_metadata_is_json_written_atomically(tmp_path):
    with QdrantEdgeVectorStore(tmp_path / "c") as store:
        assert store.read_metadata() == {}
        store.write_metadata({"a": [1, 2.5, None, {"b": True}]})
        assert store.read_metadata() == {"a": [1, 2.5, None, {"b": True}]}
        # Readable as the engine's own files are (the staging helper's mode, not mkstemp's).
        assert (tmp_path / "c" / "collection.json").stat().st_mode & 0o777 == 0o644
        with pytest.raises(TypeError, match="must be JSON"):
            store.write_metadata({"a": {1, 2}})
        with pytest.raises(TypeError, match="must be JSON"):
            store.write_metadata({"a": float("nan")})
        assert store.read_metadata() == {"a": [1, 2.5, None, {"b": True}]}
        store.add(small_nodes(1))
        assert store.read_metadata() == {"a": [1, 2.5, None, {"b": True}]}
        store.clear()
        assert store.read_metadata() == {}
    assert [p.name for p in (tmp_path / "c").iterdir()] == [".lock"]  # nothing else


def test_edge_stores_on_one_folder_in_a_process_share_it(tmp_path):
    first = QdrantEdgeVectorStore(tmp_path / "c")
    first.add(small_nodes(3))
    second = QdrantEdgeVectorStore(tmp_path / "c")
    assert second.count() == 3
    second.add(small_nodes(2, seed=1))
    first.close()
    assert second.count() == 5
    second.close()


HOLD_FOLDER = """
import sys, time, uuid
from llama_index.core.schema import TextNode
from llama_index_fastembed_rerank import QdrantEdgeVectorStore
store = QdrantEdgeVectorStore(sys.argv[1])
if sys.argv[2] == "created":
    store.add([TextNode(id_=str(uuid.uuid4()), text="x", embedding=[1.0, 0.0])])
print("open", flush=True)
time.sleep(60)
"""


@pytest.mark.parametrize("state", ["created", "empty"])
def test_edge_second_process_gets_a_clear_error_naming_the_folder(tmp_path, state):
    # "empty": no collection yet, so no engine lock either; the folder's own lock refuses.
    path = tmp_path / "c"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD_FOLDER, str(path), state],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": PACKAGE_ROOT},
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(FolderInUseError, match=f"{path.resolve()} is open in another process"):
            QdrantEdgeVectorStore(path)
    finally:
        holder.kill()
        holder.wait()
    with QdrantEdgeVectorStore(path) as store:  # the lock goes with the process
        assert store.count() == (1 if state == "created" else 0)


def test_edge_threads_write_and_query_one_store_at_once(tmp_path):
    store = QdrantEdgeVectorStore(tmp_path / "c")
    store.add(small_nodes(1, seed=99))
    errors = []

    def writer(seed):
        try:
            for batch in range(5):
                store.add(small_nodes(20, seed=seed * 10 + batch))
        except Exception as e:
            errors.append(e)

    def reader():
        try:
            for _ in range(50):
                assert store.query(VectorStoreQuery(query_embedding=[1.0] * 4)).ids
                store.count()
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(s,)) for s in range(1, 5)]
    threads += [threading.Thread(target=reader) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count() == 1 + 4 * 5 * 20
    store.close()


KILLED_WRITER = """
import sys, uuid
import numpy as np
from llama_index.core.schema import TextNode
from llama_index_fastembed_rerank import QdrantEdgeVectorStore, edge
edge.EXACT_BELOW = 3_000  # index builds in the run, for the kills to land in too
store = QdrantEdgeVectorStore(sys.argv[1])
rng = np.random.default_rng(int(sys.argv[2]))
start = int(sys.argv[3])
print("ready", flush=True)
for batch in range(10_000):
    nodes = [
        TextNode(id_=str(uuid.UUID(int=start + batch * 50 + i)), text="t",
                 embedding=rng.normal(size=384).tolist(), metadata={"batch": batch})
        for i in range(50)
    ]
    store.add(nodes)
    print(start + batch * 50 + 49, flush=True)
"""


def kill_writer(path, delay, run=0, start=0):
    """Run KILLED_WRITER on ``path``, SIGKILL it ``delay`` s after it opened the store."""
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_WRITER, str(path), str(run), str(start)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": PACKAGE_ROOT},
    )
    assert writer.stdout.readline().strip() == "ready"
    lines = []
    reader = threading.Thread(target=lambda: lines.extend(writer.stdout))
    reader.start()
    time.sleep(delay)
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    reader.join()
    return {str(uuid.UUID(int=i)) for i in range(start, int(lines[-1]) + 1)} if lines else set()


@pytest.mark.parametrize("delay", [0.5, 2.0, 5.0])
def test_edge_sigkill_during_writes_leaves_a_folder_with_every_acknowledged_point(tmp_path, delay):
    path = tmp_path / "c"
    # Past 3,000 points an add builds the HNSW index: later kills land there.
    # Killed twice: the second writer reopens the folder the first left, and is killed too.
    for run, start in enumerate((0, 10_000_000)):
        acknowledged = kill_writer(path, delay, run, start)
        with QdrantEdgeVectorStore(path) as store:
            there = {p.id for p in store.iter_points()}
        assert acknowledged <= there
        assert len(there) % 50 == 0  # whole adds only: an add is one upsert


KILLED_OPTIMIZER = """
import sys, uuid
import numpy as np
import qdrant_edge as qe
from llama_index.core.schema import TextNode
from llama_index_fastembed_rerank import QdrantEdgeVectorStore, edge
edge.EXACT_BELOW = 5_000
store = QdrantEdgeVectorStore(sys.argv[1])
store.add([TextNode(id_=str(uuid.UUID(int=0)), text="t", embedding=[1.0] * 384)])
vectors = np.random.default_rng(0).normal(size=(8_000, 384)).tolist()
# Past EXACT_BELOW, written without add()'s optimizer call.
store.client.update(qe.UpdateOperation.upsert_points([
    qe.Point(id=str(uuid.UUID(int=i + 1)), vector={"text-dense": v})
    for i, v in enumerate(vectors)
]))
print("optimizing", flush=True)
print(store.optimize(), flush=True)
"""


def test_edge_sigkill_during_an_index_build_leaves_a_folder_that_opens(tmp_path):
    path = tmp_path / "c"
    writer = subprocess.Popen(
        [sys.executable, "-c", KILLED_OPTIMIZER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": PACKAGE_ROOT},
    )
    assert writer.stdout.readline().strip() == "optimizing"
    time.sleep(1.0)
    assert writer.poll() is None, "the index build ended before the kill"
    writer.send_signal(signal.SIGKILL)
    writer.wait()
    with QdrantEdgeVectorStore(path) as store:
        assert store.count() == 8_001
        store.optimize()  # the engine plans anew: the points sit in two plain segments now
        found = store.query(VectorStoreQuery(query_embedding=[1.0] * 384))
        assert found.ids == [str(uuid.UUID(int=0))]


def test_edge_sigkill_while_the_collection_is_created(tmp_path):
    # Killed at moments of the first add: the folder opens, empty or with whole adds.
    for delay in (0.0, 0.005, 0.02, 0.05, 0.1):
        path = tmp_path / f"c{delay}"
        kill_writer(path, delay)
        with QdrantEdgeVectorStore(path) as store:
            assert store.count() % 50 == 0


# --- moving up: push to Qdrant ------------------------------------------------------------


def test_push_to_qdrant_then_qdrant_stores_return_what_edge_returns(
    edge_index, embed_model, sparse_model
):
    client = QdrantClient(":memory:")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # local mode's warning about payload indexes stays ours
        assert push_to_qdrant(edge_index.vector_store, client, "movies", batch_size=7) == 20
    hybrid = VectorStoreIndex.from_vector_store(
        qdrant_hybrid_store("movies", client=client, sparse_model=sparse_model),
        embed_model=embed_model,
    )
    dense = VectorStoreIndex.from_vector_store(
        QdrantVectorStore("movies", client=client), embed_model=embed_model
    )
    for query in QUERIES:
        for mode in ("default", "sparse", "hybrid"):
            assert_same(
                retrieved(hybrid, query, vector_store_query_mode=mode),
                retrieved(edge_index, query, vector_store_query_mode=mode),
            )
        assert_same(retrieved(dense, query), retrieved(edge_index, query))
    client.close()


def test_push_to_qdrant_resumes_after_a_failure_and_duplicates_nothing(tmp_path):
    path = tmp_path / "c"
    with QdrantEdgeVectorStore(path) as store:
        store.add(small_nodes(25, dim=8, word=FILTER_VALUES["word"]))
    client = QdrantClient(":memory:")
    calls = []

    def fail_after_two(done, total):
        calls.append((done, total))
        if len(calls) == 2:
            msg = "connection lost"
            raise ConnectionError(msg)

    with pytest.raises(ConnectionError):
        push_to_qdrant(path, client, "target", batch_size=10, progress=fail_after_two)
    assert calls == [(10, 25), (20, 25)]
    assert client.count("target").count == 20
    assert push_to_qdrant(path, client, "target", batch_size=10) == 5
    assert push_to_qdrant(path, client, "target", batch_size=10) == 0
    assert client.count("target").count == 25
    with QdrantEdgeVectorStore(path) as store:
        ours = {p.id: p.payload for p in store.iter_points()}
    assert {str(p.id): p.payload for p in client.scroll("target", limit=100)[0]} == ours
    client.close()


def test_push_to_qdrant_refuses_a_target_with_other_vectors(tmp_path, sparse_model):
    path = tmp_path / "c"
    with QdrantEdgeVectorStore(path, sparse_model=sparse_model) as store:
        store.add(small_nodes(3))
    client = QdrantClient(":memory:")
    QdrantVectorStore("dense", client=client).add(small_nodes(1, dim=4))
    with pytest.raises(ValueError, match="exists with no cosine 'text-dense' vector of 4"):
        push_to_qdrant(path, client, "dense")
    with pytest.raises(ValueError, match="holds no collection"):
        push_to_qdrant(tmp_path / "empty", client, "x")
    client.close()


# --- the engine's behaviour this module relies on -----------------------------------------


def test_engine_retrieve_needs_with_payload_and_with_vector(tmp_path):
    shard = qe.EdgeShard.create(
        str(tmp_path / "s"),
        qe.EdgeConfig(vectors={"d": qe.EdgeVectorParams(size=2, distance=qe.Distance.Cosine)}),
    )
    shard.update(qe.UpdateOperation.upsert_points([qe.Point(id=1, vector={"d": [1.0, 0.0]})]))
    with pytest.raises(TypeError, match="with_payload"):
        shard.retrieve([1])
    assert len(shard.retrieve([1, 2], True, False)) == 1
    shard.close()


def test_engine_second_opener_in_a_process_gets_wouldblock(tmp_path):
    config = qe.EdgeConfig(vectors={"d": qe.EdgeVectorParams(size=2, distance=qe.Distance.Cosine)})
    shard = qe.EdgeShard.create(str(tmp_path / "s"), config)
    with pytest.raises(Exception, match="WouldBlock"):
        qe.EdgeShard.load(str(tmp_path / "s"))
    shard.close()
    qe.EdgeShard.load(str(tmp_path / "s")).close()


def test_engine_payload_index_on_single_typed_keys_gives_the_results_of_no_index(tmp_path):
    shard = qe.EdgeShard.create(
        str(tmp_path / "s"),
        qe.EdgeConfig(vectors={"d": qe.EdgeVectorParams(size=2, distance=qe.Distance.Cosine)}),
    )
    payloads = [{"s": f"v{i % 3}", "i": i, "r": i / 3} for i in range(9)] + [{}, {"s": []}]
    shard.update(
        qe.UpdateOperation.upsert_points(
            [qe.Point(id=i, vector={"d": [1.0, i]}, payload=p) for i, p in enumerate(payloads)]
        )
    )
    fc = qe.FieldCondition
    conditions = {
        "s": [
            fc("s", match=qe.MatchValue("v1")),
            fc("s", match=qe.MatchAny(["v0", "v2"])),
            fc("s", match=qe.MatchExcept(["v1"])),
        ],
        "i": [
            fc("i", match=qe.MatchValue(4)),
            fc("i", match=qe.MatchExcept([1, 2])),
            fc("i", range=qe.RangeFloat(lt=4.5)),
        ],
        "r": [fc("r", range=qe.RangeFloat(gte=1.0)), fc("r", range=qe.RangeFloat(lt=2.0))],
    }

    def selected():
        return {
            key: [
                sorted(
                    r.id
                    for r in shard.scroll(qe.ScrollRequest(limit=100, filter=qe.Filter(must=[c])))[
                        0
                    ]
                )
                for c in conds
            ]
            for key, conds in conditions.items()
        }

    before = selected()
    for key, schema in (("s", "Keyword"), ("i", "Integer"), ("r", "Float")):
        assert edge_module._INDEX_FOR_TYPES[frozenset({type(payloads[1][key]).__name__})] == schema
        shard.update(
            qe.UpdateOperation.create_field_index(key, getattr(qe.PayloadSchemaType, schema))
        )
    assert selected() == before
    shard.close()


def test_engine_builds_the_index_only_in_optimize_holding_the_gil(tmp_path):
    # Why one lock per folder costs no parallelism, and why the index build runs in the
    # writer's add (a background thread would stall every thread of the process anyway).
    config = qe.EdgeConfig(
        vectors={"d": qe.EdgeVectorParams(size=64, distance=qe.Distance.Cosine)},
        optimizers=qe.EdgeOptimizersConfig(indexing_threshold=100),  # KB: index 500 points
    )
    shard = qe.EdgeShard.create(str(tmp_path / "s"), config)
    vectors = np.random.default_rng(0).normal(size=(3_000, 64)).tolist()
    shard.update(
        qe.UpdateOperation.upsert_points(
            [qe.Point(id=i, vector={"d": v}) for i, v in enumerate(vectors)]
        )
    )
    ticks, stop = [], threading.Event()

    def tick():
        while not stop.is_set():
            ticks.append(time.perf_counter())
            time.sleep(0.001)

    time.sleep(0.5)
    assert shard.info().indexed_vectors_count == 0  # no background optimizer: nothing indexed
    ticker = threading.Thread(target=tick)
    ticker.start()
    time.sleep(0.05)
    began = time.perf_counter()
    assert shard.optimize() is True
    ended = time.perf_counter()
    stop.set()
    ticker.join()
    assert ended - began > 0.1  # long enough for a free thread to tick dozens of times
    assert len([t for t in ticks if began < t < ended]) <= 2
    assert shard.info().indexed_vectors_count == 3_000
    shard.close()


def test_engine_returns_nothing_for_an_empty_sparse_query(tmp_path):
    shard = qe.EdgeShard.create(
        str(tmp_path / "s"), qe.EdgeConfig(sparse_vectors={"sp": qe.EdgeSparseVectorParams()})
    )
    shard.update(
        qe.UpdateOperation.upsert_points(
            [qe.Point(id=1, vector={"sp": qe.SparseVector(indices=[3], values=[1.0])})]
        )
    )
    empty = qe.Query.Nearest(qe.SparseVector(indices=[], values=[]), using="sp")
    assert shard.query(qe.QueryRequest(limit=5, query=empty)) == []
    shard.close()


def test_import_works_without_qdrant_edge_and_the_store_says_how_to_install(tmp_path):
    result = run_python(
        """
        import sys
        sys.modules["qdrant_edge"] = None  # as if not installed
        import llama_index_fastembed_rerank as m
        try:
            m.QdrantEdgeVectorStore(sys.argv[1])
        except ImportError as e:
            print(e)
        """,
        str(tmp_path),
    )
    assert result.returncode == 0, result.stderr
    assert "pip install 'llama-index-fastembed-rerank[edge]'" in result.stdout
