"""Hybrid retrieval end to end on real weights: all-MiniLM-L6-v2 + BM25 in embedded Qdrant."""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
import warnings
from pathlib import Path
from typing import ClassVar

import numpy as np
import pytest
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.schema import MetadataMode, TextNode
from llama_index.core.vector_stores import MetadataFilter, MetadataFilters
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import AsyncQdrantClient, QdrantClient
from qdrant_client.http import models

import offline_models
from conftest import JsonHandler, serving
from llama_index_fastembed_rerank import (
    FastEmbedSparseEmbedding,
    distribution_based_score_fusion,
    qdrant_hybrid_store,
    reciprocal_rank_fusion,
)

MOVIES = json.loads((Path(__file__).parents[1] / "examples" / "data" / "movies.json").read_text())
QUERIES = [
    MOVIES["query"],
    "Joan of Arc heresy trial",
    "a princess and seven dwarfs",
    "a story about drug abuse",
    "the of and",  # stopwords only: the sparse side finds nothing
]
HALF = MetadataFilters(filters=[MetadataFilter(key="half", value="second")])
QDRANT_HALF = models.Filter(
    must=[models.FieldCondition(key="half", match=models.MatchValue(value="second"))]
)


def movie_nodes() -> list[TextNode]:
    return [
        TextNode(
            id_=str(uuid.UUID(int=i)),
            text=text,
            metadata={"half": "first" if i < 10 else "second"},
        )
        for i, text in enumerate(MOVIES["descriptions"])
    ]


@pytest.fixture(scope="module")
def client():
    client = QdrantClient(":memory:")
    yield client
    client.close()


@pytest.fixture(scope="module")
def index(client, embed_model, sparse_model):
    store = qdrant_hybrid_store("movies", client=client, sparse_model=sparse_model)
    return VectorStoreIndex(
        movie_nodes(),
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed_model,
    )


def with_fusion(index, fusion):
    """The same collection, queried through a store with another fusion."""
    store = index.vector_store
    other = qdrant_hybrid_store(
        store.collection_name,
        client=store.client,
        sparse_model=FastEmbedSparseEmbedding.model_validate(
            store._sparse_query_fn.__self__.model_dump()
        ),
        fusion=fusion,
    )
    return VectorStoreIndex.from_vector_store(other, embed_model=index._embed_model)


def qdrant_fused(client, embed_model, sparse_model, query, fusion_query, limit, query_filter=None):
    """What Qdrant's Query API returns for the same two candidate lists."""
    (indices,), (values,) = sparse_model.query_fn([query])
    response = client.query_points(
        "movies",
        prefetch=[
            models.Prefetch(
                query=embed_model.get_query_embedding(query),
                using="text-dense",
                limit=10,
                filter=query_filter,
            ),
            models.Prefetch(
                query=models.SparseVector(indices=indices, values=values),
                using="text-sparse-new",
                limit=10,
                filter=query_filter,
            ),
        ],
        query=fusion_query,
        limit=limit,
    )
    return [(str(p.id), p.score) for p in response.points]


def retrieved(index, query, **kwargs):
    retriever = index.as_retriever(
        vector_store_query_mode="hybrid", similarity_top_k=10, sparse_top_k=10, **kwargs
    )
    return [(n.node.node_id, n.score) for n in retriever.retrieve(query)]


@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.parametrize(
    ("fusion", "alpha", "fusion_query"),
    [
        (reciprocal_rank_fusion, 0.5, models.FusionQuery(fusion=models.Fusion.RRF)),
        (
            reciprocal_rank_fusion,
            0.3,
            models.RrfQuery(rrf=models.Rrf(weights=[2 * 0.3, 2 * (1 - 0.3)])),
        ),
        (
            functools.partial(reciprocal_rank_fusion, k=60),
            0.5,
            models.RrfQuery(rrf=models.Rrf(k=60)),
        ),
        (distribution_based_score_fusion, 0.5, models.FusionQuery(fusion=models.Fusion.DBSF)),
    ],
    ids=["rrf", "weighted-rrf", "rrf-k60", "dbsf"],
)
def test_hybrid_fusion_equals_qdrants_query_api(
    index, client, embed_model, sparse_model, query, fusion, alpha, fusion_query
):
    ours = retrieved(with_fusion(index, fusion), query, alpha=alpha, hybrid_top_k=7)
    theirs = qdrant_fused(client, embed_model, sparse_model, query, fusion_query, limit=7)
    assert [i for i, _ in ours] == [i for i, _ in theirs]
    np.testing.assert_allclose([s for _, s in ours], [s for _, s in theirs], rtol=1e-12)


@pytest.mark.parametrize(
    "fusion", [reciprocal_rank_fusion, distribution_based_score_fusion], ids=["rrf", "dbsf"]
)
def test_hybrid_sparse_only_hit_never_ranks_below_a_document_neither_side_counts(
    index, sparse_model, fusion
):
    query = "Joan of Arc heresy trial"
    sparse_hits = {
        n.node.node_id
        for n in index.as_retriever(
            vector_store_query_mode="sparse", similarity_top_k=10, sparse_top_k=10
        ).retrieve(query)
    }
    assert sparse_hits  # "heresy", "trial", "Joan" occur in the descriptions
    ranked = retrieved(with_fusion(index, fusion), query, alpha=0.0, hybrid_top_k=20)
    found = [i in sparse_hits for i, _ in ranked]
    assert found == sorted(found, reverse=True), "a sparse hit fell below a dense-only one"
    assert min(s for i, s in ranked if i in sparse_hits) > max(
        s for i, s in ranked if i not in sparse_hits
    )


def test_hybrid_metadata_filters_apply_to_both_sides(index, client, embed_model, sparse_model):
    query = "a young boy's story of an assassination"  # BM25 matches in both halves
    second_half = {n.node_id for n in movie_nodes() if n.metadata["half"] == "second"}

    def sparse_hits(**kwargs):
        retriever = index.as_retriever(
            vector_store_query_mode="sparse", similarity_top_k=10, sparse_top_k=10, **kwargs
        )
        return {n.node.node_id for n in retriever.retrieve(query)}

    assert sparse_hits() - second_half
    assert sparse_hits() & second_half
    assert sparse_hits(filters=HALF) == sparse_hits() & second_half
    ours = retrieved(index, query, filters=HALF)
    assert {i for i, _ in ours} <= second_half
    assert sparse_hits(filters=HALF) <= {i for i, _ in ours}
    theirs = qdrant_fused(
        client,
        embed_model,
        sparse_model,
        query,
        models.FusionQuery(fusion=models.Fusion.RRF),
        limit=10,
        query_filter=QDRANT_HALF,
    )
    assert [i for i, _ in ours] == [i for i, _ in theirs]
    assert [s for _, s in ours] == pytest.approx([s for _, s in theirs])


def test_hybrid_collection_weighs_sparse_terms_by_idf(index, client):
    params = client.get_collection("movies").config.params
    assert params.sparse_vectors["text-sparse-new"].modifier == models.Modifier.IDF
    assert params.vectors["text-dense"].size == 384


def test_hybrid_aretrieve_equals_retrieve(index, embed_model, sparse_model):
    async def main():
        # Embedded Qdrant's async client holds its own data: the same nodes, inserted async.
        store = qdrant_hybrid_store(
            "movies", aclient=AsyncQdrantClient(":memory:"), sparse_model=sparse_model
        )
        async_index = VectorStoreIndex(
            nodes=[],
            storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=embed_model,
        )
        await async_index.ainsert_nodes(movie_nodes())
        retriever = async_index.as_retriever(
            vector_store_query_mode="hybrid", similarity_top_k=10, sparse_top_k=10
        )
        return [[(n.node.node_id, n.score) for n in await retriever.aretrieve(q)] for q in QUERIES]

    assert asyncio.run(main()) == [retrieved(index, q) for q in QUERIES]


def test_hybrid_query_engine_reranks_the_fused_candidates(
    index, standin_reranker, real_cross_encoder
):
    query = MOVIES["query"]
    fused = index.as_retriever(
        vector_store_query_mode="hybrid", similarity_top_k=10, sparse_top_k=10
    ).retrieve(query)
    # The reranker scores what the embedding saw: the text with its metadata.
    texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in fused]
    expected = sorted(
        zip(real_cross_encoder.rerank(query, texts), [n.node.node_id for n in fused], strict=True),
        key=lambda pair: -pair[0],
    )
    engine = index.as_query_engine(
        vector_store_query_mode="hybrid",
        similarity_top_k=10,
        sparse_top_k=10,
        node_postprocessors=[standin_reranker],
        llm=MockLLM(),
    )
    nodes = engine.query(query).source_nodes
    assert [n.node.node_id for n in nodes] == [node_id for _, node_id in expected]
    np.testing.assert_allclose([n.score for n in nodes], [s for s, _ in expected], atol=1e-5)


def test_hybrid_store_refuses_a_collection_without_idf(embed_model, sparse_model):
    client = QdrantClient(":memory:")
    # What the store builds from custom encoders alone: sparse vectors without IDF.
    plain = QdrantVectorStore(
        "plain",
        client=client,
        enable_hybrid=True,
        sparse_doc_fn=sparse_model.doc_fn,
        sparse_query_fn=sparse_model.query_fn,
    )
    VectorStoreIndex(
        movie_nodes()[:2],
        storage_context=StorageContext.from_defaults(vector_store=plain),
        embed_model=embed_model,
    )
    sparse_vectors = client.get_collection("plain").config.params.sparse_vectors
    assert sparse_vectors["text-sparse-new"].modifier is None
    with pytest.raises(
        ValueError, match="with no modifier, but Qdrant/bm25 needs the IDF modifier"
    ):
        qdrant_hybrid_store("plain", client=client, sparse_model=sparse_model)


def test_hybrid_store_refuses_a_dense_only_collection(embed_model, sparse_model):
    client = QdrantClient(":memory:")
    dense = QdrantVectorStore("dense", client=client)
    VectorStoreIndex(
        movie_nodes()[:2],
        storage_context=StorageContext.from_defaults(vector_store=dense),
        embed_model=embed_model,
    )
    with pytest.raises(ValueError, match="has no sparse vector named 'text-sparse-new'"):
        qdrant_hybrid_store("dense", client=client, sparse_model=sparse_model)


def test_hybrid_store_needs_a_client_or_url_not_both():
    with pytest.raises(ValueError, match=r"pass client=QdrantClient\(\.\.\.\)"):
        qdrant_hybrid_store("movies")
    with pytest.raises(ValueError, match="got both url='http://qdrant:6333' and a client"):
        qdrant_hybrid_store("movies", client=QdrantClient(":memory:"), url="http://qdrant:6333")


def test_hybrid_store_rejects_a_sparse_config_without_idf(sparse_model):
    with pytest.raises(ValueError, match="leave sparse_config out"):
        qdrant_hybrid_store(
            "movies",
            client=QdrantClient(":memory:"),
            sparse_model=sparse_model,
            sparse_config=models.SparseVectorParams(),
        )


class _FakeQdrantServer(JsonHandler):
    """Answers the two calls a store makes when it is built: version and collection exists."""

    seen: ClassVar[list[tuple[str, str | None]]] = []

    def do_GET(self) -> None:
        type(self).seen.append((self.path, self.headers.get("api-key")))
        if self.path.endswith("/exists"):
            self.answer(200, {"result": {"exists": False}, "status": "ok", "time": 0.0})
        else:
            self.answer(200, {"title": "qdrant - vector search engine", "version": "1.16.0"})


# The async client checks the server's version on its own schedule, after this stub has gone.
@pytest.mark.filterwarnings("ignore:Failed to obtain server version:UserWarning")
def test_hybrid_store_talks_to_a_server_by_url_alone(sparse_model):
    _FakeQdrantServer.seen = []
    with serving(_FakeQdrantServer) as url, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # an API key over plain http
        store = qdrant_hybrid_store("movies", url=url, api_key="secret", sparse_model=sparse_model)
    assert store.enable_hybrid
    assert ("/collections/movies/exists", "secret") in _FakeQdrantServer.seen


def test_hybrid_with_a_neural_sparse_model(embed_model, splade_model_dir):
    """SPLADE-tiny (trained) as the sparse side: no IDF modifier, Qdrant's fusion all the same."""
    splade = FastEmbedSparseEmbedding(
        offline_models.SPLADE_MODEL, specific_model_path=str(splade_model_dir)
    )
    client = QdrantClient(":memory:")
    store = qdrant_hybrid_store("movies", client=client, sparse_model=splade)
    index = VectorStoreIndex(
        movie_nodes(),
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed_model,
    )
    sparse_vectors = client.get_collection("movies").config.params.sparse_vectors
    assert sparse_vectors["text-sparse-new"].modifier is None
    query = "a princess and seven dwarfs"
    ours = retrieved(index, query)
    theirs = qdrant_fused(
        client, embed_model, splade, query, models.FusionQuery(fusion=models.Fusion.RRF), limit=10
    )
    assert ours == theirs
    assert ours[0][0] == str(uuid.UUID(int=15))  # Snow White, first on both sides
