"""The models loaded in this process, shared by every instance with the same configuration.

One loaded model per process for each (fastembed class, model, engine options, preparation):
every instance configured alike shares it. The last ``KEEP_LOADED`` models handed out stay
loaded after their last instance is gone, so that an app building a reranker per request
loads its model once; ``release_models()`` lets them go, and a model is freed once nothing
holds it any more.
"""

from __future__ import annotations

import itertools
import json
import threading
import weakref
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from .cache_layout import cache_dir
from .loading import load

E = TypeVar("E")
Key = tuple[str, str]

# How many models stay loaded once no instance holds them: the most recently handed out. A
# query engine per request typically needs one reranker and one or two embedding models.
KEEP_LOADED = 3

_LOADED: weakref.WeakValueDictionary[Key, Any] = weakref.WeakValueDictionary()
# One lock per model key, held while that model loads: two threads asking for the same model
# load it once, and a slow load (a download, a graph rewrite) holds up no other model.
_LOAD_LOCKS: weakref.WeakValueDictionary[Key, threading.Lock] = weakref.WeakValueDictionary()
_LOAD_LOCKS_LOCK = threading.Lock()
# The models kept loaded for reuse, least recently handed out first, with the class that
# asked for them (release_models() lets a class release its own).
_RECENT: OrderedDict[Key, tuple[type[Any], Any]] = OrderedDict()
_RECENT_LOCK = threading.Lock()
# A number for each engine "class" that is not a class (a MagicMock a test patches in), for as
# long as it lives: a later mock at the same address is another engine.
_OBJECT_NUMBERS: weakref.WeakKeyDictionary[Any, int] = weakref.WeakKeyDictionary()
_NUMBERS = itertools.count()


class EngineSlot:
    """An instance's loaded model; copies and pickles come back empty and reload on first use.

    ONNX Runtime sessions cannot be pickled, and a copy should share the process-wide model
    rather than duplicate it.
    """

    __slots__ = ("loaded",)

    def __init__(self) -> None:
        """Start empty: the model loads on first use."""
        self.loaded: tuple[Key, Any] | None = None

    def __reduce__(self) -> tuple[type[EngineSlot], tuple[()]]:
        """Pickle as an empty slot."""
        return (EngineSlot, ())


def shared_engine(
    slot: EngineSlot,
    owner: type[Any],
    engine_class: type[E],
    model_name: str,
    engine_kwargs: dict[str, Any],
    prepare: Callable[[E], object] | None = None,
    registry: type[Any] | None = None,
) -> E:
    """Return the loaded fastembed model for this configuration, loading it on first use.

    ``slot`` holds it for the asking instance, and ``owner`` (its class) is the one whose
    ``release_models()`` lets it go. ``prepare`` runs once on a newly built model, which
    fastembed builds with ``lazy_load=True`` so that ``prepare`` loads its session itself;
    models prepared differently are not shared. ``registry`` is the fastembed class that
    describes the model, where ``engine_class`` (a test's fake or mock) may not.
    """
    key = _key(engine_class, model_name, engine_kwargs, prepare)
    loaded = slot.loaded
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
                engine = load(engine_class, model_name, engine_kwargs, prepare, registry)
                _LOADED[key] = engine
    with _RECENT_LOCK:
        _RECENT[key] = (owner, engine)
        _RECENT.move_to_end(key)
        # Freed after the lock is let go: closing an ONNX session takes a while.
        evicted = [_RECENT.popitem(last=False) for _ in range(len(_RECENT) - KEEP_LOADED)]
    del evicted
    # Options may change after a load (validate_assignment allows it): the key tells.
    slot.loaded = (key, engine)
    return engine


def release_models(owner: type[Any]) -> None:
    """Stop keeping the models ``owner`` (or a subclass) asked for loaded for reuse."""
    with _RECENT_LOCK:
        released = [
            _RECENT.pop(k)
            for k, (asked_by, _) in list(_RECENT.items())
            if issubclass(asked_by, owner)
        ]
    del released  # freed here, outside the lock


def _key(
    engine_class: type[Any],
    model_name: str,
    engine_kwargs: dict[str, Any],
    prepare: Callable[..., object] | None,
) -> Key:
    # The default cache is resolved here: FASTEMBED_CACHE_PATH may change in between.
    folders = {"cache_dir": cache_dir(engine_kwargs)[0]}
    if engine_kwargs.get("specific_model_path"):
        folders["specific_model_path"] = Path(engine_kwargs["specific_model_path"])
    # A trailing slash, a relative path or a link is still the same folder: resolved as the
    # load would find it now.
    where = {name: str(folder.resolve()) for name, folder in folders.items()}
    return (
        f"{_class_name(engine_class)}:{model_name}",
        json.dumps({**engine_kwargs, **where}, sort_keys=True, default=repr)
        + (f"|{prepare.__module__}.{prepare.__qualname__}" if prepare else ""),
    )


def _class_name(engine_class: Any) -> str:  # noqa: ANN401 - a class, or what a test patched in
    """Name the engine class in a model's key; any callable will do (a test's MagicMock)."""
    name = getattr(engine_class, "__qualname__", None) if isinstance(engine_class, type) else None
    if isinstance(name, str):
        return f"{engine_class.__module__}.{name}"
    kind = type(engine_class)
    try:
        number = _OBJECT_NUMBERS.get(engine_class)
        if number is None:
            number = _OBJECT_NUMBERS.setdefault(engine_class, next(_NUMBERS))
    except TypeError:  # neither hashable nor weakly referable: known by its address
        number = id(engine_class)
    return f"{kind.__module__}.{kind.__qualname__}#{number}"
