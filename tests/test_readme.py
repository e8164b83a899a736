"""The README's commands are the ones CI runs, and its option tables are the fields' own text."""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path

import pytest

from llama_index_fastembed_rerank import (
    FastEmbedEmbedding,
    FastEmbedRerank,
    FastEmbedSparseEmbedding,
)
from llama_index_fastembed_rerank.engine import FastEmbedEngineOptions

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
# The caption line above each option table, and the options it documents.
TABLES = {
    "`FastEmbedRerank`:": (FastEmbedRerank, set(FastEmbedEngineOptions.model_fields)),
    "`FastEmbedEmbedding`:": (FastEmbedEmbedding, set(FastEmbedEngineOptions.model_fields)),
    "`FastEmbedSparseEmbedding`:": (
        FastEmbedSparseEmbedding,
        set(FastEmbedEngineOptions.model_fields),
    ),
    "Engine options of all three, under fastembed's own names:": (FastEmbedEngineOptions, set()),
}
# Fields of LlamaIndex's base classes, documented by LlamaIndex.
INHERITED = {"callback_manager", "num_workers", "embeddings_cache", "rate_limiter"}


def option_tables(text: str) -> dict[str, dict[str, list[str]]]:
    """Map each table's caption to its rows: option name -> [type, default, meaning]."""
    tables: dict[str, dict[str, list[str]]] = {}
    caption = ""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("| parameter | type | default | meaning |"):
            caption = next(p for p in reversed(lines[:i]) if p.strip())
            tables[caption] = {}
        elif caption and line.startswith("| `"):
            cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]
            tables[caption][cells[0].strip("`")] = cells[1:]
        elif not line.startswith("|"):
            caption = ""
    return tables


def shown(value: object) -> set[str]:
    """How the README may show a default value."""
    if isinstance(value, Enum):
        return {f"`{type(value).__name__}.{value.name}`", f'`"{value.value}"`'}
    if isinstance(value, str):
        return {f'`"{value}"`'}
    return {f"`{value!r}`"}


def test_ci_runs_the_readme_test_command():
    (command,) = [
        line
        for line in README.splitlines()
        if line.startswith("python3 -m venv") and "pytest" in line
    ]
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()


@pytest.mark.parametrize("caption", list(TABLES), ids=["rerank", "embedding", "sparse", "engine"])
def test_readme_option_table_is_the_fields_text(caption):
    cls, elsewhere = TABLES[caption]
    rows = option_tables(README)[caption]
    fields = {
        name: field
        for name, field in cls.model_fields.items()
        if name not in INHERITED and name not in elsewhere
    }
    assert set(rows) == set(fields)
    for name, field in fields.items():
        _, default, meaning = rows[name]
        assert meaning == field.description, name
        assert default in shown(field.get_default(call_default_factory=True)), name


def test_readme_table_parser_reads_every_cell():
    table = option_tables(
        "Caption:\n\n| parameter | type | default | meaning |\n|---|\n"
        "| `a` | int \\| None | `1` | One, two. |\n\nafter\n| `b` | x | y | z |"
    )
    assert table == {"Caption:": {"a": ["int \\| None", "`1`", "One, two."]}}


@pytest.mark.parametrize(
    "cls",
    [FastEmbedRerank, FastEmbedEmbedding, FastEmbedSparseEmbedding],
    ids=lambda c: c.__name__,
)
def test_docstring_lists_every_option_once_from_its_field(cls):
    doc = cls.__doc__
    for name, field in cls.model_fields.items():
        if name in INHERITED:
            continue
        assert doc.count(f"    {name}: ") == 1, name
        first_words = " ".join(field.description.split()[:3])
        assert f"{name}: {first_words}" in " ".join(doc.split()), name
    assert doc.index("Args:") < doc.index("Example:")
