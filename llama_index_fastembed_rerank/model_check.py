"""Whether a model's files are what its name needs: the right kind of model, and undamaged.

One rule for each, used when a model loads and when ``models import`` copies files into the
cache: a text embedding returns a vector per token (or per text) of the model's size, a
cross-encoder one logit per query-document pair, a SPLADE model a weight per vocabulary word
per token; JSON files must parse, and ``tokenizer.json`` must load in the tokenizer library.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import _fastembed

# What each fastembed class is called where models are listed, and in messages.
KINDS = {
    "TextEmbedding": "embedding",
    "SparseTextEmbedding": "sparse",
    "TextCrossEncoder": "rerank",
}
KIND_NOUNS = {
    "embedding": "a text embedding model",
    "sparse": "a sparse model",
    "rerank": "a cross-encoder",
}

Shape = Sequence[int | str | None]


def wrong_kind(
    kind: str,
    description: dict[str, Any],
    shape: Shape | None,
    architectures: Sequence[str] = (),
) -> str:
    """Say how a graph's output ``shape`` or its config shows another kind of model; else ''.

    ``kind`` is the kind the model's name stands for (a value of ``KINDS``); ``shape`` is the
    shape of the output fastembed reads, a name (or None) for each dynamic axis; and
    ``architectures`` those listed in the model's ``config.json``. Only the dimensions the
    graph fixes count: named (dynamic) ones fit anything.
    """
    found = _shape_problem(kind, description, shape) if shape is not None else ""
    classifier = any(a.endswith("ForSequenceClassification") for a in architectures)
    if not found and kind == "rerank" and architectures and not classifier:
        found = f"its config.json describes a {architectures[0]}, not a sequence classifier"
    if not found and kind == "embedding" and classifier:
        found = f"its config.json describes a {architectures[0]}, a cross-encoder"
    return found


def _shape_problem(kind: str, description: dict[str, Any], shape: Shape) -> str:
    fixed = [d if isinstance(d, int) and d > 0 else None for d in shape]
    shown = "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"
    if kind == "rerank" and (len(shape) != 2 or fixed[1] not in (1, None)):
        return (
            f"returns {shown}, where a cross-encoder returns one score per query-document "
            f"pair ([batch, 1]); an embedding model returns vectors"
        )
    dim = description.get("dim")
    if kind == "embedding" and (
        len(shape) not in (2, 3)
        or (len(shape) == 2 and fixed[-1] == 1)
        or (dim and fixed[-1] not in (dim, None))
    ):
        return (
            f"returns {shown}, where {description['model']} returns {dim}-number vectors "
            f"([batch, tokens, {dim}] or [batch, {dim}]); a cross-encoder returns one score "
            f"per pair ([batch, 1])"
        )
    vocab = description.get("vocab_size")
    splade = not description.get("requires_idf") and vocab
    if kind == "sparse" and splade and (len(shape) != 3 or fixed[-1] not in (vocab, None)):
        return (
            f"returns {shown}, where a SPLADE model returns a weight for each of its "
            f"{vocab} vocabulary words per token ([batch, tokens, {vocab}])"
        )
    return ""


def graph_output_shape(model_file: Path) -> tuple[list[int | str | None], list[str]]:
    """Return the shape of an ONNX graph's first output and the names of its inputs.

    Raises:
        ValueError: The file is not a readable ONNX model.
    """
    import onnx

    try:
        graph = onnx.load(str(model_file), load_external_data=False).graph
    except Exception as e:  # onnx raises protobuf's DecodeError and others for a broken file
        msg = f"is not a readable ONNX model ({type(e).__name__}: {e})"
        raise ValueError(msg) from e
    dims = graph.output[0].type.tensor_type.shape.dim
    shape = [d.dim_value or d.dim_param or None for d in dims]
    return shape, [i.name for i in graph.input]


def architectures(config_file: Path | None) -> list[str]:
    """Return the architectures a model's ``config.json`` lists (none if there is no file)."""
    if config_file is None:
        return []
    config = json.loads(config_file.read_text(encoding="utf-8"))
    found = config.get("architectures") if isinstance(config, dict) else None
    return [a for a in found or [] if isinstance(a, str)]


def file_damage(path: Path) -> str:
    """Say what is wrong with a JSON file fastembed reads, as "is ..."; '' if nothing is."""
    try:
        json.loads(path.read_bytes())
    except (ValueError, UnicodeDecodeError) as e:
        return f"is not valid JSON ({e})"
    if path.name == "tokenizer.json":
        damage = _fastembed.tokenizer_file_damage(path)
        if damage:
            return f"is damaged: {damage}"
    return ""
