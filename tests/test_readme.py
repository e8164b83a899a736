"""The README's commands are the ones CI runs, and its option tables list every field."""

from __future__ import annotations

from pathlib import Path

import pytest

from llama_index_fastembed_rerank import (
    FastEmbedEmbedding,
    FastEmbedRerank,
    FastEmbedSparseEmbedding,
)

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


def test_ci_runs_the_readme_test_command():
    (command,) = [
        line
        for line in README.splitlines()
        if line.startswith("python3 -m venv") and "pytest" in line
    ]
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()


@pytest.mark.parametrize(
    "cls",
    [FastEmbedRerank, FastEmbedEmbedding, FastEmbedSparseEmbedding],
    ids=lambda c: c.__name__,
)
def test_readme_documents_every_option(cls):
    inherited = {"callback_manager", "num_workers", "embeddings_cache", "rate_limiter"}
    for name in set(cls.model_fields) - inherited:
        assert f"| `{name}` |" in README, name
