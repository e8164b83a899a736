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
import tempfile
import textwrap
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from fastembed.common.types import Device
from pydantic import BaseModel, Field, PrivateAttr, field_validator, model_validator

from . import _fastembed
from .batching import DEFAULT_MAX_BATCH_TOKENS, length_batches

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
# Held while a model loads, so two threads asking for the same model load it once.
_LOAD_LOCK = threading.Lock()
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
            with _LOAD_LOCK:
                engine = _LOADED.get(key)
                if engine is None:
                    lazy = {"lazy_load": True} if prepare is not None else {}
                    engine = _load(engine_class, model_name, {**kwargs, **lazy})
                    if prepare is not None:
                        prepare(engine)
                    _LOADED[key] = engine
        with _RECENT_LOCK:
            _RECENT[key] = (type(self), engine)
            _RECENT.move_to_end(key)
            while len(_RECENT) > KEEP_LOADED:
                _RECENT.popitem(last=False)
        # Options may change after a load (validate_assignment allows it): the key tells.
        self._engine.loaded = (key, engine)
        return engine

    @classmethod
    def release_models(cls) -> None:
        """Stop keeping this class's models loaded for reuse.

        Each is freed once no instance holds it any more: instances still alive keep theirs.
        """
        with _RECENT_LOCK:
            for key in [k for k, (owner, _) in _RECENT.items() if issubclass(owner, cls)]:
                del _RECENT[key]


def _load(engine_class: type[E], model_name: str, kwargs: dict[str, Any]) -> E:
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
    cache = Path(kwargs["cache_dir"]) if kwargs.get("cache_dir") else default_cache_dir()
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
        return engine_class(model_name, **kwargs)  # type: ignore[call-arg]
    except ValueError as e:
        # fastembed's own message names neither the place it looked nor the fix.
        if not _fastembed.is_missing_model_error(e):
            raise
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
        msg = (
            f"Could not load {engine_class.__name__} model {model_name!r}: it is not in the "
            f"cache at {where}{why}. Fix it in one of these ways: {first_fix}; set "
            "cache_dir= (or FASTEMBED_CACHE_PATH) to a cache that holds it; pass "
            "specific_model_path= to a directory with its ONNX and tokenizer files; or import "
            f"a local copy with `llama-index-fastembed-rerank models import DIR {model_name}`."
        )
        raise ValueError(msg) from e


class FastEmbedEmbeddingOptions(FastEmbedEngineOptions):
    """The options of both embedding classes (dense and sparse) besides the engine's."""

    # fastembed's default is 256: on a CPU big batches only add padding and memory, and a
    # SPLADE model's output is batch x tokens x its 30,522-word vocabulary.
    batch_size: int = Field(
        default=64,
        ge=1,
        description="Most texts per ONNX run (fastembed's `batch_size`).",
    )
    max_batch_tokens: int | None = Field(
        default=DEFAULT_MAX_BATCH_TOKENS,
        ge=1,
        description=(
            "Most tokens per ONNX run, padding included (texts times the longest text's "
            "tokens); a longer text runs alone. `None` leaves batching to `batch_size`. Small "
            "runs are fastest on a CPU; on a GPU raise it or pass `None`."
        ),
    )

    parallel: int | None = Field(
        default=None,
        ge=0,
        description=(
            "fastembed's data parallelism for large ingestion: worker processes, `0` for one per "
            "core, `None` for one process on ONNX Runtime's threads."
        ),
    )
    # LlamaIndex's default of 10 would cut fastembed's batches to 10 texts.
    embed_batch_size: int = Field(
        default=2048,
        gt=0,
        le=2048,
        description="Texts LlamaIndex hands over per call (callbacks, progress).",
    )

    def _embed_passages(self, engine: Any, texts: list[str]) -> list[Any]:  # noqa: ANN401
        """Return fastembed's ``passage_embed`` vector of each text, in input order.

        The texts run in order of token length, in batches within ``batch_size`` and
        ``max_batch_tokens``: fastembed pads a batch to its longest text, and a text's vector
        does not depend on its batch.
        """
        tokenizer = _fastembed.tokenizer(engine)
        if tokenizer is None or self.parallel is not None:
            # No tokenizer (BM25), or worker processes, which start anew on every call: one
            # call, in character order.
            batches = [sorted(range(len(texts)), key=lambda i: len(texts[i]))]
        else:
            lengths = [sum(e.attention_mask) for e in tokenizer.encode_batch(texts)]
            batches = list(length_batches(lengths, self.batch_size, self.max_batch_tokens))
        vectors: list[Any] = [None] * len(texts)
        for rows in batches:
            batch = engine.passage_embed(
                [texts[i] for i in rows], batch_size=self.batch_size, parallel=self.parallel
            )
            for i, vector in zip(rows, batch, strict=True):
                vectors[i] = vector
        return vectors


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
