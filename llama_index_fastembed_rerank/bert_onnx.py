"""BERT as an ONNX graph, written from a safetensors checkpoint with numpy and onnx (no torch).

The graphs are written by hand in the form a ``torch.onnx.export`` of transformers' eager
attention takes: ``BertModel``'s embeddings and encoder layers (``encoder``), the masked-LM
head of ``BertForMaskedLM`` (``masked_lm_head``), and any head built from ``linear``. Inputs are
int64 ``input_ids``, ``attention_mask`` and ``token_type_ids`` of shape [batch, sequence], as
fastembed feeds them. ``read_safetensors`` reads the checkpoint without the safetensors package.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path
from typing import Any

import numpy as np

INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OPSET = 17  # the first opset with LayerNormalization
IR_VERSION = 8  # the oldest IR that opset 17 allows, so older onnxruntime builds load it too
# The safetensors dtypes a BERT checkpoint holds.
_DTYPES = {"F32": np.float32, "F16": np.float16, "I64": np.int64}


def read_safetensors(data: bytes) -> dict[str, np.ndarray]:
    """Return the tensors of a safetensors file's bytes, by name.

    The format: an 8-byte little-endian header length, a JSON header giving each tensor's
    dtype, shape and byte range, then the bytes.

    Raises:
        ValueError: The bytes are not a safetensors file, or hold a dtype BERT has not.
    """
    try:
        (length,) = struct.unpack("<Q", data[:8])
        header = json.loads(data[8 : 8 + length])
    except (struct.error, ValueError) as e:
        msg = f"not a safetensors file ({type(e).__name__}: {e})"
        raise ValueError(msg) from e
    start = 8 + length
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        dtype = _DTYPES.get(entry["dtype"])
        if dtype is None:
            msg = f"tensor {name!r} has dtype {entry['dtype']}, which a BERT checkpoint has not"
            raise ValueError(msg)
        begin, end = entry["data_offsets"]
        array = np.frombuffer(data[start + begin : start + end], dtype=dtype)
        tensors[name] = array.reshape(entry["shape"]).copy()
    return tensors


def bert_weights(safetensors: bytes) -> dict[str, np.ndarray]:
    """Read fp32 weights under the names ``encoder`` uses, those of ``BertModel``.

    Masked-LM checkpoints put the encoder under ``bert.``, and checkpoints converted from
    TensorFlow name LayerNorm's parameters ``gamma`` and ``beta``, which transformers reads as
    ``weight`` and ``bias``.
    """
    renamed = {"gamma": "weight", "beta": "bias"}
    weights = {}
    for name, value in read_safetensors(safetensors).items():
        module, _, parameter = name.removeprefix("bert.").rpartition(".")
        weights[f"{module}.{renamed.get(parameter, parameter)}"] = value
    return weights


class Graph:
    """Collects nodes and initializers; every op gets a fresh output name unless one is given."""

    def __init__(self) -> None:
        """Start an empty graph."""
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []

    def const(self, value: np.ndarray, name: str | None = None) -> str:
        """Add ``value`` as an initializer; return its name."""
        from onnx import numpy_helper

        name = name or f"const_{len(self.initializers)}"
        self.initializers.append(numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        """Add an ``op_type`` node on ``inputs``; return its output's name."""
        from onnx import helper

        name = f"/{op_type}_{len(self.nodes)}"
        out = out or f"{name}_output"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=name, **attrs))
        return out


def linear(
    g: Graph, weights: dict[str, np.ndarray], x: str, prefix: str, out: str | None = None
) -> str:
    """Add ``x @ W^T + b`` with the torch ``Linear`` weights under ``prefix``."""
    # torch Linear stores [out, in]; store the transpose so the graph computes x @ W^T + b.
    weight = g.const(weights[f"{prefix}.weight"].T, f"{prefix}.weight.T")
    bias = g.const(weights[f"{prefix}.bias"], f"{prefix}.bias")
    return g.op("Add", g.op("MatMul", x, weight), bias, out=out)


def _layer_norm(g: Graph, weights: dict[str, np.ndarray], x: str, prefix: str, eps: float) -> str:
    scale = g.const(weights[f"{prefix}.weight"], f"{prefix}.weight")
    bias = g.const(weights[f"{prefix}.bias"], f"{prefix}.bias")
    return g.op("LayerNormalization", x, scale, bias, axis=-1, epsilon=eps)


def _gelu(g: Graph, x: str) -> str:
    """Exact erf GELU (hidden_act "gelu"): x * (1 + erf(x / sqrt(2))) * 0.5."""
    sqrt2, one, half = (g.const(np.array(v, np.float32)) for v in (math.sqrt(2.0), 1.0, 0.5))
    erf = g.op("Add", g.op("Erf", g.op("Div", x, sqrt2)), one)
    return g.op("Mul", g.op("Mul", x, erf), half)


def encoder(g: Graph, weights: dict[str, np.ndarray], config: dict[str, Any]) -> str:
    """Add the BERT embeddings and encoder layers; return the last hidden state's name."""
    size, heads = config["hidden_size"], config["num_attention_heads"]
    eps = float(config["layer_norm_eps"])

    def f32(value: float) -> str:
        return g.const(np.array(value, np.float32))

    def i64(value: int | list[int]) -> str:
        return g.const(np.array(value, np.int64))

    def layer_norm(x: str, prefix: str) -> str:
        return _layer_norm(g, weights, x, prefix, eps)

    def table(name: str, ids: str) -> str:
        name = f"embeddings.{name}.weight"
        return g.op("Gather", g.const(weights[name], name), ids)

    # Position ids are arange(sequence), computed from the input shape as the export does.
    seq_len = g.op("Gather", g.op("Shape", "input_ids"), i64(1), axis=0)
    positions = g.op("Range", i64(0), seq_len, i64(1))
    # Summed in transformers' order (word + token type, then position) for the closest match.
    words = table("word_embeddings", "input_ids")
    x = g.op("Add", words, table("token_type_embeddings", "token_type_ids"))
    x = g.op("Add", x, table("position_embeddings", positions))
    x = layer_norm(x, "embeddings.LayerNorm")

    # Extended mask [batch, 1, 1, seq] = (1 - mask) * float32 min, as transformers builds it.
    mask = g.op("Cast", g.op("Unsqueeze", "attention_mask", i64([1, 2])), to=1)  # 1 = FLOAT
    mask = g.op("Mul", g.op("Sub", f32(1.0), mask), f32(np.finfo(np.float32).min))

    split = i64([0, 0, heads, size // heads])  # in Reshape, 0 keeps that input dim
    merge = i64([0, 0, size])
    scale = f32(math.sqrt(size // heads))

    def heads_of(x: str, prefix: str, perm: list[int]) -> str:
        return g.op("Transpose", g.op("Reshape", linear(g, weights, x, prefix), split), perm=perm)

    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        # Keys go straight to [batch, heads, head_dim, seq] so QK^T is a plain MatMul.
        q = heads_of(x, f"{p}.attention.self.query", [0, 2, 1, 3])
        k = heads_of(x, f"{p}.attention.self.key", [0, 2, 3, 1])
        v = heads_of(x, f"{p}.attention.self.value", [0, 2, 1, 3])
        scores = g.op("Add", g.op("Div", g.op("MatMul", q, k), scale), mask)
        context = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)
        context = g.op("Reshape", g.op("Transpose", context, perm=[0, 2, 1, 3]), merge)
        attended = linear(g, weights, context, f"{p}.attention.output.dense")
        x = layer_norm(g.op("Add", attended, x), f"{p}.attention.output.LayerNorm")

        gelu = _gelu(g, linear(g, weights, x, f"{p}.intermediate.dense"))
        out = linear(g, weights, gelu, f"{p}.output.dense")
        x = layer_norm(g.op("Add", out, x), f"{p}.output.LayerNorm")
    return x


def masked_lm_head(
    g: Graph, weights: dict[str, np.ndarray], config: dict[str, Any], hidden: str, out: str
) -> str:
    """Add ``BertForMaskedLM``'s head: dense, GELU, LayerNorm, then a logit per vocabulary word."""
    x = _gelu(g, linear(g, weights, hidden, "cls.predictions.transform.dense"))
    eps = float(config["layer_norm_eps"])
    x = _layer_norm(g, weights, x, "cls.predictions.transform.LayerNorm", eps)
    # The decoder is tied to the word embeddings: transposing that initializer keeps one copy in
    # the file, and onnxruntime folds the transpose once when it loads the model.
    decoder = g.op("Transpose", "embeddings.word_embeddings.weight", perm=[1, 0])
    bias = g.const(weights["cls.predictions.bias"], "cls.predictions.bias")
    return g.op("Add", g.op("MatMul", x, decoder), bias, out=out)


def save(g: Graph, output: str, output_shape: list[str | int], folder: Path) -> None:
    """Check the graph and write it as ``folder/model.onnx``, with ``output`` its only output."""
    import onnx
    from onnx import TensorProto, helper

    dims = ["batch", "sequence"]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, dims) for n in INPUT_NAMES]
    outputs = [helper.make_tensor_value_info(output, TensorProto.FLOAT, output_shape)]
    graph = helper.make_graph(g.nodes, "bert", inputs, outputs, initializer=g.initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="llama-index-fastembed-rerank",
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "model.onnx"))
