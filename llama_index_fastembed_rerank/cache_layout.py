"""Where fastembed and the Hugging Face hub keep a model's files.

fastembed resolves a model name to a hub repository (its description's ``sources["hf"]``) and
looks for the files in ``CACHE/models--ORG--NAME/snapshots/<refs/main>/`` before any download;
``specific_model_path=DIR`` replaces that folder. A model's files are its ONNX graph (the
description's ``model_file``), any ``additional_files`` (external weights), and the tokenizer
files beside them. BM25 is the exception: its "model file" is a configuration beside its
stopword lists, with no graph and no tokenizer.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import Any

# The files fastembed takes from a model repository besides the model file itself.
TOKENIZER_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
)
# Those a model with an ONNX graph cannot load without.
REQUIRED_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")


def default_cache_dir() -> Path:
    """Return the cache fastembed uses when ``cache_dir`` is not given (without creating it)."""
    env = os.environ.get("FASTEMBED_CACHE_PATH")
    return Path(env) if env else Path(tempfile.gettempdir()) / "fastembed_cache"


def cache_dir(engine_kwargs: dict[str, Any]) -> tuple[Path, str]:
    """Return the cache fastembed uses for these engine options, and the setting that chose it."""
    if engine_kwargs.get("cache_dir"):
        return Path(engine_kwargs["cache_dir"]), "cache_dir"
    if os.environ.get("FASTEMBED_CACHE_PATH"):
        return default_cache_dir(), "FASTEMBED_CACHE_PATH"
    return default_cache_dir(), "fastembed's default cache"


def repository_folder(cache: Path, hf_repo: str) -> Path:
    """Return the folder the hub cache keeps ``hf_repo`` in."""
    return cache / ("models--" + hf_repo.replace("/", "--"))


def snapshots_folder(cache: Path, hf_repo: str) -> Path:
    """Return the folder holding ``hf_repo``'s snapshots, one folder per revision."""
    return repository_folder(cache, hf_repo) / "snapshots"


def point_main_at(cache: Path, hf_repo: str, revision: str) -> None:
    """Make ``revision`` the snapshot the hub client (and so fastembed) loads ``hf_repo`` from."""
    refs = repository_folder(cache, hf_repo) / "refs"
    refs.mkdir(parents=True, exist_ok=True)
    (refs / "main.tmp").write_text(revision)  # no trailing newline: the hub reads it verbatim
    os.replace(refs / "main.tmp", refs / "main")


def model_folder(description: dict[str, Any], engine_kwargs: dict[str, Any]) -> Path | None:
    """Return the folder fastembed loads the model's files from, where it can be told."""
    if engine_kwargs.get("specific_model_path"):
        return Path(engine_kwargs["specific_model_path"])
    hf_repo = description["sources"].get("hf")
    if not hf_repo:
        return None
    repo = repository_folder(cache_dir(engine_kwargs)[0], hf_repo)
    try:
        return repo / "snapshots" / (repo / "refs" / "main").read_text().strip()
    except OSError:
        return None


def model_file_names(description: dict[str, Any]) -> list[str]:
    """Return the model's own files, as paths in its repository: the graph, then its weights."""
    return [description["model_file"], *description.get("additional_files", [])]


def has_graph(description: dict[str, Any]) -> bool:
    """Whether the model is an ONNX graph with a tokenizer (every model but BM25)."""
    return str(description["model_file"]).endswith(".onnx")


def in_hub_cache(cache: Path, hf_repo: str, description: dict[str, Any]) -> bool:
    """Whether the model's files are in the cache, found as the hub client finds them."""
    from huggingface_hub import try_to_load_from_cache

    return all(
        isinstance(try_to_load_from_cache(hf_repo, name, cache_dir=cache), str)
        for name in model_file_names(description)
    )


def cached_files(cache: Path, hf_repo: str, description: dict[str, Any]) -> dict[str, Path] | None:
    """Map each file of a cached model to where the cache keeps it; None if it is not cached."""
    from huggingface_hub import try_to_load_from_cache

    if not in_hub_cache(cache, hf_repo, description):
        return None
    files = {}
    for name in [*model_file_names(description), *TOKENIZER_FILES]:
        found = try_to_load_from_cache(hf_repo, name, cache_dir=cache)
        if isinstance(found, str):
            files[name] = Path(found)
    return files


def add_file_to_digest(digest: hashlib._Hash, path: Path) -> hashlib._Hash:
    """Feed a file's content to ``digest`` (the key of a snapshot or a kept graph); return it."""
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest
