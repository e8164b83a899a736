"""Bad values at the API of every public class: each gets a clear error that names the
argument.

Load-time faults (broken files, unusable caches) are in test_broken_files.py.
"""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from llama_index_fastembed_rerank import (
    FastEmbedEmbedding,
    FastEmbedRerank,
    FastEmbedSparseEmbedding,
)

CLASSES = pytest.mark.parametrize(
    "cls",
    [FastEmbedRerank, FastEmbedEmbedding, FastEmbedSparseEmbedding],
    ids=["rerank", "embedding", "sparse"],
)
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
def test_model_validate_takes_model_dump_back(cls):
    instance = cls(threads=2)
    assert cls.model_validate(instance.model_dump()).model_dump() == instance.model_dump()
    with pytest.raises(ValidationError, match="does not describe a"):
        cls.model_validate({**instance.model_dump(), "class_name": "SomethingElse"})


def test_sparse_refused_stopword_folder_leaves_the_instance_as_it_was(tmp_path):
    sparse = FastEmbedSparseEmbedding()
    with pytest.raises(ValidationError, match="no stopword list"):
        sparse.specific_model_path = str(tmp_path)
    assert sparse.specific_model_path is None
