"""A leaner copy of a cross-encoder's ONNX graph: the end of the last layer for [CLS] only.

A sequence-classification head reads one token of the last hidden state, [CLS] at position 0.
Every op between the last attention and that read works token by token (output projection,
bias, residual add, layer norm, feed-forward, GELU), so running them on row 0 alone gives the
same score for a fraction of their work: in MiniLM-L6 one layer's feed-forward and output
projection, an eighth of the model's multiply-adds. The copy replaces fastembed's session
only after it has returned the published graph's scores on a probe batch; any model whose
graph does not fit keeps the published one.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
from fastembed.rerank.cross_encoder import TextCrossEncoder
from onnx import helper, numpy_helper

logger = logging.getLogger(__name__)

# Ops whose output at token t depends only on their inputs at token t (with ONNX broadcasting
# against weights and biases): slicing their inputs to [CLS] slices their output to [CLS].
_ELEMENTWISE = frozenset(
    {
        "Abs", "Add", "BiasGelu", "Cast", "Div", "Erf", "Exp", "FastGelu", "Gelu", "Identity",
        "Mul", "Neg", "Pow", "Reciprocal", "Relu", "Sigmoid", "Sqrt", "Sub", "Tanh",
    }
)  # fmt: skip
_REDUCE_LAST_AXIS = frozenset({"ReduceMean", "ReduceSum"})
_SEQUENCE_AXIS = 1
# The pruned graph must return the published graph's scores within this (the benchmark's bound).
TOLERANCE = 1e-4
_PROBE_QUERY = "Which city is the capital of France?"
_PROBE_DOCUMENTS = (
    "Paris.",
    "Paris is the capital and most populous city of France, on the Seine.",
    "Lyon lies at the confluence of the Rhone and the Saone. Marseille is a port on the "
    "Mediterranean coast, and Bordeaux is known for its wine; none of them is the capital, "
    "which has been Paris for most of the history of the French state.",
)


def prune_to_cls(model: onnx.ModelProto) -> int:
    """Rewrite ``model`` in place so the ops before its [CLS] read run on position 0 only.

    The [CLS] read is a ``Gather`` of index 0, or a ``Slice`` of [0, 1), on axis 1 of the
    hidden state. Walking back from it, every token-wise op whose outputs feed nothing else
    joins the pruned region, and the region's inputs are sliced to position 0.

    Returns:
        How many ops now run on [CLS] only; 0 when the graph has no single [CLS] read or
        nothing token-wise before it, and then ``model`` is unchanged.
    """
    graph = model.graph
    constants = _constants(graph)
    nodes = list(graph.node)  # stored in topological order; positions name the nodes below
    selectors = [i for i, n in enumerate(nodes) if _reads_cls(n, constants)]
    if len(selectors) != 1:
        return 0
    (selector,) = selectors
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(nodes):
        for name in node.input:
            consumers.setdefault(name, []).append(i)
    graph_outputs = {o.name for o in graph.output}
    cls_input = nodes[selector].input[0]

    # Walking back, a node's consumers (all later in the order) are decided before it.
    region: set[int] = set()
    for i in reversed(range(selector)):
        node = nodes[i]
        if not _token_wise(node, constants) or any(o in graph_outputs for o in node.output):
            continue
        users = [(c, o) for o in node.output for c in consumers.get(o, [])]
        if users and all(c in region or (c == selector and o == cls_input) for c, o in users):
            region.add(i)
    if not region:
        return 0

    produced_in_region = {o for i in region for o in nodes[i].output}
    cls_range = _add_cls_range(graph)
    sliced: dict[str, str] = {}
    rewritten: list[onnx.NodeProto] = []
    for i, node in enumerate(nodes):
        if i in region:
            for k, name in enumerate(node.input):
                if not name or name in constants or name in produced_in_region:
                    continue
                if name not in sliced:
                    sliced[name] = f"{name}/cls"
                    # Placed before its first consumer, which comes after its producer.
                    rewritten.append(
                        helper.make_node(
                            "Slice", [name, *cls_range], [sliced[name]], name=f"{name}/cls_slice"
                        )
                    )
                node.input[k] = sliced[name]
        rewritten.append(node)
    del graph.node[:]
    graph.node.extend(rewritten)
    # Shapes recorded for the old, full-length tensors no longer hold.
    stale = [v for v in graph.value_info if v.name in produced_in_region]
    for value in stale:
        graph.value_info.remove(value)
    return len(region)


def use_pruned_graph(encoder: TextCrossEncoder) -> bool:
    """Swap ``encoder``'s ONNX session for one on a [CLS]-pruned copy of its graph.

    The copy runs under the same session options and providers. It is kept only if it returns
    the published graph's scores on a probe batch of three pairs of different lengths.

    Returns:
        Whether the pruned graph is now in use; False leaves the encoder as it was.
    """
    name = encoder.model_name
    inner = encoder.model
    published = getattr(inner, "model", None)
    if not isinstance(published, ort.InferenceSession):
        logger.info("%s: ONNX graph kept as published (no ONNX Runtime session)", name)
        return False
    mismatch = ""
    try:
        description = inner.model_description  # type: ignore[attr-defined]
        if description.additional_files:
            logger.info("%s: ONNX graph kept as published (its weights are external)", name)
            return False
        probe = inner._build_onnx_input(  # type: ignore[attr-defined]
            inner.tokenizer.encode_batch([(_PROBE_QUERY, d) for d in _PROBE_DOCUMENTS])  # type: ignore[attr-defined]
        )
        expected = published.run(None, probe)
        options = published.get_session_options()
        provider_options = published.get_provider_options()
        providers = [(p, provider_options.get(p, {})) for p in published.get_providers()]
        # The published session goes first, so that the process never holds the weights more
        # than twice (the graph being rewritten and one session); _restore() rebuilds it.
        inner.model = published = None  # type: ignore[attr-defined]
        model = onnx.load(str(Path(inner._model_dir) / description.model_file))  # type: ignore[attr-defined]
        pruned_ops = prune_to_cls(model)
        if not pruned_ops:
            logger.info("%s: ONNX graph kept as published (no [CLS] read to prune to)", name)
            _restore(inner)
            return False
        with tempfile.TemporaryDirectory(prefix="llama-index-fastembed-rerank-") as tmp:
            # From a file: a session built from bytes kept ~100 MB more memory, for good.
            path = str(Path(tmp) / "model.onnx")
            onnx.save(model, path)
            del model
            pruned = ort.InferenceSession(path, sess_options=options, providers=providers)
        mismatch = _mismatch(expected, pruned.run(None, probe))
    except Exception as e:  # any failure leaves the published graph, which works
        logger.warning(
            "%s: could not prune the ONNX graph to [CLS] (%s: %s); using the published graph",
            name,
            type(e).__name__,
            e,
        )
        _restore(inner)
        return False
    if mismatch:
        logger.warning(
            "%s: the [CLS]-pruned ONNX graph scored differently on the probe (%s); using the "
            "published graph",
            name,
            mismatch,
        )
        _restore(inner)
        return False
    inner.model = pruned  # type: ignore[attr-defined]
    logger.info("%s: %d ONNX ops of the last layer now run on [CLS] only", name, pruned_ops)
    return True


def _restore(inner: Any) -> None:  # noqa: ANN401 - fastembed's ONNX model object
    """Load the published graph again where it was dropped for the pruned copy."""
    if inner.model is None:
        inner.load_onnx_model()


def _mismatch(expected: Iterable[Any], actual: Iterable[Any]) -> str:
    """Return how two sessions' outputs differ beyond TOLERANCE, or '' where they agree."""
    for i, (want, got) in enumerate(zip(expected, actual, strict=True)):
        want, got = np.asarray(want), np.asarray(got)
        if want.shape != got.shape:
            return f"output {i} has shape {got.shape}, not {want.shape}"
        if not np.allclose(got, want, rtol=TOLERANCE, atol=TOLERANCE):
            return f"output {i} differs by up to {float(np.max(np.abs(got - want))):.2e}"
    return ""


def _constants(graph: onnx.GraphProto) -> dict[str, onnx.TensorProto]:
    values = {t.name: t for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.attribute and node.attribute[0].name == "value":
            values[node.output[0]] = node.attribute[0].t
    return values


def _int_attr(node: onnx.NodeProto, name: str, default: int) -> int:
    return next((int(a.i) for a in node.attribute if a.name == name), default)


def _ints_attr(node: onnx.NodeProto, name: str) -> list[int] | None:
    return next(([int(v) for v in a.ints] for a in node.attribute if a.name == name), None)


def _const_ints(constants: dict[str, onnx.TensorProto], name: str) -> list[int] | None:
    tensor = constants.get(name)
    if tensor is None:
        return None
    return [int(v) for v in numpy_helper.to_array(tensor).reshape(-1)]


def _reads_cls(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto]) -> bool:
    """Whether ``node`` reads position 0 of axis 1 (``hidden[:, 0]`` or ``hidden[:, 0:1]``)."""
    if node.op_type == "Gather":
        return _int_attr(node, "axis", 0) == _SEQUENCE_AXIS and _const_ints(
            constants, node.input[1]
        ) == [0]
    if node.op_type == "Slice" and len(node.input) >= 4:
        steps = _const_ints(constants, node.input[4]) if len(node.input) > 4 else [1]
        return (
            _const_ints(constants, node.input[1]) == [0]
            and _const_ints(constants, node.input[2]) == [1]
            and _const_ints(constants, node.input[3]) == [_SEQUENCE_AXIS]
            and steps == [1]
        )
    return False


def _token_wise(node: onnx.NodeProto, constants: dict[str, onnx.TensorProto]) -> bool:
    """Whether each token of ``node``'s output depends only on the same token of its inputs."""
    if node.op_type in _ELEMENTWISE:
        return True
    if node.op_type == "MatMul":
        # Activations times a weight matrix: a projection applied to every token alike.
        weight = constants.get(node.input[1])
        return node.input[0] not in constants and weight is not None and len(weight.dims) == 2
    if node.op_type == "LayerNormalization":
        return _int_attr(node, "axis", -1) == -1
    if node.op_type in _REDUCE_LAST_AXIS:
        axes = _ints_attr(node, "axes")
        if axes is None and len(node.input) > 1:  # opset 18 passes the axes as an input
            axes = _const_ints(constants, node.input[1])
        return axes == [-1] and _int_attr(node, "keepdims", 1) == 1
    return False


def _add_cls_range(graph: onnx.GraphProto) -> list[str]:
    """Add the constant inputs of ``Slice(x, [0], [1], axes=[1])``; return their names."""
    names = ["cls_slice/starts", "cls_slice/ends", "cls_slice/axes"]
    for name, value in zip(names, (0, 1, _SEQUENCE_AXIS), strict=True):
        graph.initializer.append(numpy_helper.from_array(np.array([value], np.int64), name))
    return names
