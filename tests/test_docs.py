"""The README's and docs/'s code runs as pasted and prints what it shows; tables list every option.

The pages name the real default reranker, Xenova/ms-marco-MiniLM-L-6-v2; here it is a LOAN
(``loan_cache``: the untrained stand-in's files under that name), so they show no reranked
output and these tests only run the code that reranks.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from enum import Enum
from pathlib import Path

import pytest

from llama_index_fastembed_rerank import (
    FastEmbedEmbedding,
    FastEmbedRerank,
    FastEmbedSparseEmbedding,
)
from llama_index_fastembed_rerank.options import FastEmbedEngineOptions

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()
# Every page a user reads, by its path from the repository's root.
PAGES = {
    path.relative_to(ROOT).as_posix(): path.read_text()
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
}
CONFIGURATION = PAGES["docs/configuration.md"]
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


def _blocks(language: str, page: str | None = None) -> list[tuple[str, str]]:
    """Each fenced block of ``language`` (in ``page``, else in every page), with its place."""
    found = []
    for name, text in PAGES.items():
        if page is not None and name != page:
            continue
        for match in re.finditer(rf"^```{language}\n(.*?)^```$", text, re.MULTILINE | re.DOTALL):
            headings = re.findall(r"^## (.+)$", text[: match.start()], re.MULTILINE)
            found.append((f"{name} {headings[-1] if headings else 'top'}", match.group(1)))
    return found


def _commands(block: str) -> list[tuple[str, str]]:
    """Split a console block into its ``$`` commands and the output shown after each."""
    pairs: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            pairs.append((line[2:], []))
        else:
            pairs[-1][1].append(line)
    return [(command, "\n".join(output)) for command, output in pairs]


def _env(loan_cache: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "FASTEMBED_CACHE_PATH": str(loan_cache),
        # the console scripts installed beside this Python, as after `pip install`
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **extra,
    }


PYTHON_BLOCKS = _blocks("python")


@pytest.mark.parametrize(
    "code",
    [code for _, code in PYTHON_BLOCKS],
    ids=[re.sub(r"\W+", "-", section).strip("-").lower() for section, _ in PYTHON_BLOCKS],
)
def test_python_block_runs_as_pasted(code, loan_cache, tmp_path):
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,  # what a block writes stays in the test's folder
        env=_env(loan_cache),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    if "print(" in code:
        assert done.stdout.strip()


CONSOLE_PAGES = sorted({place.split()[0] for place, _ in _blocks("console")})


@pytest.mark.parametrize("page", CONSOLE_PAGES)
def test_console_commands_print_what_the_page_shows(loan_cache, tmp_path, page):
    # Run where they were run: a clone (here its examples/) and a per-user data folder, one
    # session a page.
    demo, data = tmp_path / "demo", tmp_path / "data"
    demo.mkdir()
    (demo / "examples").symlink_to(ROOT / "examples")
    places = {str(demo): "/root/demo", str(data): "/root/.local/share", str(Path.home()): "/root"}
    commands = [pair for _, block in _blocks("console", page) for pair in _commands(block)]
    assert commands
    for command, shown in commands:
        # One pipe for both streams, unbuffered: lines come in the order a terminal shows.
        done = subprocess.run(
            command,
            shell=True,
            cwd=demo,
            env=_env(loan_cache, XDG_DATA_HOME=str(data), PYTHONUNBUFFERED="1"),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=300,
            check=False,
        )
        printed = done.stdout.rstrip("\n")
        for here, there in places.items():
            printed = printed.replace(here, there)
        assert _rounded(printed) == _rounded(shown), command


def _rounded(text: str) -> str:
    # Scores printed in full (JSON) may differ in their last digits between CPUs, and chunk
    # ids are derived from the absolute path.
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", text)
    return re.sub(r"(\d\.\d{4})\d+", r"\1", text)


def test_ci_runs_the_readme_test_command():
    (command,) = [
        line
        for line in README.splitlines()
        if line.startswith("python3 -m venv") and "pytest" in line
    ]
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()


@pytest.mark.parametrize("caption", list(TABLES), ids=["rerank", "embedding", "sparse", "engine"])
def test_option_table_is_the_fields_text(caption):
    cls, elsewhere = TABLES[caption]
    rows = option_tables(CONFIGURATION)[caption]
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


@pytest.mark.parametrize("page", list(PAGES))
def test_page_links_lead_to_files(page):
    base = (ROOT / page).parent
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", PAGES[page]):
        assert (base / target).exists(), f"{page} links to {target}, which does not exist"


def test_readme_links_every_docs_page():
    for page in PAGES:
        if page.startswith("docs/"):
            assert f"]({page})" in README, page
