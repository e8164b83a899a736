"""A leaner copy of a cross-encoder's ONNX graph: the end of the last layer for [CLS] only.

A sequence-classification head reads one token of the last hidden state, [CLS] at position 0.
Every op between the last attention and that read works token by token (output projection,
bias, residual add, layer norm, feed-forward, GELU), so running them on row 0 alone gives the
same score for a fraction of their work: in MiniLM-L6 one layer's feed-forward and output
projection, an eighth of the model's multiply-adds. ``prune_to_cls`` is the rewrite, on an
ONNX graph; ``use_pruned_graph`` runs a reranker on the copy that ``kept_graph`` keeps.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .kept_graph import mismatch, use_kept_graph

if TYPE_CHECKING:
    import onnx
    from fastembed.rerank.cross_encoder import TextCrossEncoder

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
# The version of the rewrite below: graphs rewritten by another version are not reused.
REWRITE_VERSION = 1
# The pruned graph must return the published graph's scores within this (the benchmark's bound).
TOLERANCE = 1e-4
# Three pairs of different lengths (so two are padded), short: every load runs them.
_PROBE = tuple(("capital of France", d) for d in ("Yes", "Paris.", "Paris, in France."))


class ClsPruning:
    """The [CLS] pruning as a ``kept_graph.GraphRewrite``: scores equal the published graph's."""

    label = "[CLS]-pruned"
    probe: Sequence[tuple[str, str]] = _PROBE

    @property
    def version(self) -> int:
        """The rewrite's version, ``REWRITE_VERSION``."""
        return REWRITE_VERSION

    @property
    def suffix(self) -> str:
        """The kept copy's name part: ``cls-pruned-v1``."""
        return f"cls-pruned-v{REWRITE_VERSION}"

    def apply(self, model: onnx.ModelProto) -> str:
        """Prune ``model`` in place (``prune_to_cls``); say how many ops now run on [CLS]."""
        count = prune_to_cls(model)
        return f"{count} ONNX ops of the last layer now run on [CLS] only" if count else ""

    def fingerprint(self, outputs: Sequence[Any]) -> list[Any]:
        """All of the probe's outputs: a cross-encoder's scores are small."""
        return list(outputs)

    def accept(self, published: Sequence[Any], rewritten: Sequence[Any]) -> str:
        """Refuse scores that differ from the published graph's by more than ``TOLERANCE``."""
        return mismatch(published, rewritten, TOLERANCE)


def use_pruned_graph(encoder: TextCrossEncoder) -> bool:
    """Load ``encoder``'s session from its [CLS]-pruned graph (see ``kept_graph``).

    Returns:
        Whether the pruned graph is now in use.
    """
    return use_kept_graph(encoder, ClsPruning())


def prune_to_cls(model: onnx.ModelProto) -> int:
    """Rewrite ``model`` in place so the ops before its [CLS] read run on position 0 only.

    The [CLS] read is a ``Gather`` of index 0, or a ``Slice`` of [0, 1), on axis 1 of the
    hidden state. Walking back from it, every token-wise op whose outputs feed nothing else
    joins the pruned region, and the region's inputs are sliced to position 0.

    Returns:
        How many ops now run on [CLS] only; 0 when the graph has no single [CLS] read or
        nothing token-wise before it, and then ``model`` is unchanged.
    """
    from onnx import helper

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
    from onnx import numpy_helper

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
    from onnx import numpy_helper

    names = ["cls_slice/starts", "cls_slice/ends", "cls_slice/axes"]
    for name, value in zip(names, (0, 1, _SEQUENCE_AXIS), strict=True):
        graph.initializer.append(numpy_helper.from_array(np.array([value], np.int64), name))
    return names
