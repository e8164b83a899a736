"""Move models in and out of fastembed's cache, for offline and air-gapped use.

fastembed resolves a model name to a Hugging Face repository and, before any download, looks
in ``CACHE/models--ORG--NAME/snapshots/<refs/main>/``. Seeding that layout lets unchanged
code, such as ``FastEmbedEmbedding("sentence-transformers/all-MiniLM-L6-v2")``, load the
files with no network; ``export_model`` copies them back out into a folder that
``import_model`` takes on another machine.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from fastembed import SparseTextEmbedding, TextEmbedding
from fastembed.rerank.cross_encoder import TextCrossEncoder

from . import staging
from .cache_layout import (
    REQUIRED_TOKENIZER_FILES,
    TOKENIZER_FILES,
    add_file_to_digest,
    cached_files,
    default_cache_dir,
    has_graph,
    model_file_names,
    point_main_at,
    snapshots_folder,
)
from .loading import find_model
from .model_check import (
    KIND_NOUNS,
    KINDS,
    architectures,
    file_damage,
    graph_output_shape,
    wrong_kind,
)

logger = logging.getLogger(__name__)

_ENGINES = (TextEmbedding, TextCrossEncoder, SparseTextEmbedding)


def import_model(
    source: str | os.PathLike[str],
    model_name: str,
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Copy a local model directory into fastembed's cache under a supported model name.

    Afterwards the model loads by its name with no network, for example with
    ``FastEmbedEmbedding(model_name, cache_dir=cache_dir, local_files_only=True)``. Importing
    the same files again changes nothing; other files replace the cached ones in one step, so
    an interrupted import leaves the cache as it was.

    Args:
        source: A directory with the model's ONNX file (at the path fastembed expects, such
            as ``onnx/model.onnx``, or at its top level) and its tokenizer files.
        model_name: A name fastembed supports, or one registered with ``add_custom_model``.
        cache_dir: The fastembed cache; None means ``$FASTEMBED_CACHE_PATH``, else
            ``<tempdir>/fastembed_cache``, as fastembed itself.

    Returns:
        The snapshot directory fastembed will load the model from.

    Raises:
        ValueError: The model name is unknown, has no Hugging Face source, or ``source``
            lacks a file the model needs.
    """
    engine_class, description = _describe(model_name)
    hf_repo = description["sources"].get("hf")
    if not hf_repo:
        msg = (
            f"Model {model_name!r} has no Hugging Face source in fastembed, so it cannot be "
            f"imported into the cache: load it with specific_model_path={str(source)!r} instead"
        )
        raise ValueError(msg)
    files = _files_to_copy(Path(source), description)
    revision = _content_revision(files)
    cache = _cache_folder(cache_dir)
    snapshot = snapshots_folder(cache, hf_repo) / revision
    for folder in cache.glob(f"models--*/{snapshot.parent.name}"):
        staging.clear_leftovers(folder)  # of any model: killed imports'
    if not snapshot.is_dir():
        _check_files(engine_class, description, files)
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        staged = staging.stage(snapshot, folder=True)
        try:
            for target, origin in files.items():
                (staged / target).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, staged / target)
            staging.commit(staged, snapshot)
        finally:
            staging.discard(staged)
    point_main_at(cache, hf_repo, revision)
    logger.info("Imported %s from %s into %s", model_name, source, snapshot)
    return snapshot


def export_model(
    model_name: str,
    dest: str | os.PathLike[str],
    cache_dir: str | os.PathLike[str] | None = None,
) -> Path:
    """Copy a cached model into a new folder that ``import_model`` takes on another machine.

    The folder holds the model file at the path fastembed expects (such as
    ``onnx/model.onnx``) and the tokenizer files: the air-gapped hand-over is
    ``export_model`` where a hub is reachable, then ``import_model`` where none is. The folder
    appears whole or not at all.

    Args:
        model_name: A model fastembed supports (or one registered with ``add_custom_model``).
        dest: The folder to create; it must not exist yet, or be empty.
        cache_dir: The fastembed cache the model is in; None means ``$FASTEMBED_CACHE_PATH``,
            else ``<tempdir>/fastembed_cache``, as fastembed itself.

    Returns:
        The folder written.

    Raises:
        ValueError: The model name is unknown, the model is not in the cache, or ``dest``
            exists and is not an empty folder.
    """
    _, description = _describe(model_name)
    hf_repo = description["sources"].get("hf")
    cache = _cache_folder(cache_dir)
    files = cached_files(cache, hf_repo, description) if hf_repo else None
    if files is None:
        msg = (
            f"Model {model_name!r} is not in the cache at {cache}: load it once where the hub "
            f"is reachable (or pass the cache that holds it), then export it"
        )
        raise ValueError(msg)
    target = Path(dest)
    if target.exists() and not (target.is_dir() and not any(target.iterdir())):
        msg = f"Export folder {str(target)!r} already exists: name a new folder"
        raise ValueError(msg)
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = staging.stage(target, folder=True)
    try:
        for name, origin in files.items():
            (staged / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(origin, staged / name)  # the cache holds links into its blobs
        if target.exists():
            target.rmdir()  # empty, checked above
        staging.commit(staged, target)
    finally:
        staging.discard(staged)
    return target


def _cache_folder(cache_dir: str | os.PathLike[str] | None) -> Path:
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    if cache.exists() and not cache.is_dir():
        msg = f"The model cache {str(cache)!r} is a file, not a folder: pass a folder as cache_dir"
        raise ValueError(msg)
    return cache


def _describe(model_name: str) -> tuple[type[Any], dict[str, Any]]:
    errors = []
    for engine in _ENGINES:
        try:
            return engine, find_model(engine, model_name)
        except ValueError as e:
            errors.append(str(e))
    msg = f"No fastembed model class supports {model_name!r}: " + " ".join(errors)
    raise ValueError(msg)


def _files_to_copy(source: Path, description: dict[str, Any]) -> dict[str, Path]:
    """Map each cache path of the model to the file in ``source`` that provides it."""
    if not source.is_dir():
        msg = f"Model source {str(source)!r} is not a directory: pass the folder of the model"
        raise ValueError(msg)
    files: dict[str, Path] = {}
    missing = []
    for name in model_file_names(description):
        # Accept the file at its repository path (onnx/model.onnx) or at the top level.
        found = next((p for p in (source / name, source / Path(name).name) if p.is_file()), None)
        if found is None:
            missing.append(name)
        else:
            files[name] = found
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            files[name] = source / name
        elif has_graph(description) and name in REQUIRED_TOKENIZER_FILES:
            missing.append(name)
    if missing:
        msg = (
            f"Model source {str(source)!r} lacks {', '.join(missing)}, which fastembed needs "
            f"for {description['model']!r}: copy them from the model's repository "
            f"({description['sources'].get('hf')}) into that folder"
        )
        raise ValueError(msg)
    return files


def _content_revision(files: dict[str, Path]) -> str:
    """Name the snapshot after its content, so that a re-import of the same files is a no-op."""
    digest = hashlib.sha256()
    for target, origin in sorted(files.items()):
        digest.update(target.encode())
        add_file_to_digest(digest, origin)
    return digest.hexdigest()[:40]


def _check_files(
    engine_class: type[Any], description: dict[str, Any], files: dict[str, Path]
) -> None:
    """Refuse damaged files, and files that are not the kind of model the name stands for.

    fastembed would load a cross-encoder under an embedding's name (or the reverse) and fail,
    or return nonsense, only when used.
    """
    name = description["model"]
    fix = f"copy it again from the model's repository ({description['sources'].get('hf')})"
    for json_file in ("config.json", "tokenizer.json"):
        if json_file in files and description["model_file"] != json_file:
            damage = file_damage(files[json_file])
            if damage:
                msg = f"{files[json_file]} {damage}: {fix}"
                raise ValueError(msg)
    if not has_graph(description):
        return  # BM25: stopword lists, no network
    model_file = files[description["model_file"]]
    try:
        shape, inputs = graph_output_shape(model_file)
    except ValueError as e:
        msg = f"{model_file} {e}: {fix}"
        raise ValueError(msg) from e
    if "input_ids" not in inputs:
        msg = (
            f"{model_file} takes {inputs}, not the input_ids of a text model: it cannot be {name!r}"
        )
        raise ValueError(msg)
    kind = KINDS[engine_class.__name__]
    looks = wrong_kind(kind, description, shape, architectures(files.get("config.json")))
    if looks:
        msg = (
            f"{model_file} is not {KIND_NOUNS[kind]} like {name!r}: {looks}. Import it under the "
            f"name of a model of its kind, or copy the right files"
        )
        raise ValueError(msg)
