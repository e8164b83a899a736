"""FastEmbedEmbedding's behaviour, on a fake engine that records its calls."""

from __future__ import annotations

import asyncio
import json
import pickle
from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest

from conftest import ROUND_TRIPS
from llama_index_fastembed_rerank import FastEmbedEmbedding, FastEmbedSparseEmbedding


def test_embedding_defaults():
    embed = FastEmbedEmbedding()
    assert embed.model_name == "BAAI/bge-small-en-v1.5"
    assert embed.batch_size == 64
    assert embed.max_batch_tokens == 512
    assert embed.parallel is None
    assert FastEmbedEmbedding.class_name() == "FastEmbedEmbedding"


def test_embedding_accepts_model_name_positionally():
    assert FastEmbedEmbedding("sentence-transformers/all-MiniLM-L6-v2").model_name == (
        "sentence-transformers/all-MiniLM-L6-v2"
    )


@pytest.mark.parametrize(
    ("model_name", "size"),
    [("BAAI/bge-small-en-v1.5", 384), ("BAAI/bge-base-en-v1.5", 768)],
    ids=["bge-small", "bge-base"],
)
def test_embedding_size_is_known_without_loading(fake_embedding, model_name, size):
    assert FastEmbedEmbedding(model_name).embedding_size == size
    assert fake_embedding.instances == []


def test_embedding_routes_queries_and_documents(fake_embedding):
    embed = FastEmbedEmbedding(batch_size=32, parallel=2)
    query = embed.get_query_embedding("q?")
    docs = embed.get_text_embedding_batch(["doc one", "doc two"])
    single = embed.get_text_embedding("d")
    assert query == [2.0, 1.0, 0.5]
    assert docs == [[7.0, 2.0, 0.5], [7.0, 2.0, 0.5]]
    assert single == [1.0, 2.0, 0.5]
    assert all(type(x) is float for x in query + docs[0])
    calls = fake_embedding.instances[0].calls
    assert [(name, texts) for name, texts, _ in calls] == [
        ("query_embed", ["q?"]),
        ("passage_embed", ["doc one", "doc two"]),
        ("passage_embed", ["d"]),
    ]
    assert calls[1][2] == {"batch_size": 32, "parallel": 2}


def test_embedding_hands_fastembed_whole_batches(fake_embedding):
    FastEmbedEmbedding().get_text_embedding_batch([f"text {i}" for i in range(25)])
    (call,) = fake_embedding.instances[0].calls
    assert len(call[1]) == 25  # LlamaIndex's default would have cut it into 10 + 10 + 5


def test_embedding_runs_texts_by_length_and_returns_them_in_input_order(fake_embedding):
    texts = ["medium text", "a", "the longest text of all", "bb"]
    vectors = FastEmbedEmbedding().get_text_embedding_batch(texts)
    assert [v[0] for v in vectors] == [len(t) for t in texts]
    (call,) = fake_embedding.instances[0].calls
    assert call[1] == sorted(texts, key=len)


class WordTokenizer:
    """A text's tokens are its words (fastembed's tokenizer pads; the mask says what is real)."""

    def encode_batch(self, texts):
        longest = max(len(t.split()) for t in texts)
        return [
            SimpleNamespace(
                ids=[1] * longest,
                attention_mask=[1] * len(t.split()) + [0] * (longest - len(t.split())),
                overflowing=[],  # no window: nothing is cut
            )
            for t in texts
        ]


def with_tokenizer(embed, fake_embedding):
    embed.warm_up()
    (engine,) = fake_embedding.instances
    engine.model = SimpleNamespace(tokenizer=WordTokenizer())
    return engine


def test_embedding_batches_by_tokens_within_both_limits(fake_embedding):
    embed = FastEmbedEmbedding(batch_size=3, max_batch_tokens=8)
    engine = with_tokenizer(embed, fake_embedding)
    words = [5, 1, 2, 2, 4, 1, 9]
    texts = [" ".join([f"w{i}"] * n) for i, n in enumerate(words)]
    vectors = embed.get_text_embedding_batch(texts)
    assert [v[0] for v in vectors] == [len(t) for t in texts]  # back in input order
    batches = [[len(t.split()) for t in call[1]] for call in engine.calls]
    # Shortest first; at most 3 texts and 8 padded tokens a run, unless one text is longer.
    assert batches == [[1, 1, 2], [2, 4], [5], [9]]


def test_embedding_parallel_workers_get_one_call(fake_embedding):
    embed = FastEmbedEmbedding(batch_size=2, max_batch_tokens=2, parallel=2)
    engine = with_tokenizer(embed, fake_embedding)
    embed.get_text_embedding_batch(["a b c", "a", "a b"])
    assert [(c[1], c[2]) for c in engine.calls] == [
        (["a", "a b", "a b c"], {"batch_size": 2, "parallel": 2})
    ]


def test_embedding_forwards_engine_options_and_nothing_else(fake_embedding):
    embed = FastEmbedEmbedding(
        "BAAI/bge-base-en-v1.5",
        cache_dir="/models",
        threads=2,
        embed_batch_size=100,
        batch_size=16,
        model_kwargs={"enable_cpu_mem_arena": False},
    )
    embed.warm_up()
    (engine,) = fake_embedding.instances
    assert engine.model_name == "BAAI/bge-base-en-v1.5"
    assert engine.kwargs == {
        "cache_dir": "/models",
        "threads": 2,
        "providers": None,
        "cuda": "auto",
        "device_ids": None,
        "local_files_only": False,
        "specific_model_path": None,
        "enable_cpu_mem_arena": False,
    }


def test_embedding_async_variants_match_sync(fake_embedding):
    embed = FastEmbedEmbedding()

    async def main():
        return (
            await embed.aget_query_embedding("q"),
            await embed.aget_text_embedding("t"),
            await embed.aget_text_embedding_batch(["a", "bb"]),
        )

    assert asyncio.run(main()) == (
        embed.get_query_embedding("q"),
        embed.get_text_embedding("t"),
        embed.get_text_embedding_batch(["a", "bb"]),
    )


NON_DEFAULTS = {
    "model_name": "BAAI/bge-base-en-v1.5",
    "batch_size": 8,
    "max_batch_tokens": 100,
    "parallel": 0,
    "embed_batch_size": 64,
    "cache_dir": "/models",
    "threads": 1,
    "providers": ["CPUExecutionProvider"],
    "cuda": False,
    "device_ids": [0],
    "local_files_only": True,
    "specific_model_path": "/models/bge",
    "model_kwargs": {"enable_cpu_mem_arena": False},
    "doc_embed_type": "default",
    "quantize": "int8",
}


@ROUND_TRIPS
def test_embedding_round_trip_keeps_every_option(fake_embedding, round_trip):
    inherited = {"callback_manager", "num_workers", "embeddings_cache", "rate_limiter"}
    # lazy_load=False loads the model when the instance is made: its round trip is below.
    loads = {"lazy_load"}
    assert set(FastEmbedEmbedding.model_fields) - set(NON_DEFAULTS) == inherited | loads
    embed = FastEmbedEmbedding(**NON_DEFAULTS)
    again = round_trip(embed)
    for name, value in NON_DEFAULTS.items():
        assert json.dumps(getattr(again, name), default=str) == json.dumps(value, default=str), name
    assert fake_embedding.instances == []


def test_embedding_shares_one_model_per_options(fake_embedding):
    for embed in (FastEmbedEmbedding(), FastEmbedEmbedding(batch_size=8), FastEmbedEmbedding()):
        embed.get_query_embedding("q")
    assert len(fake_embedding.instances) == 1
    FastEmbedEmbedding(threads=1).get_query_embedding("q")
    assert len(fake_embedding.instances) == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"model_name": "BAAI/bge-smal-en-v1.5"}, "Did you mean 'BAAI/bge-small-en-v1.5'"),
        ({"batch_size": 0}, "batch_size"),
        ({"parallel": -1}, "parallel"),
        ({"embed_batch_size": 0}, "embed_batch_size"),
        ({"model_kwargs": {"cache_dir": "/x"}}, r"pass cache_dir=\.\.\. directly"),
        ({"doc_embed_typ": "passage"}, "doc_embed_typ"),
        ({"doc_embed_type": "query"}, "doc_embed_type"),
        ({"lazy_load": "later"}, "lazy_load"),
    ],
    ids=[
        "unknown-model",
        "batch_size",
        "parallel",
        "embed_batch_size",
        "duplicate",
        "unknown",
        "doc_embed_type",
        "lazy_load",
    ],
)
def test_embedding_rejects_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        FastEmbedEmbedding(**options)


def test_embedding_runs_on_a_magicmock_a_test_patches_in():
    # The haystack pattern in a user's own unit tests: fastembed's class replaced by a mock.
    with mock.patch("llama_index_fastembed_rerank.embedding.TextEmbedding") as engine_class:
        engine = engine_class.return_value
        engine.passage_embed.return_value = iter([np.array([0.5, 1.5]), np.array([2.5, 3.5])])
        engine.query_embed.return_value = iter([np.array([1.0, 0.0])])
        embed = FastEmbedEmbedding("sentence-transformers/all-MiniLM-L6-v2", threads=1)
        embed.warm_up()
        assert embed.get_text_embedding_batch(["a", "b"]) == [[0.5, 1.5], [2.5, 3.5]]
        assert embed.get_query_embedding("q") == [1.0, 0.0]
    engine_class.assert_called_once()
    assert engine_class.call_args.args == ("sentence-transformers/all-MiniLM-L6-v2",)
    assert engine_class.call_args.kwargs["threads"] == 1
    engine.passage_embed.assert_called_once_with(["a", "b"], batch_size=64, parallel=None)


def test_embedding_each_patched_mock_is_a_model_of_its_own():
    vectors = []
    for value in (1.0, 2.0):
        with mock.patch("llama_index_fastembed_rerank.embedding.TextEmbedding") as engine_class:
            engine_class.return_value.query_embed.return_value = iter([np.array([value])])
            vectors.append(FastEmbedEmbedding().get_query_embedding("q"))
    assert vectors == [[1.0], [2.0]]  # the second mock was loaded, not the first one reused


def test_embedding_doc_embed_type_chooses_fastembeds_document_method(fake_embedding):
    passage = FastEmbedEmbedding()
    default = FastEmbedEmbedding(doc_embed_type="default")
    assert passage.doc_embed_type == "passage"  # this class's behaviour from the start
    assert passage.get_text_embedding_batch(["ab"]) == [[2.0, 2.0, 0.5]]
    assert default.get_text_embedding_batch(["ab"]) == [[2.0, 3.0, 0.5]]
    assert default.get_query_embedding("ab") == [2.0, 1.0, 0.5]  # queries: query_embed
    (engine,) = fake_embedding.instances  # one model: the option does not change the engine
    assert [name for name, _, _ in engine.calls] == ["passage_embed", "embed", "query_embed"]


def test_embedding_lazy_load_false_loads_when_made(fake_embedding):
    FastEmbedEmbedding()
    assert fake_embedding.instances == []  # the default: on first use
    FastEmbedEmbedding(lazy_load=False, threads=1)
    assert [e.kwargs["threads"] for e in fake_embedding.instances] == [1]


def test_embedding_lazy_load_false_on_a_model_that_cannot_load_fails_when_made(tmp_path):
    with pytest.raises(ValueError, match=r"has no model_optimized\.onnx"):
        FastEmbedEmbedding(lazy_load=False, specific_model_path=str(tmp_path))


@ROUND_TRIPS
def test_embedding_round_trip_keeps_lazy_load(fake_embedding, round_trip):
    embed = FastEmbedEmbedding(lazy_load=False)
    assert round_trip(embed).lazy_load is False
    assert len(fake_embedding.instances) == 1  # the copy shares the model loaded first


def test_embedding_construction_and_serialization_never_load_by_default(fake_embedding):
    embed = FastEmbedEmbedding(threads=1)
    FastEmbedEmbedding.from_dict(embed.to_dict())
    FastEmbedEmbedding.from_json(embed.to_json())
    pickle.loads(pickle.dumps(embed))
    assert fake_embedding.instances == []


def test_embedding_classes_can_be_subclassed(fake_embedding, fake_sparse):
    class Dense(FastEmbedEmbedding):
        pass

    class Sparse(FastEmbedSparseEmbedding):
        pass

    texts = ["a document", "another one"]
    assert Dense().get_text_embedding_batch(texts) == (
        FastEmbedEmbedding().get_text_embedding_batch(texts)
    )
    assert Sparse().get_text_embedding_batch(texts) == (
        FastEmbedSparseEmbedding().get_text_embedding_batch(texts)
    )
    assert [name for name, *_ in fake_sparse.instances[0].calls] == ["passage_embed"] * 2
