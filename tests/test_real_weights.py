"""Both classes on real weights, offline, against fastembed's own results on the same inputs.

The cross-encoder is the stand-in (all-MiniLM-L6-v2 with an untrained head): it checks
plumbing, batching and agreement with ``TextCrossEncoder.rerank``, never relevance.
"""

from __future__ import annotations

import asyncio
import gc
import json
import math
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent

import offline_models
from conftest import make_nodes
from llama_index_fastembed_rerank import FastEmbedEmbedding, FastEmbedRerank
from llama_index_fastembed_rerank.batching import DEFAULT_MAX_BATCH_TOKENS

MOVIES = json.loads((Path(__file__).parents[1] / "examples" / "data" / "movies.json").read_text())
QUERY = MOVIES["query"]
# Mixed lengths, a duplicate and an empty text: the batching must not change a score.
TEXTS = [
    *MOVIES["descriptions"][:12],
    MOVIES["descriptions"][3],
    "",
    " ".join(MOVIES["descriptions"][12:]),
]


@pytest.fixture(scope="module")
def reranker(standin_reranker):
    return standin_reranker


@pytest.fixture(scope="module")
def embedder(offline_cache):
    return FastEmbedEmbedding(
        offline_models.EMBED_MODEL, cache_dir=str(offline_cache), local_files_only=True
    )


# --- FastEmbedRerank ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("batch_size", "max_batch_tokens"),
    [(1, None), (3, None), (64, None), (64, 1), (64, 200), (64, DEFAULT_MAX_BATCH_TOKENS)],
    ids=["batch-1", "batch-3", "batch-64", "tokens-1", "tokens-200", "defaults"],
)
def test_real_rerank_equals_fastembed_rerank(
    reranker, real_cross_encoder, batch_size, max_batch_tokens
):
    expected = list(real_cross_encoder.rerank(QUERY, TEXTS))
    batching = {"batch_size": batch_size, "max_batch_tokens": max_batch_tokens}
    out = reranker.model_copy(update=batching).postprocess_nodes(make_nodes(TEXTS), query_str=QUERY)
    with_text = [i for i, t in enumerate(TEXTS) if t]
    # The empty text is not scored: it comes last, with no score.
    assert [n.node.node_id for n in out] == [
        *(f"node-{i}" for i in sorted(with_text, key=lambda i: -expected[i])),
        f"node-{TEXTS.index('')}",
    ]
    assert out[-1].score is None
    by_id = {n.node.node_id: n.score for n in out}
    got = [by_id[f"node-{i}"] for i in with_text]
    np.testing.assert_allclose(got, [expected[i] for i in with_text], atol=1e-5, rtol=0)
    assert all(type(s) is float for s in got)
    assert len(set(expected)) > len(TEXTS) // 2  # the stand-in's scores do differ


def test_real_rerank_normalize_is_the_sigmoid_of_fastembeds_logits(reranker, real_cross_encoder):
    expected = [1 / (1 + math.exp(-x)) for x in real_cross_encoder.rerank(QUERY, TEXTS[:5])]
    normalized = reranker.model_copy(update={"normalize": True})
    scores = normalized.score(QUERY, TEXTS[:5])
    np.testing.assert_allclose(scores, expected, atol=1e-6, rtol=0)
    assert all(0 < s < 1 for s in scores)


def test_real_rerank_warns_about_truncated_pairs(reranker, real_cross_encoder):
    long_text = " ".join(MOVIES["descriptions"] * 4)  # well past the 512-token window
    texts = [TEXTS[0], long_text, TEXTS[1]]
    with pytest.warns(UserWarning, match=r"^1 of 3 query-document pairs .* 512-token window"):
        scores = reranker.score(QUERY, texts)
    np.testing.assert_allclose(
        scores, list(real_cross_encoder.rerank(QUERY, texts)), atol=1e-5, rtol=0
    )


def test_real_rerank_is_safe_from_several_threads(reranker):
    expected = reranker.score(QUERY, TEXTS)
    results: list[list[float]] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(3):
                results.append(reranker.score(QUERY, TEXTS))
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert len(results) == 12
    for scores in results:
        np.testing.assert_allclose(scores, expected, atol=1e-5, rtol=0)


def test_real_rerank_instances_share_one_loaded_model(reranker, offline_cache):
    twin = FastEmbedRerank(
        offline_models.STANDIN_RERANK_MODEL,
        top_n=3,
        cache_dir=str(offline_cache),
        local_files_only=True,
    )
    reranker.warm_up()
    twin.warm_up()
    assert twin._engine.loaded[1] is reranker._engine.loaded[1]


def test_real_rerank_per_request_instances_load_the_model_once(offline_cache):
    def serve_one_request() -> weakref.ref:
        reranker = FastEmbedRerank(
            offline_models.STANDIN_RERANK_MODEL,
            cache_dir=str(offline_cache),
            local_files_only=True,
            threads=1,  # a configuration no other test holds
        )
        reranker.postprocess_nodes(make_nodes(TEXTS[:3]), query_str=QUERY)
        return weakref.ref(reranker._engine.loaded[1])

    models = []
    for _ in range(10):
        models.append(serve_one_request())
        gc.collect()
    first = models[0]()
    assert first is not None
    assert all(m() is first for m in models)
    del first
    FastEmbedRerank.release_models()
    gc.collect()
    assert models[0]() is None  # freed


def test_real_rerank_async_equals_sync(reranker):
    nodes = make_nodes(TEXTS)
    sync = reranker.postprocess_nodes(nodes, query_str=QUERY)
    result = asyncio.run(reranker.apostprocess_nodes(nodes, query_str=QUERY))
    assert [(n.node.node_id, n.score) for n in result] == [(n.node.node_id, n.score) for n in sync]


def test_real_rerank_emits_balanced_events(reranker, events):
    out = reranker.postprocess_nodes(make_nodes(TEXTS[:3]), query_str=QUERY)
    start, end = (e for e in events if isinstance(e, ReRankStartEvent | ReRankEndEvent))
    assert isinstance(start, ReRankStartEvent)
    assert (start.model_name, start.query.query_str, start.top_n) == (reranker.model, QUERY, 3)
    assert isinstance(end, ReRankEndEvent)
    assert end.nodes == out


def test_real_rerank_loads_from_specific_model_path(standin_folder, real_cross_encoder):
    direct = FastEmbedRerank(
        offline_models.STANDIN_RERANK_MODEL, specific_model_path=str(standin_folder)
    )
    np.testing.assert_allclose(
        direct.score(QUERY, TEXTS[:4]),
        list(real_cross_encoder.rerank(QUERY, TEXTS[:4])),
        atol=1e-5,
        rtol=0,
    )


def test_real_rerank_missing_model_names_place_and_fixes(tmp_path):
    offline_models.register_standin()
    reranker = FastEmbedRerank(offline_models.STANDIN_RERANK_MODEL, cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="Could not load TextCrossEncoder model") as error:
        reranker.postprocess_nodes(make_nodes(["a"]), query_str=QUERY)
    message = str(error.value)
    assert str(tmp_path / "models--local--ms-marco-MiniLM-L-6-v2-untrained-head") in message
    assert "models import" in message


# --- FastEmbedEmbedding ---------------------------------------------------------------------


def test_real_embedding_equals_fastembed(embedder, real_text_embedding):
    docs = embedder.get_text_embedding_batch(TEXTS)
    query = embedder.get_query_embedding(QUERY)
    np.testing.assert_allclose(docs, list(real_text_embedding.passage_embed(TEXTS)), atol=1e-6)
    np.testing.assert_allclose(query, next(iter(real_text_embedding.query_embed(QUERY))), atol=1e-6)
    assert len(query) == embedder.embedding_size == 384
    assert all(type(x) is float for x in query + docs[0])


@pytest.mark.parametrize(
    ("batch_size", "embed_batch_size", "max_batch_tokens"),
    [(1, 3, None), (4, 2048, None), (64, 2048, 1), (64, 2048, 64), (64, 7, 512)],
    ids=["tiny", "onnx-batches", "one-text-a-run", "64-tokens", "default-budget"],
)
def test_real_embedding_batching_does_not_change_vectors(
    embedder, real_text_embedding, batch_size, embed_batch_size, max_batch_tokens
):
    texts = [*TEXTS, *MOVIES["descriptions"]]
    expected = list(real_text_embedding.passage_embed(texts))
    other = embedder.model_copy(
        update={
            "batch_size": batch_size,
            "embed_batch_size": embed_batch_size,
            "max_batch_tokens": max_batch_tokens,
        }
    )
    np.testing.assert_allclose(other.get_text_embedding_batch(texts), expected, atol=1e-5)


def test_real_embedding_parallel_workers_match(embedder, offline_cache):
    parallel = FastEmbedEmbedding(
        offline_models.EMBED_MODEL,
        cache_dir=str(offline_cache),
        local_files_only=True,
        batch_size=4,
        parallel=2,
    )
    np.testing.assert_allclose(
        parallel.get_text_embedding_batch(TEXTS),
        embedder.get_text_embedding_batch(TEXTS),
        atol=1e-5,
    )


def test_real_embedding_missing_model_names_place_and_fixes(tmp_path):
    embedder = FastEmbedEmbedding("BAAI/bge-small-en-v1.5", cache_dir=str(tmp_path))
    assert embedder.embedding_size == 384  # known without the model
    with pytest.raises(ValueError, match="Could not load TextEmbedding model") as error:
        embedder.get_query_embedding(QUERY)
    assert str(tmp_path / "models--qdrant--bge-small-en-v1.5-onnx-q") in str(error.value).lower()
    assert "models import" in str(error.value)


def test_real_embedding_async_equals_sync(embedder):
    async def main():
        return await asyncio.gather(
            embedder.aget_query_embedding(QUERY), embedder.aget_text_embedding_batch(TEXTS[:3])
        )

    query, docs = asyncio.run(main())
    assert query == embedder.get_query_embedding(QUERY)
    assert docs == embedder.get_text_embedding_batch(TEXTS[:3])
