"""FastEmbedEmbedding in place of llama-index-embeddings-fastembed's class, and in ingestion caches.

On real weights (all-MiniLM-L6-v2, built offline) and the real official class.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from llama_index.core.ingestion import IngestionCache, IngestionPipeline
from llama_index.core.ingestion.pipeline import get_transformation_hash
from llama_index.core.schema import TextNode
from llama_index.core.storage.kvstore import SimpleKVStore
from llama_index.embeddings.fastembed import FastEmbedEmbedding as OfficialFastEmbedEmbedding

import offline_models
from llama_index_fastembed_rerank import FastEmbedEmbedding
from llama_index_fastembed_rerank.embedding import VECTOR_NEUTRAL_OPTIONS

TEXTS = [
    "In 1431, Jeanne d'Arc is placed on trial on charges of heresy.",
    "Two musicians flee the state after they witness a mob hit.",
    "A princess is rescued by seven dwarf miners.",
]

# A value other than the default for each option that to_dict() writes.
CHANGED = {
    "model_name": "BAAI/bge-base-en-v1.5",
    "doc_embed_type": "default",
    "specific_model_path": "/models/bge",
    "model_kwargs": {"enable_cpu_mem_arena": False},
    "cache_dir": "/models",
    "local_files_only": True,
    "threads": 1,
    "providers": [("CPUExecutionProvider", {"arena_extend_strategy": "kSameAsRequested"})],
    "cuda": False,
    "device_ids": [0],
    "batch_size": 8,
    "max_batch_tokens": None,
    "parallel": 0,
    "embed_batch_size": 16,
    "num_workers": 2,
    "embeddings_cache": SimpleKVStore(),
    "lazy_load": True,  # its default; False would load at construction
    "quantize": "int8",
}
# Options LlamaIndex leaves out of to_dict() itself.
NOT_WRITTEN = {"callback_manager", "rate_limiter"}


def test_every_option_has_a_changed_value():
    assert set(CHANGED) == set(FastEmbedEmbedding.model_fields) - NOT_WRITTEN


@pytest.mark.parametrize("option", sorted(CHANGED))
def test_ingestion_cache_key_changes_with_what_can_change_a_vector(fake_embedding, option):
    nodes = [TextNode(text=t) for t in TEXTS]
    base = FastEmbedEmbedding(lazy_load=False) if option == "lazy_load" else FastEmbedEmbedding()
    changed = FastEmbedEmbedding(**{option: CHANGED[option]})
    same = get_transformation_hash(nodes, base) == get_transformation_hash(nodes, changed)
    assert same == (option in VECTOR_NEUTRAL_OPTIONS), option


def test_to_dict_still_holds_every_option(fake_embedding):
    options = {k: v for k, v in CHANGED.items() if k != "embeddings_cache"}
    data = FastEmbedEmbedding(**options).to_dict()
    assert {k: data[k] for k in options} == options
    assert json.loads(json.dumps(data))["threads"] == 1
    assert dict(data)["batch_size"] == 8  # the plain dict's text shows every option
    assert "batch_size" in str(dict(data))
    assert "batch_size" not in str(data)  # the text LlamaIndex hashes does not


@pytest.fixture
def embedded(monkeypatch) -> list[list[str]]:
    """Every batch of texts FastEmbedEmbedding embeds during the test."""
    calls: list[list[str]] = []
    embed = FastEmbedEmbedding._get_text_embeddings

    def counted(self, texts):
        calls.append(list(texts))
        return embed(self, texts)

    monkeypatch.setattr(FastEmbedEmbedding, "_get_text_embeddings", counted)
    return calls


def test_real_ingestion_cache_reuses_vectors_across_run_options(offline_cache, embedded):
    cache = IngestionCache()
    real = {"cache_dir": str(offline_cache), "local_files_only": True}

    def run(**options):
        embed_model = FastEmbedEmbedding(offline_models.EMBED_MODEL, **options)
        pipeline = IngestionPipeline(transformations=[embed_model], cache=cache)
        return [n.embedding for n in pipeline.run(nodes=[TextNode(text=t) for t in TEXTS])]

    first = run(**real)
    assert embedded == [TEXTS]
    tuned = run(
        cache_dir=f"{offline_cache}/",
        local_files_only=False,
        threads=1,
        batch_size=2,
        max_batch_tokens=None,
        embed_batch_size=2,
    )
    assert embedded == [TEXTS]  # nothing embedded again
    assert tuned == first
    again = run(**real, doc_embed_type="default")
    assert embedded == [TEXTS, TEXTS]  # another way of embedding documents: embedded again
    np.testing.assert_allclose(again, first, atol=1e-6)  # the same for this model


def test_real_official_to_dict_loads_with_the_same_meaning(offline_cache, tmp_path):
    options = {"cache_dir": str(offline_cache), "threads": 1, "local_files_only": True}
    for doc_embed_type in ("default", "passage"):
        official = OfficialFastEmbedEmbedding(
            offline_models.EMBED_MODEL, doc_embed_type=doc_embed_type, **options
        )
        data = official.to_dict()
        ours = FastEmbedEmbedding.from_dict(data)
        assert ours.doc_embed_type == doc_embed_type
        assert (ours.cache_dir, ours.threads) == (str(offline_cache), 1)
        assert ours.embed_batch_size == official.embed_batch_size
        np.testing.assert_allclose(
            ours.get_text_embedding_batch(TEXTS),
            official.get_text_embedding_batch(TEXTS),
            atol=1e-6,
        )
        np.testing.assert_allclose(
            ours.get_query_embedding(TEXTS[0]), official.get_query_embedding(TEXTS[0]), atol=1e-6
        )
        path = tmp_path / f"{doc_embed_type}.json"
        path.write_text(official.to_json())
        assert FastEmbedEmbedding.from_json(path.read_text()).doc_embed_type == doc_embed_type


def test_real_official_options_construct_ours(offline_cache):
    ours = FastEmbedEmbedding(
        model_name=offline_models.EMBED_MODEL,
        cache_dir=str(offline_cache),
        threads=1,
        doc_embed_type="passage",
        providers=["CPUExecutionProvider"],
        lazy_load=False,
        local_files_only=True,
    )
    assert ours._engine.loaded is not None  # lazy_load=False: loaded when made
    assert len(ours.get_text_embedding("Jeanne d'Arc")) == 384
