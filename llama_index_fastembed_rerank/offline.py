"""Move models in and out of fastembed's cache, for offline and air-gapped use.

fastembed resolves a model name to a Hugging Face repository and, before any download, looks
in ``CACHE/models--ORG--NAME/snapshots/<refs/main>/``. Seeding that layout lets unchanged
code, such as ``FastEmbedEmbedding("sentence-transformers/all-MiniLM-L6-v2")``, load the
files with no network; ``export_model`` copies them back out into a folder that
``import_model`` takes on another machine.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

import onnx
from fastembed import SparseTextEmbedding, TextEmbedding
from fastembed.rerank.cross_encoder import TextCrossEncoder

from .engine import default_cache_dir, find_model, hub_cache_folder, in_hub_cache

logger = logging.getLogger(__name__)

# The files fastembed takes from a model repository besides the model file itself.
TOKENIZER_FILES = (
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
)
_REQUIRED_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")
_ENGINES = (TextEmbedding, TextCrossEncoder, SparseTextEmbedding)
# What each engine is called where the command line lists models, and in messages.
KINDS = {TextEmbedding: "embedding", SparseTextEmbedding: "sparse", TextCrossEncoder: "rerank"}
_KIND_NOUNS = {
    "embedding": "a text embedding model",
    "sparse": "a sparse model",
    "rerank": "a cross-encoder",
}
# Staging folders are named ".import-<pid>-<host>-<random>", so a later import can tell a
# killed import's leftovers (a dead process on this host) from one still running.
_STAGING = ".import-"
# No import takes this long: an older staging folder is a leftover whoever made it.
_STALE_STAGING_SECONDS = 24 * 3600


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
    repo_folder = hub_cache_folder(cache, hf_repo)
    snapshot = repo_folder / "snapshots" / revision
    if not snapshot.is_dir():
        _check_kind(engine_class, description, files)
        clear_import_leftovers(cache)
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        prefix = f"{_STAGING}{os.getpid()}-{socket.gethostname()}-"
        staging = Path(tempfile.mkdtemp(prefix=prefix, dir=snapshot.parent))
        try:
            for target, origin in files.items():
                (staging / target).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, staging / target)
            staging.chmod(0o755)  # mkdtemp makes it private; a shared cache is read by others
            os.replace(staging, snapshot)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    refs = repo_folder / "refs"
    refs.mkdir(exist_ok=True)
    (refs / "main.tmp").write_text(revision)  # no trailing newline: the hub reads it verbatim
    os.replace(refs / "main.tmp", refs / "main")
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
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        for name, origin in files.items():
            (staging / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(origin, staging / name)  # the cache holds links into its blobs
        staging.chmod(0o755)
        if target.exists():
            target.rmdir()  # empty, checked above
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def cached_files(cache: Path, hf_repo: str, description: dict[str, Any]) -> dict[str, Path] | None:
    """Map each file of a cached model to where the cache keeps it; None if it is not cached."""
    from huggingface_hub import try_to_load_from_cache

    if not in_hub_cache(cache, hf_repo, description):
        return None
    names = [description["model_file"], *description.get("additional_files", [])]
    files = {}
    for name in [*names, *TOKENIZER_FILES]:
        found = try_to_load_from_cache(hf_repo, name, cache_dir=cache)
        if isinstance(found, str):
            files[name] = Path(found)
    return files


def clear_import_leftovers(cache: Path) -> list[Path]:
    """Remove the staging folders of imports that were killed; return what was removed."""
    removed = []
    for folder in cache.glob(f"models--*/snapshots/{_STAGING}*"):
        if folder.is_dir() and _abandoned(folder):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
            logger.info("Removed %s, left by an import that did not finish", folder)
    return removed


def _abandoned(staging: Path) -> bool:
    try:
        if time.time() - staging.stat().st_mtime > _STALE_STAGING_SECONDS:
            return True
    except OSError:
        return False
    pid, _, rest = staging.name[len(_STAGING) :].partition("-")
    host = rest.rpartition("-")[0]
    # os.kill(pid, 0) only asks on POSIX; on Windows it would end the process.
    if os.name != "posix" or not pid.isdigit() or host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, owned by someone else
        return False
    return False


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
    for name in [description["model_file"], *description.get("additional_files", [])]:
        # Accept the file at its repository path (onnx/model.onnx) or at the top level.
        found = next((p for p in (source / name, source / Path(name).name) if p.is_file()), None)
        if found is None:
            missing.append(name)
        else:
            files[name] = found
    # BM25 has no model and no tokenizer: its model_file is a config.json beside stopwords.
    has_tokenizer = description["model_file"].endswith(".onnx")
    for name in TOKENIZER_FILES:
        if (source / name).is_file():
            files[name] = source / name
        elif has_tokenizer and name in _REQUIRED_TOKENIZER_FILES:
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
        with origin.open("rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:40]


def _check_kind(
    engine_class: type[Any], description: dict[str, Any], files: dict[str, Path]
) -> None:
    """Refuse files that are not the kind of model the name stands for.

    A text embedding gives a vector per token (or per text, of the model's size); a
    cross-encoder gives one logit per pair. fastembed would load either under the other's
    name and fail, or return nonsense, only when used.
    """
    name = description["model"]
    kind = KINDS[engine_class]
    for json_file in ("config.json", "tokenizer.json"):
        if json_file in files and description["model_file"] != json_file:
            try:
                json.loads(files[json_file].read_text(encoding="utf-8"))
            except (ValueError, UnicodeDecodeError) as e:
                msg = f"{files[json_file]} is not valid JSON ({e}): copy it again from the model"
                raise ValueError(msg) from e
    if not description["model_file"].endswith(".onnx"):
        return  # BM25: stopword lists, no network
    model_file = files[description["model_file"]]
    try:
        graph = onnx.load(str(model_file), load_external_data=False).graph
    except Exception as e:  # onnx raises protobuf's DecodeError and others for a broken file
        msg = (
            f"{model_file} is not a readable ONNX model ({type(e).__name__}: {e}): copy it "
            f"again from the model's repository ({description['sources'].get('hf')})"
        )
        raise ValueError(msg) from e
    inputs = [i.name for i in graph.input]
    if "input_ids" not in inputs:
        msg = (
            f"{model_file} takes {inputs}, not the input_ids of a text model: it cannot be {name!r}"
        )
        raise ValueError(msg)
    output = graph.output[0]
    dims = [d.dim_value or d.dim_param or "?" for d in output.type.tensor_type.shape.dim]
    shape = f"output {output.name!r} {dims}"
    architectures = _architectures(files.get("config.json"))
    classifier = any(a.endswith("ForSequenceClassification") for a in architectures)
    looks = None
    if kind == "rerank":
        if len(dims) != 2 or (isinstance(dims[1], int) and dims[1] != 1):
            looks = f"it gives {shape}, not one logit per pair as a cross-encoder does"
        elif architectures and not classifier:
            looks = f"its config.json describes a {architectures[0]}, not a sequence classifier"
    elif kind == "embedding":
        size = description.get("dim")
        last = dims[-1] if dims else None
        if len(dims) == 2 and last == 1:
            looks = f"it gives {shape}: one score per text, as a cross-encoder does"
        elif classifier:
            looks = f"its config.json describes a {architectures[0]}, a cross-encoder"
        elif isinstance(last, int) and size and last != size:
            looks = f"it gives vectors of {last} numbers ({shape}), and {name!r} has {size}"
    if looks is not None:
        msg = (
            f"{model_file} is not {_KIND_NOUNS[kind]} like {name!r}: {looks}. Import it under the "
            f"name of a model of its kind, or copy the right files"
        )
        raise ValueError(msg)


def _architectures(config_file: Path | None) -> list[str]:
    if config_file is None:
        return []
    config = json.loads(config_file.read_text(encoding="utf-8"))
    architectures = config.get("architectures") if isinstance(config, dict) else None
    return [a for a in architectures or [] if isinstance(a, str)]
