"""Faults at load time, on real model files: damaged files, a graph of the wrong kind of model,
caches that cannot be used. Each ends in a ValueError that names the model, the file or folder,
and the fix, with fastembed's, onnxruntime's or the tokenizer's own error as its cause.
"""

from __future__ import annotations

import errno
import re
from pathlib import Path

import onnx
import pytest

import offline_models
from llama_index_fastembed_rerank import (
    FastEmbedEmbedding,
    FastEmbedRerank,
    FastEmbedSparseEmbedding,
)

# A Git LFS pointer: what a clone without `git lfs pull` leaves in a model's place.
LFS_POINTER = (
    b"version https://git-lfs.github.com/spec/v1\n"
    b"oid sha256:4ed1c04e8ee2bd6f4e0d7b3e0e1f3d8c7b1a2e0d9f8e7d6c5b4a39281706f5e4\n"
    b"size 90881502\n"
)


def linked_copy(source: Path, dest: Path) -> Path:
    """A folder of links to ``source``'s files (cheap), whose files a test may then replace."""
    for path in source.rglob("*"):
        if path.is_file():
            (dest / path.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            (dest / path.relative_to(source)).symlink_to(path.resolve())
    return dest


def damage(path: Path, content: bytes | None = None) -> None:
    """Put ``content`` (else the file's first 4 KiB) in place of the file or link at ``path``."""
    original = path.resolve().read_bytes()
    path.unlink()
    path.write_bytes(original[:4096] if content is None else content)


@pytest.fixture(scope="module")
def folders(offline_cache, splade_model_dir) -> dict[str, Path]:
    root = offline_cache.parent
    return {
        "rerank": root / "standin-cross-encoder",
        "embedding": root / "all-MiniLM-L6-v2",
        "sparse": splade_model_dir,
    }


NAMES = {
    "rerank": offline_models.STANDIN_RERANK_MODEL,
    "embedding": offline_models.EMBED_MODEL,
    "sparse": offline_models.SPLADE_MODEL,
}
MODELS = {
    "rerank": (
        lambda **kw: FastEmbedRerank(offline_models.STANDIN_RERANK_MODEL, **kw),
        "TextCrossEncoder",
        "onnx/model.onnx",
    ),
    "embedding": (
        lambda **kw: FastEmbedEmbedding(offline_models.EMBED_MODEL, **kw),
        "TextEmbedding",
        "model.onnx",
    ),
    "sparse": (
        lambda **kw: FastEmbedSparseEmbedding(offline_models.SPLADE_MODEL, **kw),
        "SparseTextEmbedding",
        "model.onnx",
    ),
}
# file to damage -> (what is put there, words of the reason the message gives)
DAMAGES = {
    "truncated-onnx": ("MODEL", None, "ONNX Runtime cannot read its model file"),
    "lfs-pointer-onnx": ("MODEL", LFS_POINTER, "ONNX Runtime cannot read its model file"),
    "tokenizer-not-json": ("tokenizer.json", b'{"version": "1.0", "trunc', "not valid JSON"),
    "tokenizer-not-a-tokenizer": ("tokenizer.json", b"{}", "the tokenizer library cannot read"),
    "config-not-json": ("config.json", b"<html>Rate limited</html>", "not valid JSON"),
    "tokenizer-config-empty": ("tokenizer_config.json", b"", "not valid JSON"),
}


@pytest.mark.parametrize("fault", list(DAMAGES))
@pytest.mark.parametrize("kind", list(MODELS))
def test_damaged_file_in_a_model_folder_is_named_with_the_fix(
    folders, tmp_path, kind, fault, caplog
):
    make, engine_name, model_file = MODELS[kind]
    name, content, reason = DAMAGES[fault]
    folder = linked_copy(folders[kind], tmp_path / "model")
    damaged = folder / (model_file if name == "MODEL" else name)
    damage(damaged, content)
    model = make(specific_model_path=str(folder))
    with pytest.raises(ValueError, match=f"^Could not load {engine_name} model") as error:
        model.warm_up()
    message = str(error.value)
    assert repr(NAMES[kind]) in message
    assert str(damaged) in message
    assert reason in message
    assert "own files (from the repository " in message
    assert f") in specific_model_path={str(folder)!r}." in message
    assert error.value.__cause__ is not None  # the original error, for the details
    assert "could not prune" not in caplog.text  # the damage, not a pruning fallback


@pytest.mark.parametrize("missing", ["tokenizer.json", "tokenizer_config.json"])
@pytest.mark.parametrize("kind", list(MODELS))
def test_file_missing_from_a_model_folder_is_named_with_the_fix(folders, tmp_path, kind, missing):
    make, engine_name, _ = MODELS[kind]
    folder = linked_copy(folders[kind], tmp_path / "model")
    (folder / missing).unlink()
    with pytest.raises(ValueError, match=f"^Could not load {engine_name} model") as error:
        make(specific_model_path=str(folder)).warm_up()
    message = str(error.value)
    assert f"its folder {folder} has no {missing}" in message
    assert f") in specific_model_path={str(folder)!r}." in message
    assert error.value.__cause__ is not None


def test_file_missing_from_a_cached_model_says_to_delete_or_import_again(offline_cache, tmp_path):
    cache = tmp_path / "cache"
    repo = "models--Qdrant--all-MiniLM-L6-v2-onnx"
    linked_copy(offline_cache / repo, cache / repo)
    (snapshot,) = (cache / repo / "snapshots").iterdir()
    (snapshot / "tokenizer.json").unlink()
    model = FastEmbedEmbedding(
        offline_models.EMBED_MODEL, cache_dir=str(cache), local_files_only=True
    )
    with pytest.raises(ValueError, match=r"^Could not load TextEmbedding model") as error:
        model.warm_up()
    message = str(error.value)
    assert f"its folder {snapshot} has no tokenizer.json" in message
    assert f"delete {cache / repo}" in message
    assert f"models import DIR {offline_models.EMBED_MODEL}" in message


def test_model_file_newer_than_onnxruntime_says_to_upgrade_it(folders, tmp_path):
    folder = linked_copy(folders["embedding"], tmp_path / "model")
    graph = onnx.load(str(folder / "model.onnx"))
    graph.ir_version = 99  # as a file from a far newer exporter
    (folder / "model.onnx").unlink()  # a link into the shared build: write a file of its own
    onnx.save(graph, str(folder / "model.onnx"))
    model = FastEmbedEmbedding(offline_models.EMBED_MODEL, specific_model_path=str(folder))
    with pytest.raises(ValueError, match="cannot read its model file") as error:
        model.warm_up()
    message = str(error.value)
    assert str(folder / "model.onnx") in message
    assert "newer than this onnxruntime reads: upgrade onnxruntime" in message
    assert "damaged" not in message


def test_damaged_file_in_the_cache_says_to_delete_or_import_again(offline_cache, tmp_path):
    cache = tmp_path / "cache"
    repo = "models--local--ms-marco-MiniLM-L-6-v2-untrained-head"
    linked_copy(offline_cache / repo, cache / repo)
    (snapshot,) = (cache / repo / "snapshots").iterdir()
    damage(snapshot / "onnx" / "model.onnx")
    reranker = FastEmbedRerank(
        offline_models.STANDIN_RERANK_MODEL, cache_dir=str(cache), local_files_only=True
    )
    with pytest.raises(ValueError, match="ONNX Runtime cannot read its model file") as error:
        reranker.warm_up()
    message = str(error.value)
    assert str(snapshot / "onnx" / "model.onnx") in message
    assert f"delete {cache / repo}" in message
    assert f"models import DIR {offline_models.STANDIN_RERANK_MODEL}" in message


def test_a_failed_load_leaves_nothing_behind(folders, tmp_path):
    folder = linked_copy(folders["rerank"], tmp_path / "model")
    tokenizer = folder / "tokenizer.json"
    damage(tokenizer, b"{}")
    reranker = FastEmbedRerank(
        offline_models.STANDIN_RERANK_MODEL, specific_model_path=str(folder), top_n=None
    )
    with pytest.raises(ValueError, match=r"tokenizer\.json is damaged"):
        reranker.warm_up()
    tokenizer.unlink()
    tokenizer.symlink_to(folders["rerank"] / "tokenizer.json")
    # Mended files load at once: no broken model was kept for the process to share.
    assert len(reranker.score("capital of France", ["Paris", "Berlin"])) == 2


# --- a graph of the wrong kind of model -----------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "graph_of", "message"),
    [
        (
            "rerank",
            "embedding",
            r"returns \[batch, sequence, 384\], where a cross-encoder returns one",
        ),
        (
            "embedding",
            "rerank",
            r"returns \[batch, 1\], where sentence-transformers/all-MiniLM-L6-v2 ",
        ),
        (
            "sparse",
            "embedding",
            r"returns \[batch, sequence, 384\], where a SPLADE model returns .*30522",
        ),
        ("sparse", "rerank", r"returns \[batch, 1\], where a SPLADE model"),
    ],
    ids=[
        "embedding-as-cross-encoder",
        "cross-encoder-as-embedding",
        "dense-as-splade",
        "cross-encoder-as-splade",
    ],
)
def test_graph_of_another_kind_of_model_is_refused_on_load(
    folders, tmp_path, kind, graph_of, message
):
    make, engine_name, model_file = MODELS[kind]
    folder = linked_copy(folders[kind], tmp_path / "model")
    (folder / model_file).unlink()
    (folder / model_file).symlink_to(folders[graph_of] / MODELS[graph_of][2])
    model = make(specific_model_path=str(folder))
    with pytest.raises(ValueError, match=f"Could not load {engine_name} model") as error:
        model.warm_up()
    assert f"its ONNX graph {folder / model_file} " in str(error.value)
    assert f"The file is another model's: put {NAMES[kind]}'s own files" in str(error.value)
    assert re.search(message, str(error.value))


# --- caches that cannot be used ---------------------------------------------------------------


@pytest.mark.parametrize("kind", list(MODELS))
def test_cache_dir_that_is_a_file_is_named_with_the_fix(folders, tmp_path, kind):
    make, engine_name, _ = MODELS[kind]
    cache = tmp_path / "models.tar"
    cache.write_bytes(b"not a folder")
    # fastembed creates the cache folder even for specific_model_path.
    model = make(cache_dir=str(cache), specific_model_path=str(folders[kind]))
    with pytest.raises(ValueError, match=f"Could not load {engine_name} model") as error:
        model.warm_up()
    assert (
        f"the model cache {cache} (cache_dir) cannot be used: it is a file, not a folder. "
        "Pass cache_dir= a folder this process can create and write in"
    ) in str(error.value)
    assert isinstance(error.value.__cause__, FileExistsError)
    assert cache.read_bytes() == b"not a folder"


def test_cache_dir_inside_a_file_is_named(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    reranker = FastEmbedRerank(cache_dir=str(blocker / "cache"))
    with pytest.raises(
        ValueError,
        match=r"the model cache .*file/cache \(cache_dir\) cannot be used: Not a directory",
    ):
        reranker.warm_up()


def test_fastembed_cache_path_that_is_a_file_is_named(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    cache.write_text("x")
    monkeypatch.setenv("FASTEMBED_CACHE_PATH", str(cache))
    with pytest.raises(ValueError, match=rf"the model cache {cache} \(FASTEMBED_CACHE_PATH\)"):
        FastEmbedEmbedding().warm_up()


@pytest.mark.parametrize(
    ("where", "message"),
    [
        (
            "cache",
            r"the model cache .* \(cache_dir\) cannot be used: Permission denied: .*models--",
        ),
        ("model", r"Permission denied: /models/x/model\.onnx\. Make the model's files readable"),
    ],
    ids=["cache", "model-folder"],
)
def test_files_that_cannot_be_written_or_read_are_named(
    fake_encoder, monkeypatch, tmp_path, where, message
):
    # Root, as tests often run, may write anywhere: the engine reports the error here.
    place = tmp_path / "models--x" / "blobs" if where == "cache" else Path("/models/x/model.onnx")

    def denied(self, model_name, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(place))

    monkeypatch.setattr(fake_encoder, "__init__", denied)
    with pytest.raises(ValueError, match=message) as error:
        FastEmbedRerank(cache_dir=str(tmp_path)).warm_up()
    assert isinstance(error.value.__cause__, PermissionError)


def test_errors_that_name_no_file_pass_through_unchanged(fake_encoder, monkeypatch, tmp_path):
    def fails(self, model_name, **kwargs):
        msg = "something else entirely"
        raise RuntimeError(msg)

    monkeypatch.setattr(fake_encoder, "__init__", fails)
    with pytest.raises(RuntimeError, match=r"^something else entirely$"):
        FastEmbedRerank(cache_dir=str(tmp_path)).warm_up()
