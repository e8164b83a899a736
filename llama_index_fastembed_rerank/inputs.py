"""Checks of what callers pass in, whose errors name the argument, and warnings about it.

A warning about the input points at the caller's own line, not at this package or LlamaIndex.
"""

from __future__ import annotations

import reprlib
import sys
import warnings
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import llama_index.core
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]

from . import _fastembed

if TYPE_CHECKING:
    from tokenizers import Encoding

T = TypeVar("T")

# Frames in these directories are skipped so that a warning points at the caller's code.
_INTERNAL_DIRS = tuple(
    str(Path(path).parent)
    for path in (
        __file__,
        llama_index.core.__file__,
        sys.modules[type(get_dispatcher(__name__)).__module__].__file__,
    )
    if path
)


def shown(value: object) -> str:
    """Describe ``value`` briefly for an error message: its type, and a short repr of data."""
    if value is None:
        return "None"
    if isinstance(value, str | bytes | int | float | list | tuple | dict | set):
        return f"{type(value).__name__} {reprlib.repr(value)}"
    return f"a {type(value).__name__}"


def checked_list(name: str, value: object, item_type: type[T], fix: str) -> list[T]:
    """Return ``value`` (any iterable) as a list whose items are all ``item_type``.

    Raises:
        TypeError: ``value`` is a single item, a string, a mapping or not iterable, or holds
            an item of another type; the message names the argument ``name`` and ``fix``.
    """
    kind = f"{name} must be a list of {item_type.__name__}"
    if isinstance(value, item_type | str | bytes | Mapping) or not isinstance(value, Iterable):
        msg = f"{kind}, got {shown(value)}: {fix}"
        raise TypeError(msg)
    items = list(value)
    for i, item in enumerate(items):
        if not isinstance(item, item_type):
            msg = f"{kind}, but {name}[{i}] is {shown(item)}: {fix}"
            raise TypeError(msg)
    return items


def checked_text(name: str, value: object) -> str:
    """Return ``value`` if it is a string.

    Raises:
        TypeError: It is not; the message names the argument ``name``.
    """
    if not isinstance(value, str):
        msg = f"{name} must be a str, got {shown(value)}"
        raise TypeError(msg)
    return value


def caller_stacklevel() -> int:
    """Return the stacklevel of the first frame outside this package and LlamaIndex core."""
    level, frame = 1, sys._getframe(1)
    while frame.f_back is not None and frame.f_code.co_filename.startswith(_INTERNAL_DIRS):
        level, frame = level + 1, frame.f_back
    return level


def warn(message: str) -> None:
    """Warn the caller: the warning points at the first frame outside this package."""
    warnings.warn(message, UserWarning, stacklevel=caller_stacklevel())


class TruncationWarning(UserWarning):
    """Texts longer than a model's window were truncated: their ends count for nothing.

    Its attributes let a caller that makes many calls (the command line) add the counts up
    and say it once.
    """

    def __init__(
        self,
        truncated: int,
        total: int,
        window: int,
        model_name: str,
        items: str,
        done: str,
        fix: str,
    ) -> None:
        """Describe ``truncated`` of ``total`` ``items`` cut to ``window`` tokens."""
        self.truncated, self.total, self.window = truncated, total, window
        self.model_name, self.items, self.done, self.fix = model_name, items, done, fix
        super().__init__(self.text())

    def text(self, truncated: int | None = None, total: int | None = None) -> str:
        """Say it, for these counts (its own by default)."""
        return (
            f"{self.truncated if truncated is None else truncated} of "
            f"{self.total if total is None else total} {self.items} were longer than the "
            f"{self.window}-token window of {self.model_name} and were truncated as fastembed "
            f"does, so their ends are not {self.done}: {self.fix}"
        )


def warn_truncated(
    model_name: str,
    encodings: Sequence[Encoding],
    items: str,
    done: str,
    fix: str | None = None,
) -> None:
    """Warn how many of the tokenized ``items`` fastembed truncated to the model's window.

    ``encodings`` come from the model's own tokenizer, which truncates and pads as fastembed
    does; ``done`` is what happens to the text ("scored", "embedded"); ``fix`` what to do.
    """
    truncated = sum(1 for e in encodings if e.overflowing)
    if truncated:
        fix = fix or f"split long documents into smaller chunks to have all of their text {done}"
        warning = TruncationWarning(
            truncated, len(encodings), len(encodings[0].ids), model_name, items, done, fix
        )
        warnings.warn(warning, stacklevel=caller_stacklevel())


def warn_truncated_texts(engine: object, texts: list[str]) -> None:
    """Tokenize ``texts`` with the engine's tokenizer and warn how many were truncated.

    Nothing is said where the engine has no tokenizer that truncates (BM25, or a fastembed
    that keeps its tokenizer elsewhere).
    """
    tokenizer = _fastembed.tokenizer(engine)
    if tokenizer is not None and texts:
        name = getattr(engine, "model_name", "the model")
        warn_truncated(name, tokenizer.encode_batch(texts), "texts", "embedded")
