"""The tutorial scenario end to end: LlamaIndex, QdrantVectorStore in local mode, real weights."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.schema import TextNode
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import AsyncQdrantClient, QdrantClient

import offline_models
from llama_index_fastembed_rerank import FastEmbedEmbedding

EXAMPLES = Path(__file__).parents[1] / "examples"
MOVIES = json.loads((EXAMPLES / "data" / "movies.json").read_text())
QUERY = MOVIES["query"]


@pytest.fixture(scope="module", params=["memory", "path"])
def index(request, offline_cache, tmp_path_factory):
    """The 20 descriptions in embedded Qdrant, in memory and on disk (``path=``)."""
    location = (
        {"location": ":memory:"}
        if request.param == "memory"
        else {"path": str(tmp_path_factory.mktemp("qdrant"))}
    )
    client = QdrantClient(**location)
    store = QdrantVectorStore(client=client, collection_name="movies")
    embed_model = FastEmbedEmbedding(
        offline_models.EMBED_MODEL, cache_dir=str(offline_cache), local_files_only=True
    )
    yield VectorStoreIndex.from_documents(
        [Document(text=d) for d in MOVIES["descriptions"]],
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed_model,
    )
    client.close()


@pytest.fixture(scope="module")
def reranker(standin_reranker):
    return standin_reranker


def test_pipeline_first_stage_reproduces_the_tutorial(index):
    hits = index.as_retriever(similarity_top_k=10).retrieve(QUERY)
    texts = [n.node.get_content() for n in hits]
    assert len(texts) == 10
    for position, text in MOVIES["published_first_stage_positions"].items():
        assert texts[int(position) - 1] == text, f"position {position}"


def _query_engine(index, reranker):
    return index.as_query_engine(similarity_top_k=10, node_postprocessors=[reranker], llm=MockLLM())


def test_pipeline_query_engine_nodes_equal_fastembeds_rerank(index, reranker, real_cross_encoder):
    first_stage = [
        n.node.get_content() for n in index.as_retriever(similarity_top_k=10).retrieve(QUERY)
    ]
    expected = sorted(
        zip(real_cross_encoder.rerank(QUERY, first_stage), first_stage, strict=True),
        key=lambda pair: -pair[0],
    )
    nodes = _query_engine(index, reranker).query(QUERY).source_nodes
    assert [n.node.get_content() for n in nodes] == [text for _, text in expected]
    np.testing.assert_allclose([n.score for n in nodes], [s for s, _ in expected], atol=1e-5)


def test_pipeline_async_query_engine_matches_sync(index, reranker, offline_cache):
    async def main():
        # Async queries need Qdrant's async client: a second, async-only collection.
        store = QdrantVectorStore(aclient=AsyncQdrantClient(":memory:"), collection_name="movies")
        async_index = VectorStoreIndex(
            nodes=[],
            storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=index._embed_model,
        )
        await async_index.ainsert_nodes([TextNode(text=d) for d in MOVIES["descriptions"]])
        return await _query_engine(async_index, reranker).aquery(QUERY)

    result = asyncio.run(main()).source_nodes
    sync = _query_engine(index, reranker).query(QUERY).source_nodes
    assert [n.node.get_content() for n in result] == [n.node.get_content() for n in sync]
    np.testing.assert_allclose([n.score for n in result], [n.score for n in sync], atol=1e-6)


def test_pipeline_top_n_limits_what_reaches_the_llm(index, reranker):
    top3 = reranker.model_copy(update={"top_n": 3})
    everything = _query_engine(index, reranker).query(QUERY).source_nodes
    nodes = _query_engine(index, top3).query(QUERY).source_nodes
    assert [n.node.node_id for n in nodes] == [n.node.node_id for n in everything[:3]]


def run_example(offline_cache: Path, *args: str) -> str:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "rerank_query_engine.py"), *args],
        capture_output=True,
        text=True,
        # The session's own copy of the offline models: the run writes beside them.
        env={
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "LIFR_OFFLINE_MODELS": str(offline_cache.parent),
        },
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_example_script_runs_offline(offline_cache):
    out = run_example(offline_cache)
    assert "No model hub is reachable" in out
    assert "NOT meaningful" in out
    first_stage = out.split("Reranked by")[0]
    assert " 10.  " in first_stage
    assert "In 1431, Jeanne d'Arc" in first_stage.split(" 10.  ")[1]
    reranked = out.split("Reranked by")[1]
    assert reranked.count("\n ") == 10  # ten ranked lines


def test_example_script_hybrid_runs_offline(offline_cache):
    out = run_example(offline_cache, "--hybrid")
    first_stage, reranked = out.split("Reranked by")
    assert "all-MiniLM-L6-v2 + Qdrant/bm25, RRF, top 10" in first_stage
    # RRF at k=2: first on both sides scores 1/2 + 1/2; first on one side alone 1/2.
    top = float(first_stage.split("  1. ")[1].split()[0])
    assert 0.5 <= top <= 1.0
    assert first_stage.count("\n ") == 10
    assert reranked.count("\n ") == 10


def test_pipeline_retrieval_score_is_kept_but_never_reaches_the_llm(index, reranker):
    keeping = reranker.model_copy(update={"keep_retrieval_score": True, "top_n": 3})
    first_stage = {
        n.node.node_id: n.score for n in index.as_retriever(similarity_top_k=10).retrieve(QUERY)
    }
    response = _query_engine(index, keeping).query(QUERY)  # MockLLM echoes its prompt
    assert len(response.source_nodes) == 3
    for n in response.source_nodes:
        assert n.node.metadata["retrieval_score"] == pytest.approx(first_stage[n.node.node_id])
        assert n.node.get_content() in str(response)
    assert "retrieval_score" not in str(response)
