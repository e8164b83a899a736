"""Import a local model directory into fastembed's cache, for offline and air-gapped use.

fastembed resolves a model name to a Hugging Face repository and, before any download, looks
in ``CACHE/models--ORG--NAME/snapshots/<refs/main>/``. Seeding that layout lets unchanged
code, such as ``FastEmbedEmbedding("sentence-transformers/all-MiniLM-L6-v2")``, load the
files with no network.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastembed import SparseTextEmbedding, TextEmbedding
from fastembed.rerank.cross_encoder import TextCrossEncoder

from .engine import default_cache_dir, find_model, hub_cache_folder

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
    description = _describe(model_name)
    hf_repo = description["sources"].get("hf")
    if not hf_repo:
        msg = (
            f"Model {model_name!r} has no Hugging Face source in fastembed, so it cannot be "
            f"imported into the cache: load it with specific_model_path={str(source)!r} instead"
        )
        raise ValueError(msg)
    files = _files_to_copy(Path(source), description)
    revision = _content_revision(files)
    repo_folder = hub_cache_folder(Path(cache_dir) if cache_dir else default_cache_dir(), hf_repo)
    snapshot = repo_folder / "snapshots" / revision
    if not snapshot.is_dir():
        snapshot.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".import-", dir=snapshot.parent))
        try:
            for target, origin in files.items():
                (staging / target).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(origin, staging / target)
            os.replace(staging, snapshot)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    refs = repo_folder / "refs"
    refs.mkdir(exist_ok=True)
    (refs / "main.tmp").write_text(revision)  # no trailing newline: the hub reads it verbatim
    os.replace(refs / "main.tmp", refs / "main")
    logger.info("Imported %s from %s into %s", model_name, source, snapshot)
    return snapshot


def _describe(model_name: str) -> dict[str, Any]:
    errors = []
    for engine in _ENGINES:
        try:
            return find_model(engine, model_name)
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
