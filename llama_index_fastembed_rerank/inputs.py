"""Checks of what callers pass in, whose errors name the argument."""

from __future__ import annotations

import reprlib
from collections.abc import Iterable, Mapping
from typing import TypeVar

T = TypeVar("T")


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
