"""The fastembed engine behind both classes: its options, model lookup and shared loading.

One loaded model per process for each (class, model, options): every instance with the same
configuration shares it. The last ``KEEP_LOADED`` models handed out stay loaded after their
last instance is gone, so that an app building a reranker per request loads its model once;
``release_models()`` lets them go, and a model is freed once nothing holds it any more.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import tempfile
import textwrap
import threading
import types
import typing
import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, TypeVar

from fastembed.common.types import Device
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationInfo,
    field_validator,
    model_validator,
)

from . import _fastembed

# The pydantic config of the three public classes.
MODEL_CONFIG = ConfigDict(
    validate_assignment=True,
    arbitrary_types_allowed=True,
    extra="forbid",  # a misspelt option fails instead of being ignored
    protected_namespaces=("pydantic_model_",),  # `model`, `model_name`, `model_kwargs` are ours
)

# `model_kwargs` keys that are fields of their own; setting them twice would be ambiguous.
_FIELD_OPTIONS = (
    "cache_dir",
    "threads",
    "providers",
    "cuda",
    "device_ids",
    "local_files_only",
    "specific_model_path",
)
# Options this package decides itself: lazy loading is ours, batching is per call.
_RESERVED_KWARGS = ("model_name", "lazy_load", "batch_size", "parallel")

E = TypeVar("E")
M = TypeVar("M", bound=BaseModel)

# How many models stay loaded once no instance holds them: the most recently handed out. A
# query engine per request typically needs one reranker and one or two embedding models.
KEEP_LOADED = 3

_LOADED: weakref.WeakValueDictionary[tuple[str, str], Any] = weakref.WeakValueDictionary()
# One lock per model key, held while that model loads: two threads asking for the same model
# load it once, and a slow load (a download, a graph rewrite) holds up no other model.
_LOAD_LOCKS: weakref.WeakValueDictionary[tuple[str, str], threading.Lock] = (
    weakref.WeakValueDictionary()
)
_LOAD_LOCKS_LOCK = threading.Lock()
# Long enough for a slow link, short beside fastembed's ~40 s of retries.
_HUB_PROBE_SECONDS = 5.0
# The models kept loaded for reuse, least recently handed out first, with the class that
# asked for them (release_models() lets a class release its own).
_RECENT: OrderedDict[tuple[str, str], tuple[type[Any], Any]] = OrderedDict()
_RECENT_LOCK = threading.Lock()


def document_options(cls: type[M]) -> type[M]:
    """End ``cls``'s docstring with an ``Args:`` section made of its options' descriptions.

    Each option's text is written once, in its ``Field(description=...)``: ``help()``, the JSON
    schema and the README's option tables (checked against it by a test) all show that text.
    Fields inherited from LlamaIndex's base classes are left to LlamaIndex's documentation.
    """
    own = [
        name
        for klass in cls.__mro__
        if issubclass(klass, FastEmbedEngineOptions)
        for name in vars(klass).get("__annotations__", {})
        if name in cls.model_fields
    ]
    doc = (cls.__doc__ or "").rstrip()
    # The docstring keeps its source indentation (before Python 3.13); the section matches it.
    body = [line for line in doc.splitlines()[1:] if line.strip()]
    indent = min((len(line) - len(line.lstrip()) for line in body), default=0) * " "
    lines = [f"{indent}Args:"]
    for name in dict.fromkeys(own):
        lines += textwrap.wrap(
            f"{name}: {cls.model_fields[name].description}",
            width=88,
            initial_indent=indent + "    ",
            subsequent_indent=indent + "        ",
        )
    # Google style puts Args before the Example; without one, the section ends the docstring.
    head, example, tail = doc.partition(f"\n{indent}Example:")
    section = "\n" + "\n".join(lines) + "\n"
    cls.__doc__ = head.rstrip() + "\n" + section + (example + tail + "\n" + indent)
    return cls


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
    msg = (
        f"{engine_class.__name__} does not support model {model_name!r}.{hint} "
        f"See {engine_class.__name__}.list_supported_models(), or register your own ONNX "
        f"model with {engine_class.__name__}.add_custom_model(...)."
    )
    raise ValueError(msg)


def default_cache_dir() -> Path:
    """Return the cache fastembed uses when ``cache_dir`` is not given (without creating it)."""
    env = os.environ.get("FASTEMBED_CACHE_PATH")
    return Path(env) if env else Path(tempfile.gettempdir()) / "fastembed_cache"


def hub_cache_folder(cache_dir: Path, hf_repo: str) -> Path:
    """Return the folder a Hugging Face cache keeps ``hf_repo`` in."""
    return cache_dir / ("models--" + hf_repo.replace("/", "--"))


def raw_field(cls: type[BaseModel], data: dict[str, Any], name: str) -> Any:  # noqa: ANN401
    """Return field ``name`` from a "before" validator's raw ``data``, or its default."""
    if name in data:
        return data[name]
    return cls.model_fields[name].get_default(call_default_factory=True)


def _takes_numbers(annotation: Any) -> str:  # noqa: ANN401 - any type annotation
    """Return "one" for a number field, "list" for a list of numbers, "" otherwise."""
    args = typing.get_args(annotation) if isinstance(annotation, types.UnionType) else ()
    for option in args or (annotation,):
        if option in (int, float):
            return "one"
        if typing.get_origin(option) is list and set(typing.get_args(option)) & {int, float}:
            return "list"
    return ""


class _EngineSlot:
    """Holds the loaded engine; copies and pickles come back empty and reload on first use.

    ONNX Runtime sessions cannot be pickled, and a copy should share the process-wide model
    rather than duplicate it.
    """

    __slots__ = ("loaded",)

    def __init__(self) -> None:
        self.loaded: tuple[tuple[str, str], Any] | None = None

    def __reduce__(self) -> tuple[type[_EngineSlot], tuple[()]]:
        return (_EngineSlot, ())


class FastEmbedEngineOptions(BaseModel):
    """fastembed's engine options, under fastembed's own names, shared by both classes."""

    cache_dir: str | None = Field(
        default=None,
        description=(
            "Where fastembed keeps downloaded models; `None` is `$FASTEMBED_CACHE_PATH`, "
            "else `<tempdir>/fastembed_cache`."
        ),
    )
    threads: int | None = Field(
        default=None,
        ge=1,
        description="ONNX Runtime threads per session; `None` is all cores.",
    )
    providers: list[str | tuple[str, dict[str, Any]]] | None = Field(
        default=None,
        description='ONNX Runtime execution providers, e.g. `["CUDAExecutionProvider"]`.',
    )
    cuda: bool | Device = Field(
        default=Device.AUTO,
        description='Use CUDA: `True`, `False` or `"auto"` (CUDA where onnxruntime-gpu offers it).',
    )
    device_ids: list[int] | None = Field(
        default=None, description="CUDA devices; a cross-encoder uses the first."
    )
    local_files_only: bool = Field(
        default=False,
        description="Load from the cache only, never from the model hub.",
    )
    specific_model_path: str | None = Field(
        default=None,
        description="A directory with the model's ONNX and tokenizer files, used as it is.",
    )
    model_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description='Further fastembed options, e.g. `{"enable_cpu_mem_arena": False}`.',
    )

    _engine: _EngineSlot = PrivateAttr(default_factory=_EngineSlot)
    # Set by each class: the fastembed class it runs, and the field that names the model.
    _engine_class: ClassVar[type[Any]]
    _model_field: ClassVar[str]

    @model_validator(mode="before")
    @classmethod
    def _accept_own_class_name(cls, data: Any) -> Any:  # noqa: ANN401 - pydantic's raw input
        # LlamaIndex's model_dump() adds "class_name"; model_validate() must take it back.
        if isinstance(data, dict) and "class_name" in data:
            data = dict(data)
            name = data.pop("class_name")
            expected = cls.class_name()  # type: ignore[attr-defined]
            if name != expected:
                msg = f"class_name {name!r} does not describe a {expected}: load it with {name}"
                raise ValueError(msg)
        return data

    @field_validator("*", mode="before")
    @classmethod
    def _no_bool_for_numbers(cls, value: Any, info: ValidationInfo) -> Any:  # noqa: ANN401
        # pydantic takes True for 1; a bool where a count or a score is meant is a mistake.
        field = cls.model_fields.get(info.field_name or "")
        takes = _takes_numbers(field.annotation) if field is not None else ""
        if (takes == "one" and isinstance(value, bool)) or (
            takes == "list" and isinstance(value, list) and any(isinstance(v, bool) for v in value)
        ):
            msg = f"{info.field_name} takes numbers, not booleans: got {value!r}"
            raise ValueError(msg)
        return value

    @field_validator("model_kwargs")
    @classmethod
    def _no_duplicate_options(cls, value: dict[str, Any]) -> dict[str, Any]:
        for key in value:
            if key in _FIELD_OPTIONS:
                msg = (
                    f"model_kwargs[{key!r}] duplicates the {key!r} option: "
                    f"pass {key}=... directly instead"
                )
                raise ValueError(msg)
            if key in _RESERVED_KWARGS:
                msg = (
                    f"model_kwargs[{key!r}] is not a fastembed engine option this class "
                    f"forwards: remove it (the model, lazy loading and batching are set by "
                    f"the class's own fields)"
                )
                raise ValueError(msg)
        return value

    @model_validator(mode="before")
    @classmethod
    def _known_model_kwargs(cls, data: Any) -> Any:  # noqa: ANN401 - pydantic's raw input
        # fastembed passes unknown options on and ignores them: a misspelt one would go unseen.
        # A "before" validator sees an assignment before it is made (an "after" one would
        # leave the refused value in place).
        if not isinstance(data, dict):
            return data
        model_name, model_kwargs = raw_field(cls, data, cls._model_field), data.get("model_kwargs")
        if not isinstance(model_name, str) or not isinstance(model_kwargs, dict):
            return data  # the fields' own validation reports it
        if not model_kwargs:
            return data  # nothing to look up: validation runs on every assignment
        found = _fastembed.engine_options(cls._engine_class, model_name)
        if found is None:
            return data
        model_class, options = found
        options = options - set(_FIELD_OPTIONS) - set(_RESERVED_KWARGS)
        for key in model_kwargs:
            if key not in options and key not in _FIELD_OPTIONS + _RESERVED_KWARGS:
                close = difflib.get_close_matches(str(key), options, n=1)
                hint = f"Did you mean {close[0]!r}? " if close else ""
                msg = (
                    f"model_kwargs[{key!r}] is not an option of fastembed's "
                    f"{model_class.__name__}, which runs {model_name!r}: fastembed would "
                    f"silently ignore it. {hint}Its options: {', '.join(sorted(options))}"
                )
                raise ValueError(msg)
        return data

    def engine_kwargs(self) -> dict[str, Any]:
        """Return the keyword arguments the fastembed class is built with."""
        return {
            "cache_dir": self.cache_dir,
            "threads": self.threads,
            "providers": self.providers,
            "cuda": self.cuda,
            "device_ids": self.device_ids,
            "local_files_only": self.local_files_only,
            "specific_model_path": self.specific_model_path,
            **self.model_kwargs,
        }

    def _shared_engine(
        self,
        engine_class: type[E],
        model_name: str,
        prepare: Callable[[E], object] | None = None,
    ) -> E:
        """Return the loaded fastembed model for the current options, loading it on first use.

        ``prepare`` runs once on a newly built model, which fastembed builds with
        ``lazy_load=True`` so that ``prepare`` loads its session itself; models prepared
        differently are not shared.
        """
        kwargs = self.engine_kwargs()
        # The default cache is resolved here: FASTEMBED_CACHE_PATH may change in between.
        where = {"cache_dir": self.cache_dir or str(default_cache_dir())}
        key = (
            f"{engine_class.__module__}.{engine_class.__qualname__}:{model_name}",
            json.dumps({**kwargs, **where}, sort_keys=True, default=repr)
            + (f"|{prepare.__module__}.{prepare.__qualname__}" if prepare else ""),
        )
        loaded = self._engine.loaded
        if loaded is not None and loaded[0] == key:
            return loaded[1]  # type: ignore[no-any-return]
        engine: E | None = _LOADED.get(key)
        if engine is None:
            with _LOAD_LOCKS_LOCK:
                lock = _LOAD_LOCKS.get(key)
                if lock is None:
                    lock = _LOAD_LOCKS[key] = threading.Lock()
            with lock:
                engine = _LOADED.get(key)
                if engine is None:
                    engine = _load(engine_class, model_name, kwargs, prepare)
                    _LOADED[key] = engine
        with _RECENT_LOCK:
            _RECENT[key] = (type(self), engine)
            _RECENT.move_to_end(key)
            # Freed after the lock is let go: closing an ONNX session takes a while.
            evicted = [_RECENT.popitem(last=False) for _ in range(len(_RECENT) - KEEP_LOADED)]
        del evicted
        # Options may change after a load (validate_assignment allows it): the key tells.
        self._engine.loaded = (key, engine)
        return engine

    @classmethod
    def release_models(cls) -> None:
        """Stop keeping this class's models loaded for reuse.

        Each is freed once no instance holds it any more: instances still alive keep theirs.
        """
        with _RECENT_LOCK:
            released = [
                _RECENT.pop(k) for k, (owner, _) in list(_RECENT.items()) if issubclass(owner, cls)
            ]
        del released  # freed here, outside the lock


def _load(
    engine_class: type[E],
    model_name: str,
    kwargs: dict[str, Any],
    prepare: Callable[[E], object] | None = None,
) -> E:
    """Build the fastembed model; ``prepare`` loads its session (fastembed's lazy_load)."""
    description = find_model(engine_class, model_name)
    specific = kwargs.get("specific_model_path")
    # BM25 has no model file: its folder holds stopword lists (checked by its class).
    if specific is not None and description["model_file"].endswith(".onnx"):
        model_file = Path(specific) / description["model_file"]
        if not model_file.is_file():
            msg = (
                f"Could not load {engine_class.__name__} model {model_name!r}: "
                f"specific_model_path={specific!r} has no {description['model_file']} "
                f"(fastembed looks for the model file at {model_file}). Point "
                f"specific_model_path at the directory that holds it and its tokenizer files."
            )
            raise ValueError(msg)
    hf_repo = description["sources"].get("hf")
    cache = _cache_dir(kwargs)[0]
    offline = _offline_mode(kwargs)
    unreachable = None
    if (
        offline is None
        and specific is None
        and hf_repo
        and not description["sources"].get("url")
        and not in_hub_cache(cache, hf_repo, description)
    ):
        # fastembed would retry the hub for ~40 s; one short probe tells at once.
        unreachable = _hub_unreachable(hf_repo)
        if unreachable is not None:
            kwargs = {**kwargs, "local_files_only": True}  # still finds older cache layouts
    try:
        if prepare is None:
            engine = engine_class(model_name, **kwargs)  # type: ignore[call-arg]
        else:
            engine = engine_class(model_name, **kwargs, lazy_load=True)  # type: ignore[call-arg]
            prepare(engine)
    except Exception as e:
        # fastembed's, onnxruntime's and the tokenizer's own errors name neither the model
        # nor the fix, and some not even the file.
        problem = _load_problem(e, description, kwargs, offline, unreachable)
        if problem is None:
            raise
        msg = f"Could not load {engine_class.__name__} model {model_name!r}: {problem}"
        raise ValueError(msg) from e
    wrong_kind = _wrong_kind(engine_class.__name__, description, _fastembed.output_shape(engine))
    if wrong_kind:
        files = _fastembed.model_files(engine)
        graph = f"its ONNX graph {files[0]}" if files else "its ONNX graph"
        msg = (
            f"Could not load {engine_class.__name__} model {model_name!r}: {graph} "
            f"{wrong_kind}. The file is another model's: {_fix_files(description, kwargs)}"
        )
        raise ValueError(msg)
    return engine


def _cache_dir(kwargs: dict[str, Any]) -> tuple[Path, str]:
    """Return the cache fastembed uses for ``kwargs``, and the setting that chose it."""
    if kwargs.get("cache_dir"):
        return Path(kwargs["cache_dir"]), "cache_dir"
    if os.environ.get("FASTEMBED_CACHE_PATH"):
        return default_cache_dir(), "FASTEMBED_CACHE_PATH"
    return default_cache_dir(), "fastembed's default cache"


def _snapshot(description: dict[str, Any], kwargs: dict[str, Any]) -> Path | None:
    """Return the folder fastembed loads the model's files from, where it can be told."""
    if kwargs.get("specific_model_path"):
        return Path(kwargs["specific_model_path"])
    hf_repo = description["sources"].get("hf")
    if not hf_repo:
        return None
    repo = hub_cache_folder(_cache_dir(kwargs)[0], hf_repo)
    try:
        return repo / "snapshots" / (repo / "refs" / "main").read_text().strip()
    except OSError:
        return None


def _fix_files(description: dict[str, Any], kwargs: dict[str, Any]) -> str:
    """Say how to replace the model's files, wherever fastembed loads them from."""
    model_name, hf_repo = description["model"], description["sources"].get("hf")
    source = f" (from the repository {hf_repo})" if hf_repo else ""
    if kwargs.get("specific_model_path"):
        return (
            f"put {model_name}'s own files{source} in "
            f"specific_model_path={kwargs['specific_model_path']!r}."
        )
    where = hub_cache_folder(_cache_dir(kwargs)[0], hf_repo) if hf_repo else _cache_dir(kwargs)[0]
    return (
        f"delete {where} and load the model again with internet access, so that fastembed "
        f"downloads it afresh, or import a good copy{source} with "
        f"`llama-index-fastembed-rerank models import DIR {model_name}`."
    )


def _load_problem(
    error: Exception,
    description: dict[str, Any],
    kwargs: dict[str, Any],
    offline: str | None,
    unreachable: str | None,
) -> str | None:
    """Say what went wrong in a failed load and how to fix it; None where it cannot be told.

    ``offline`` names the setting that kept fastembed off the hub, and ``unreachable`` why the
    hub could not be reached, where either is known.
    """
    model_name = description["model"]
    if _fastembed.is_missing_model_error(error):
        cache = _cache_dir(kwargs)[0]
        hf_repo = description["sources"].get("hf")
        where = str(hub_cache_folder(cache, hf_repo)) if hf_repo else str(cache)
        if offline is not None:
            why = f", and {offline} kept fastembed from asking the model hub"
            first_fix = f"run once with internet access and without {offline}"
        elif unreachable is not None:
            why = (
                f" and the model hub could not be reached ({unreachable}). Where no hub is "
                "reachable, set HF_HUB_OFFLINE=1 or local_files_only=True so that a missing "
                "model fails at once"
            )
            first_fix = "run once with internet access so fastembed downloads it"
        else:
            why = (
                f" and fastembed could not download it (repository {hf_repo}; see its log)"
                if hf_repo
                else ""
            )
            first_fix = "run once with internet access so fastembed downloads it"
        return (
            f"it is not in the cache at {where}{why}. Fix it in one of these ways: {first_fix}; "
            "set cache_dir= (or FASTEMBED_CACHE_PATH) to a cache that holds it; pass "
            "specific_model_path= to a directory with its ONNX and tokenizer files; or import "
            f"a local copy with `llama-index-fastembed-rerank models import DIR {model_name}`."
        )
    if isinstance(error, OSError) and error.filename:
        cache, setting = _cache_dir(kwargs)
        place = Path(error.filename)
        if place == cache or cache in place.parents or place in cache.parents:
            reason = (
                "it is a file, not a folder"
                if cache.exists() and not cache.is_dir()
                else f"{error.strerror}: {place}"
            )
            return (
                f"the model cache {cache} ({setting}) cannot be used: {reason}. Pass cache_dir= "
                f"a folder this process can create and write in, or set FASTEMBED_CACHE_PATH "
                f"to one."
            )
        return f"{error.strerror}: {place}. Make the model's files readable by this process."
    folder = _snapshot(description, kwargs)
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
            f"damaged or incomplete: {_fix_files(description, kwargs)}"
        )
    for path in sorted(folder.glob("*.json")) if folder and folder.is_dir() else []:
        damage = _json_damage(path)
        if damage:
            return f"{path} is damaged ({damage}): {_fix_files(description, kwargs)}"
    return None


def _json_damage(path: Path) -> str:
    """Return what is wrong with a JSON file fastembed reads, or '' if nothing is."""
    try:
        json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        return f"not valid JSON: {e}"
    if path.name == "tokenizer.json":
        return _fastembed.tokenizer_file_damage(path)
    return ""


def _wrong_kind(engine_name: str, description: dict[str, Any], shape: list[Any] | None) -> str:
    """Say how the shape of a model's output shows another kind of model, or '' if it does not.

    Only dimensions the graph fixes count; named (dynamic) ones fit anything.
    """
    if shape is None:
        return ""
    fixed = [d if isinstance(d, int) else None for d in shape]
    shown_shape = "[" + ", ".join(str(d) for d in shape) + "]"
    if engine_name == "TextCrossEncoder" and (len(shape) != 2 or fixed[1] not in (1, None)):
        return (
            f"returns {shown_shape}, where a cross-encoder returns one score per "
            f"query-document pair ([batch, 1]); an embedding model returns vectors"
        )
    dim = description.get("dim")
    if engine_name == "TextEmbedding" and (
        len(shape) not in (2, 3) or (dim and fixed[-1] not in (dim, None))
    ):
        return (
            f"returns {shown_shape}, where {description['model']} returns {dim}-number vectors "
            f"([batch, tokens, {dim}] or [batch, {dim}]); a cross-encoder returns one score "
            f"per pair ([batch, 1])"
        )
    vocab = description.get("vocab_size")
    splade = not description.get("requires_idf") and vocab
    if (
        engine_name == "SparseTextEmbedding"
        and splade
        and (len(shape) != 3 or fixed[-1] not in (vocab, None))
    ):
        return (
            f"returns {shown_shape}, where a SPLADE model returns a weight for each of its "
            f"{vocab} vocabulary words per token ([batch, tokens, {vocab}])"
        )
    return ""


def _offline_mode(kwargs: dict[str, Any]) -> str | None:
    """Name the setting that keeps fastembed off the hub, as fastembed reads it; else None."""
    if kwargs.get("local_files_only"):
        return "local_files_only=True"
    value = os.environ.get("HF_HUB_OFFLINE", "")
    if value.strip().upper() in {"1", "TRUE", "YES", "ON"}:
        return f"HF_HUB_OFFLINE={value}"
    return None


def in_hub_cache(cache: Path, hf_repo: str, description: dict[str, Any]) -> bool:
    """Whether the model's files are in the cache, found as the hub client finds them."""
    from huggingface_hub import try_to_load_from_cache

    files = [description["model_file"], *description.get("additional_files", [])]
    return all(
        isinstance(try_to_load_from_cache(hf_repo, name, cache_dir=cache), str) for name in files
    )


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
