"""The options every class here shares, under fastembed's names, and how they are checked.

``FastEmbedEngineOptions`` is the base of the three public classes: fastembed's engine options
as validated pydantic fields, the model loaded on first use (shared through ``model_cache``),
and ``warm_up``/``release_models``. ``document_options`` writes each class's ``Args:`` from
its fields' descriptions, so that an option's text is written once.
"""

from __future__ import annotations

import difflib
import sys
import textwrap
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, TypeVar

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
from .loading import find_model
from .model_cache import EngineSlot, release_models, shared_engine

if TYPE_CHECKING:
    from typing_extensions import Self  # typing's own from Python 3.11

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

M = TypeVar("M", bound=BaseModel)


def document_options(cls: type[M], names: Sequence[str] | None = None) -> type[M]:
    """End ``cls``'s docstring with an ``Args:`` section made of its options' descriptions.

    Each option's text is written once, in its ``Field(description=...)``: ``help()``, the JSON
    schema and the docs' option tables (checked against it by a test) all show that text.
    ``names`` are the options to list; by default the fields this package's option classes
    declare (those of LlamaIndex's base classes are left to LlamaIndex's documentation).
    """
    own = names or [
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


def _masked_providers(providers: Any) -> Any:  # noqa: ANN401 - the providers option
    """Return ``providers`` with the values of each provider's options replaced by "***"."""
    if not isinstance(providers, list):
        return providers
    return [
        (p[0], {key: "***" for key in p[1]}) if isinstance(p, tuple) and len(p) == 2 else p
        for p in providers
    ]


class FastEmbedEngineOptions(BaseModel):
    """fastembed's engine options, under fastembed's own names, shared by the three classes."""

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
    quantize: Literal["int8"] | None = Field(
        default=None,
        description=(
            '`"int8"` runs an int8 copy of the model\'s ONNX graph (for a reranker, of its '
            "[CLS]-pruned graph): about twice as fast on a CPU, with vectors and scores close to "
            "the published graph's but not equal (docs/performance.md). The copy is made on the "
            "first load and kept beside the model; a model published quantized runs as it is. "
            "`None` runs the published weights. BM25 has no weights to quantize."
        ),
    )

    _engine: EngineSlot = PrivateAttr(default_factory=EngineSlot)
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

    @field_validator("*")
    @classmethod
    def _known_model(cls, value: Any, info: ValidationInfo) -> Any:  # noqa: ANN401
        if info.field_name == cls._model_field:
            find_model(cls._engine_class, value)
        return value

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

    @field_validator("quantize", mode="before")
    @classmethod
    def _known_quantization(cls, value: Any) -> Any:  # noqa: ANN401 - pydantic's raw input
        if value is not None and value != "int8":
            msg = (
                f"quantize must be 'int8' or None, got {value!r}: pass quantize='int8' to run "
                f"an int8 copy of the model, or leave it out (None) to run its published weights"
            )
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

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        """What ``repr`` and ``str`` show: the options, with provider options' values masked.

        A provider's options can hold credentials (``("...ExecutionProvider", {...})``);
        serialization keeps them, printing and logging do not show them.
        """
        for name, value in super().__repr_args__():
            yield name, _masked_providers(value) if name == "providers" else value

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """Return a copy, with ``update`` checked as the constructor checks options.

        pydantic's own ``model_copy`` sets ``update`` unchecked (``top_n=-1`` would silently
        drop nodes); here a value the constructor refuses raises a ``ValidationError``. The
        copy has an engine slot of its own: it shares the process's model on first use.
        """
        copied = super().model_copy(deep=deep)
        if not update:
            copied._engine = EngineSlot()
            return copied
        values = {name: getattr(copied, name) for name in type(self).model_fields}
        return type(self).model_validate({**values, **update})

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

    @classmethod
    def _engine_at_use(cls) -> type[Any]:
        """Return the fastembed class as the class's own module names it now.

        Looked up at use, so that a test patching ``llama_index_fastembed_rerank.rerank.
        TextCrossEncoder`` (the haystack pattern) or a user's ``unittest.mock.patch`` of it
        gets its fake loaded; validation keeps asking fastembed's real registry.
        """
        owner = next(k for k in cls.__mro__ if "_engine_class" in vars(k))
        module = sys.modules[owner.__module__]
        return getattr(module, cls._engine_class.__name__, cls._engine_class)

    def _prepare(self) -> Callable[[Any], object] | None:
        """Return what loads a newly built model's session in a class's own way, if anything."""
        return None

    def _model(self) -> Any:  # noqa: ANN401 - the fastembed class of each subclass
        """Return the loaded fastembed model for the current options, loading it on first use."""
        return shared_engine(
            self._engine,
            type(self),
            self._engine_at_use(),
            getattr(self, self._model_field),
            self.engine_kwargs(),
            self._prepare(),
            registry=self._engine_class,
        )

    def warm_up(self) -> None:
        """Load the model now, e.g. so a service fails at start rather than on a query."""
        self._model()

    @classmethod
    def release_models(cls) -> None:
        """Stop keeping this class's models loaded for reuse.

        Each is freed once no instance holds it any more: instances still alive keep theirs.
        """
        release_models(cls)
