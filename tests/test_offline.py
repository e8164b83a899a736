"""Importing a local model directory into fastembed's cache, by function and by command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import offline_models
from llama_index_fastembed_rerank import FastEmbedEmbedding, FastEmbedRerank
from llama_index_fastembed_rerank.offline import import_model

EMBED = offline_models.EMBED_MODEL


@pytest.fixture(scope="module")
def encoder_dir(offline_cache):
    return offline_cache.parent / "all-MiniLM-L6-v2"


def test_import_lets_unchanged_code_load_by_name(encoder_dir, real_text_embedding, tmp_path):
    snapshot = import_model(encoder_dir, EMBED, cache_dir=tmp_path)
    repo = tmp_path / "models--Qdrant--all-MiniLM-L6-v2-onnx"
    assert snapshot.parent == repo / "snapshots"
    assert (repo / "refs" / "main").read_text() == snapshot.name
    # HF_HUB_OFFLINE is set for the tests: this load cannot have used a network.
    vector = FastEmbedEmbedding(EMBED, cache_dir=str(tmp_path)).get_query_embedding("hello")
    np.testing.assert_allclose(vector, next(iter(real_text_embedding.query_embed("hello"))))


def test_import_uses_fastembeds_default_cache(encoder_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FASTEMBED_CACHE_PATH", str(tmp_path))
    snapshot = import_model(encoder_dir, EMBED)
    assert snapshot.is_relative_to(tmp_path)
    assert len(FastEmbedEmbedding(EMBED).get_text_embedding("x")) == 384


def test_import_again_is_a_no_op_and_new_files_replace_in_one_step(encoder_dir, tmp_path):
    first = import_model(encoder_dir, EMBED, cache_dir=tmp_path / "cache")
    assert import_model(encoder_dir, EMBED, cache_dir=tmp_path / "cache") == first
    changed = shutil.copytree(encoder_dir, tmp_path / "changed")
    (changed / "config.json").write_text('{"changed": true}')
    second = import_model(changed, EMBED, cache_dir=tmp_path / "cache")
    assert second != first
    assert first.is_dir()  # the old snapshot is untouched until nothing points at it
    assert (second.parents[1] / "refs" / "main").read_text() == second.name
    assert not list(second.parent.glob(".import-*"))


def test_import_accepts_the_model_file_at_the_top_level(offline_cache, tmp_path):
    offline_models.register_standin()
    flat = tmp_path / "flat"
    flat.mkdir()
    standin = offline_cache.parent / "standin-cross-encoder"
    for f in standin.iterdir():
        if f.is_file():
            shutil.copy(f, flat / f.name)
    shutil.copy(standin / "onnx" / "model.onnx", flat / "model.onnx")
    snapshot = import_model(flat, offline_models.STANDIN_RERANK_MODEL, cache_dir=tmp_path / "c")
    assert (snapshot / "onnx" / "model.onnx").is_file()
    reranker = FastEmbedRerank(offline_models.STANDIN_RERANK_MODEL, cache_dir=str(tmp_path / "c"))
    assert len(reranker.score("q", ["a", "b"])) == 2


def test_import_missing_files_are_named_and_nothing_is_written(encoder_dir, tmp_path):
    partial = shutil.copytree(encoder_dir, tmp_path / "partial")
    (partial / "tokenizer.json").unlink()
    (partial / "model.onnx").unlink()
    with pytest.raises(ValueError, match=r"lacks model\.onnx, tokenizer\.json") as error:
        import_model(partial, EMBED, cache_dir=tmp_path / "cache")
    assert "Qdrant/all-MiniLM-L6-v2-onnx" in str(error.value)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize(
    ("model_name", "message"),
    [
        ("sentence-transformers/all-MiniLM-L6", "Did you mean 'sentence-transformers/all-MiniLM"),
        ("nobody/nothing", "No fastembed model class supports 'nobody/nothing'"),
    ],
    ids=["typo", "unknown"],
)
def test_import_unknown_model_names_the_closest(encoder_dir, tmp_path, model_name, message):
    with pytest.raises(ValueError, match=message):
        import_model(encoder_dir, model_name, cache_dir=tmp_path)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llama_index_fastembed_rerank", *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        check=False,
    )


def test_cli_import_model(encoder_dir, tmp_path):
    done = _cli("import-model", str(encoder_dir), EMBED, "--cache-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"Imported {EMBED} into {tmp_path}")
    assert (tmp_path / "models--Qdrant--all-MiniLM-L6-v2-onnx" / "refs" / "main").is_file()


def test_cli_bad_source_exits_2_with_the_reason(tmp_path):
    done = _cli("import-model", str(tmp_path / "nowhere"), EMBED, "--cache-dir", str(tmp_path))
    assert done.returncode == 2
    assert "is not a directory" in done.stderr
    assert done.stdout == ""


def test_missing_model_without_a_hub_fails_at_once_with_the_offline_fix(tmp_path):
    # A hub address that refuses at once, so this holds on machines with internet access too.
    # Before the probe, fastembed retried for ~40 s (sleeping 3, 9 and 27 s) before failing.
    code = (
        "from llama_index_fastembed_rerank import FastEmbedEmbedding\n"
        f"FastEmbedEmbedding('BAAI/bge-small-en-v1.5', cache_dir={str(tmp_path)!r}).warm_up()\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "HF_HUB_OFFLINE"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={**env, "HF_ENDPOINT": "http://127.0.0.1:9"},
        timeout=30,
        check=False,
    )
    assert done.returncode == 1
    assert "sleeping" not in done.stderr  # fastembed's retry loop never ran
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("ValueError: Could not load TextEmbedding model 'BAAI/bge-small")
    assert "the model hub could not be reached (ConnectError" in last
    assert "set HF_HUB_OFFLINE=1 or local_files_only=True" in last


def test_missing_model_in_offline_mode_does_not_blame_the_hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="HF_HUB_OFFLINE=1 kept fastembed from asking") as error:
        FastEmbedEmbedding("BAAI/bge-small-en-v1.5", cache_dir=str(tmp_path)).warm_up()
    assert "could not be reached" not in str(error.value)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(ValueError, match="local_files_only=True kept fastembed from asking"):
        FastEmbedEmbedding(
            "BAAI/bge-small-en-v1.5", cache_dir=str(tmp_path), local_files_only=True
        ).warm_up()
