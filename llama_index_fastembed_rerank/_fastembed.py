"""Every use of fastembed beyond its public API, in one place.

fastembed's public API scores query-document pairs (``TextCrossEncoder.rerank``) and embeds
texts. This package also reads what sits behind it, as laid out in fastembed 0.9:

- the tokenizer of a loaded model (``engine.model.tokenizer``), to order pairs by length,
  count truncated texts and cut long documents into windows;
- the ONNX Runtime session (``engine.model.model``) and fastembed's input builder
  (``_build_onnx_input``), to run batches from one tokenization;
- where the model's files are (``_model_dir``, ``model_description``) and how fastembed
  builds a session (``load_onnx_model``), to load a [CLS]-pruned copy of the graph instead;
- which model class runs a model name (the facades' registries) and the options its
  constructor takes, since fastembed ignores the ones it does not know;
- which output of the session fastembed reads (``ONNX_OUTPUT_NAMES``), to run batches and
  to tell a graph of the wrong kind of model on load, and how it reads ``tokenizer.json``,
  to name a damaged one;
- the wording of its errors for a model it cannot find and a file missing beside a model.

Each accessor returns None where fastembed is not laid out so; callers then fall back to the
public API: ``TextCrossEncoder.rerank`` scores, on the published graph that fastembed loads
itself. A fastembed upgrade that moves these parts is a change to this file alone, and
``tests/test_fastembed_internals.py`` fails when an assumption made here stops holding.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

if TYPE_CHECKING:
    from tokenizers import Encoding, Tokenizer

# The start of fastembed's ValueError when a model is neither in the cache nor downloadable.
_MISSING_MODEL_ERROR = "Could not load model"
# fastembed's ValueError when a file it reads beside the model is not in the model's folder.
_MISSING_FILE_ERROR = re.compile(r"Could not find (\S+) in (.+)")
# Where each facade lists the model classes it dispatches model names to.
_REGISTRIES = ("CROSS_ENCODER_REGISTRY", "EMBEDDINGS_REGISTRY")
# Options fastembed's base classes take out of **kwargs themselves.
_BASE_OPTIONS = frozenset({"local_files_only"})


def tokenizer(engine: object) -> Tokenizer | None:
    """Return the tokenizer of a loaded fastembed cross-encoder, text or sparse embedding.

    It is fastembed's own, set up as fastembed runs the model: it truncates to the model's
    window and pads a batch to its longest text. None where fastembed keeps it elsewhere or
    has not loaded it.
    """
    found = getattr(getattr(engine, "model", None), "tokenizer", None)
    # Asked of the class: a MagicMock in fastembed's place (a user's test) answers any name.
    return found if callable(getattr(type(found), "encode_batch", None)) else None


def session(engine: object) -> ort.InferenceSession | None:
    """Return the ONNX Runtime session a loaded fastembed model runs, or None."""
    found = getattr(getattr(engine, "model", None), "model", None)
    return found if isinstance(found, ort.InferenceSession) else None


def session_runner(
    engine: object, encodings: Sequence[Encoding], lengths: list[int]
) -> Callable[[list[int]], Iterable[float]] | None:
    """Return a scorer of row batches that feeds the ONNX session the encodings made once.

    ``encodings`` come from one ``tokenizer(engine).encode_batch`` call (so they are padded
    alike) and ``lengths`` are their unpadded token counts. The scorer runs the session as
    fastembed's ``rerank`` does (the same inputs; the first logit of the first output) on the
    given rows, each batch padded only to its own longest pair. None where the engine has no
    ONNX Runtime session or its tokenizer does not pad on the right; then the caller scores
    with ``rerank``.
    """
    inner = getattr(engine, "model", None)
    run_session = session(engine)
    found = tokenizer(engine)
    build_inputs = getattr(inner, "_build_onnx_input", None)
    if run_session is None or found is None or build_inputs is None:
        return None
    if (found.padding or {}).get("direction") != "right":
        return None
    # fastembed's own inputs for all pairs, padded to the longest pair of all; a batch takes
    # its rows up to its own longest pair.
    arrays = build_inputs(encodings)
    output_names = getattr(inner, "ONNX_OUTPUT_NAMES", None)

    def run(rows: list[int]) -> Iterable[float]:
        width = max(lengths[r] for r in rows)
        feed = {name: np.ascontiguousarray(a[rows, :width]) for name, a in arrays.items()}
        return run_session.run(output_names, feed)[0][:, 0]  # type: ignore[no-any-return]

    return run


def onnx_inputs(engine: object, batch: list[tuple[str, str]] | list[str]) -> dict[str, np.ndarray]:
    """Return the session inputs fastembed builds for ``batch`` (one batch, padded alike).

    ``batch`` holds query-document pairs for a cross-encoder, texts for a text or sparse
    embedding (whose inputs fastembed builds as ``onnx_embed`` does: no segment ids).

    Raises:
        AttributeError: fastembed keeps its tokenizer or input builder elsewhere.
    """
    found = tokenizer(engine)
    if found is None:
        msg = f"{type(engine).__name__} has no tokenizer where fastembed 0.9 keeps it"
        raise AttributeError(msg)
    inner = engine.model  # type: ignore[attr-defined]
    encoded = found.encode_batch(batch)
    if hasattr(inner, "_build_onnx_input"):  # a cross-encoder
        return inner._build_onnx_input(encoded)  # type: ignore[no-any-return]
    loaded = session(engine)
    if loaded is None:
        msg = f"{type(engine).__name__} has no ONNX Runtime session loaded"
        raise AttributeError(msg)
    names = {node.name for node in loaded.get_inputs()}
    ids = np.array([e.ids for e in encoded], dtype=np.int64)
    inputs = {"input_ids": ids}
    if "attention_mask" in names:
        inputs["attention_mask"] = np.array([e.attention_mask for e in encoded], dtype=np.int64)
    if "token_type_ids" in names:
        inputs["token_type_ids"] = np.zeros_like(ids)
    return inner._preprocess_onnx_input(inputs)  # type: ignore[no-any-return]


def model_files(engine: object) -> list[Path] | None:
    """Return the ONNX file fastembed loads for ``engine``, then its external data files.

    None where fastembed does not describe the model so (no model directory, description or
    ``load_onnx_model``): its graph cannot be swapped.
    """
    inner = getattr(engine, "model", None)
    model_dir = getattr(inner, "_model_dir", None)
    description = getattr(inner, "model_description", None)
    model_file = getattr(description, "model_file", None)
    # Types checked: a MagicMock in fastembed's place (a user's test) answers any name.
    if (
        not isinstance(model_dir, str | Path)
        or not isinstance(model_file, str)
        or not callable(getattr(type(inner), "load_onnx_model", None))
    ):
        return None
    names = [model_file, *(getattr(description, "additional_files", None) or [])]
    return [Path(model_dir) / name for name in names]


def load_session(engine: object, path: Path | None = None) -> None:
    """Load the session as fastembed does, from ``path`` instead of the published file if given.

    The session gets fastembed's options for this engine (threads, providers, devices, session
    options), and the tokenizer is loaded if it was not yet.
    """
    inner = engine.model  # type: ignore[attr-defined]
    if path is None:
        inner.load_onnx_model()
        return
    published = inner.model_description
    # fastembed loads model_dir / model_file, and a Path joined with an absolute path is that
    # path; external data files are the published graph's, not this one's.
    inner.model_description = dataclasses.replace(
        published, model_file=str(Path(path).absolute()), additional_files=[]
    )
    try:
        inner.load_onnx_model()
    finally:
        inner.model_description = published


def drop_session(engine: object) -> None:
    """Release the engine's ONNX session (fastembed's ``rerank`` loads the published one again)."""
    engine.model.model = None  # type: ignore[attr-defined]


def is_missing_model_error(error: BaseException) -> bool:
    """Whether ``error`` is fastembed's: the model is neither in the cache nor downloadable."""
    return isinstance(error, ValueError) and str(error).startswith(_MISSING_MODEL_ERROR)


def missing_file(error: BaseException) -> tuple[str, Path] | None:
    """Return the file fastembed did not find and the folder it looked in, if ``error`` says so."""
    found = _MISSING_FILE_ERROR.fullmatch(str(error)) if isinstance(error, ValueError) else None
    return (found.group(1), Path(found.group(2))) if found else None


def engine_options(engine_class: type, model_name: str) -> tuple[type, frozenset[str]] | None:
    """Return the model class ``engine_class`` runs ``model_name`` with, and its options.

    The options are the keyword arguments its constructor names, the ONNX Runtime session
    options it passes on (``EXPOSED_SESSION_OPTIONS``) and ``local_files_only``: fastembed
    passes any other keyword on and ignores it. None where the facade has no registry.
    """
    registry = next(
        (found for name in _REGISTRIES if (found := getattr(engine_class, name, None))), None
    )
    for model_class in registry or ():
        supported = model_class._list_supported_models()
        if any(d.model.lower() == model_name.lower() for d in supported):
            parameters = inspect.signature(model_class.__init__).parameters.values()
            named = {
                p.name
                for p in parameters
                if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                and p.name not in ("self", "model_name")
            }
            session_options = getattr(model_class, "EXPOSED_SESSION_OPTIONS", ())
            return model_class, frozenset(named | set(session_options) | _BASE_OPTIONS)
    return None


def output_shape(engine: object) -> list[int | str | None] | None:
    """Return the shape of the session output fastembed reads (a name for each dynamic axis).

    None where the engine has no ONNX Runtime session (BM25, a static model) or fastembed
    reads an output the session does not have.
    """
    run_session = session(engine)
    if run_session is None:
        return None
    wanted = getattr(getattr(engine, "model", None), "ONNX_OUTPUT_NAMES", None)
    outputs = run_session.get_outputs()
    if wanted:
        outputs = [o for o in outputs if o.name == wanted[0]]
    return list(outputs[0].shape) if outputs else None


def tokenizer_file_damage(path: Path) -> str:
    """Return why fastembed's tokenizer library cannot load ``path``, or '' if it can."""
    from tokenizers import Tokenizer

    try:
        Tokenizer.from_file(str(path))
    except Exception as e:  # the tokenizer raises a bare Exception
        return f"the tokenizer library cannot read it: {e}"
    return ""
