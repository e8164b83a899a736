"""An int8 copy of a transformer's ONNX graph, and a test for graphs that are quantized already.

The scheme was chosen by measurement on a CPU with AVX512-VNNI (``benchmarks/int8.py``;
docs/performance.md has the figures), among onnxruntime's own tools:

- Dynamic quantization: weights are stored as int8 once, and each activation is quantized to
  uint8 at run time from its own range. Static quantization (activation ranges calibrated on
  sample text) was both less faithful and slower here: one fixed range per tensor clips the
  outlier channels of BERT's activations.
- One scale per output channel of each weight. One scale per weight tensor was as fast but
  moved the vectors much further from the fp32 ones.
- Only matrix products with a constant weight. The attention's two products of activations
  stay fp32: quantizing them at run time cost more than it saved and added error. Embedding
  tables stay fp32 too (they are looked up, not multiplied).
- Weights in the full 8-bit range where the CPU has VNNI: its dot products do not saturate,
  and 7-bit weights (``reduce_range``) only added error there. Elsewhere onnxruntime's x86
  kernels multiply uint8 by int8 in 16-bit sums that can saturate with 8-bit weights, so
  weights get 7 bits (onnxruntime's own advice); ``full_range_int8`` says which applies, and a
  kept int8 graph must be keyed by it as well as by ``QUANTIZE_VERSION``.
- Products that run once per text rather than once per token, those after the read of the
  [CLS] token (a cross-encoder's pooler and classifier, and the last layer of a
  ``cls_pruning.prune_to_cls`` graph), keep fp32: they cost next to nothing and feed the score
  directly.
- Before quantizing, onnxruntime's basic graph optimizations fold constants, so a weight
  computed from another (SPLADE's output projection, tied to the word embeddings through a
  ``Transpose``) becomes a constant and is quantized too. onnxruntime's transformer fusions
  (attention, skip layer norm) were measured and left out: no gain beyond the noise, and
  they match only some exports.

Activations are quantized with the range of the whole batch, so an int8 vector or score
depends a little on the texts batched with it (fp32 ones do not).

A graph that is quantized already (fastembed ships some models so) is detected by
``is_quantized`` and never quantized twice: ``quantize_int8`` refuses it, and a model loaded
with ``quantize="int8"`` runs its graph as published, with a warning.

``Int8`` is the rewrite as a ``kept_graph.GraphRewrite``: the int8 graph is made on the first
load and kept beside the model (``use_int8_graph``; ``use_cls_pruned_int8_graph`` quantizes a
cross-encoder's [CLS]-pruned graph).
"""

from __future__ import annotations

import logging
import os
import platform
import tempfile
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from . import cls_pruning
from .cls_pruning import ClsPruning, _constants, _reads_cls, prune_to_cls
from .kept_graph import use_kept_graph

if TYPE_CHECKING:
    import onnx

logger = logging.getLogger(__name__)

# The version of the int8 rewrite: a kept int8 graph written by another version is not reused.
QUANTIZE_VERSION = 1

# The metadata entry by which onnxruntime's quantizer knows a graph was prepared for it.
_PRE_PROCESSED = "onnx.quant.pre_process"
# Ops that exist only in quantized graphs: the ONNX standard's quantized ops and onnxruntime's
# contrib ops for int8, 4-bit and ordered (QOrdered*) graphs; any QLinear* op also counts.
_QUANTIZED_OPS = frozenset(
    {
        "ConvInteger", "DequantizeLinear", "DynamicQuantizeLinear", "DynamicQuantizeLSTM",
        "DynamicQuantizeMatMul", "GatherBlockQuantized", "MatMulBnb4", "MatMulInteger",
        "MatMulIntegerToFloat", "MatMulNBits", "QAttention", "QEmbedLayerNormalization", "QGemm",
        "QuantizeLinear", "DequantizeWithOrder", "QuantizeWithOrder",
    }
)  # fmt: skip
_QUANTIZED_OP_PREFIXES = ("QLinear", "QOrdered")
# Names of the element types of quantized weights (8 bits or fewer). An fp32 export holds
# none: weights stored so (as in weight-only int8 files, dequantized by Cast and Mul) were
# quantized before.
_QUANTIZED_TYPE_NAMES = (
    "INT8", "UINT8", "INT4", "UINT4", "INT2", "UINT2", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ",
    "FLOAT8E5M2", "FLOAT8E5M2FNUZ", "FLOAT8E8M0", "FLOAT4E2M1",
)  # fmt: skip


@cache
def _quantized_types() -> frozenset[int]:
    from onnx import TensorProto  # onnx loads only where a graph is looked at

    # The narrower types came in later onnx releases.
    names = [name for name in _QUANTIZED_TYPE_NAMES if hasattr(TensorProto, name)]
    return frozenset(getattr(TensorProto, name) for name in names)


def quantize_int8(
    model: onnx.ModelProto | str | os.PathLike[str], *, full_range: bool | None = None
) -> onnx.ModelProto:
    """Return an int8 copy of the fp32 ONNX graph ``model``, quantized as the module says.

    The copy takes the same inputs and returns outputs of the same names, types and shapes.
    ``model`` is left unchanged and nothing is written beside its file: the work is done in a
    temporary folder. A model of 2 GB or more must be given as a path (protobuf cannot
    serialize it in one piece); a path's external data files are read from beside it.

    Args:
        model: The graph, or the path of its ``.onnx`` file.
        full_range: Whether weights use all 8 bits (True) or 7 (False); None:
            ``full_range_int8()``, what suits this CPU.

    Raises:
        ValueError: ``model`` is quantized already (see ``is_quantized``), or has no matrix
            product with a constant fp32 weight to quantize.
    """
    # Imported here: only a load that quantizes needs onnxruntime's quantization tools.
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto
    from onnxruntime.quantization import QuantType, quantize_dynamic

    where = f"the ONNX graph at {model}" if not isinstance(model, onnx.ModelProto) else "the graph"
    evidence = _quantized_evidence(_graph_only(model))
    if evidence:
        msg = (
            f"{where} is quantized already (it has {evidence}); quantizing it again would add "
            f"error and no speed: run it as it is"
        )
        raise ValueError(msg)
    with tempfile.TemporaryDirectory(prefix="llama-index-fastembed-rerank-int8-") as tmp:
        folder = Path(tmp)
        if isinstance(model, onnx.ModelProto):
            source = folder / "source.onnx"
            source.write_bytes(model.SerializeToString())
        else:
            source = Path(model)
        prepared = folder / "prepared.onnx"
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
        options.optimized_model_filepath = str(prepared)
        options.log_severity_level = 3  # errors only: its notes on unused weights are noise here
        # Weights go to one file beside it, so a model of any size can be written.
        options.add_session_config_entry(
            "session.optimized_model_external_initializers_file_name", "prepared.onnx.data"
        )
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
        graph = onnx.load(str(prepared), load_external_data=False)
        _name_nodes(graph)  # the quantizer picks nodes by name
        selected = _weight_products(graph)
        if not selected:
            msg = f"{where} has no matrix product with a constant fp32 weight to quantize"
            raise ValueError(msg)
        # The optimization above is the part of onnxruntime's quantization pre-processing these
        # graphs need; the mark stops quantize_dynamic from warning on the root logger.
        onnx.helper.set_model_props(graph, {**_props(graph), _PRE_PROCESSED: "onnxruntime.quant"})
        onnx.save(graph, str(prepared))  # its weights stay in prepared.onnx.data
        del graph
        quantized = folder / "int8.onnx"
        quantize_dynamic(
            prepared,
            quantized,
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=selected,
            per_channel=True,
            reduce_range=not (full_range_int8() if full_range is None else full_range),
            weight_type=QuantType.QInt8,
            extra_options={
                "MatMulConstBOnly": True,
                # Shape inference cannot type the outputs of onnxruntime's contrib ops.
                "DefaultTensorType": TensorProto.FLOAT,
            },
        )
        result = onnx.load(str(quantized))
    # The shapes the quantizer recorded go: with them onnxruntime fuses each residual Add and
    # LayerNorm into SkipLayerNormalization, which ran slower than the two ops it replaces.
    del result.graph.value_info[:]
    props = _props(result)
    props.pop(_PRE_PROCESSED, None)
    onnx.helper.set_model_props(result, props)
    return result


@cache
def full_range_int8() -> bool:
    """Return whether int8 weights may use all 8 bits on this CPU: where it has VNNI.

    onnxruntime multiplies with VNNI's dot products where the CPU has them (x86
    ``avx512_vnni`` or ``avx_vnni``), which do not saturate. Where it cannot be told (other
    systems than Linux, other CPUs), the answer is False: 7-bit weights are safe everywhere.
    """
    if platform.system() != "Linux" or platform.machine().lower() not in ("x86_64", "amd64"):
        return False
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    flags = next((line for line in cpuinfo.splitlines() if line.startswith("flags")), "")
    return bool({"avx512_vnni", "avx_vnni"} & set(flags.split()))


def is_quantized(model: onnx.ModelProto | str | os.PathLike[str]) -> bool:
    """Return whether the ONNX graph ``model`` (a model or a file's path) is quantized already.

    It is when it has a quantized op (``MatMulInteger``, ``QuantizeLinear``,
    ``DequantizeLinear``, ``DynamicQuantizeLinear``, ``MatMulNBits``, any ``QLinear*`` op and
    the like: dynamic, static and 4-bit graphs), or weights of 8 bits or fewer (int8, uint8,
    int4, float8...: weight-only quantized files that widen their weights before use).
    """
    return bool(_quantized_evidence(_graph_only(model)))


def _graph_only(model: onnx.ModelProto | str | os.PathLike[str]) -> onnx.ModelProto:
    """Return ``model``, loaded without its external weights where it is a path."""
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    return onnx.load(os.fspath(model), load_external_data=False)


def _quantized_evidence(model: onnx.ModelProto) -> str:
    """Return what shows that ``model`` is quantized (an op or a weight), or '' if nothing."""
    import onnx

    graphs = [model.graph]
    narrow: list[str] = []  # quantized weights: named only where no quantized op shows it
    while graphs:
        graph = graphs.pop()
        for node in graph.node:
            if node.op_type in _QUANTIZED_OPS or node.op_type.startswith(_QUANTIZED_OP_PREFIXES):
                return f"the quantized op {node.op_type} ({node.name or 'unnamed'})"
            for attribute in node.attribute:
                if attribute.type == onnx.AttributeProto.TENSOR:
                    if attribute.t.data_type in _quantized_types():
                        narrow.append(f"a {_type_name(attribute.t)} constant in {node.op_type}")
                elif attribute.type == onnx.AttributeProto.GRAPH:
                    graphs.append(attribute.g)
                elif attribute.type == onnx.AttributeProto.GRAPHS:
                    graphs.extend(attribute.graphs)
        narrow += [
            f"the {_type_name(tensor)} weight {tensor.name!r}"
            for tensor in graph.initializer
            if tensor.data_type in _quantized_types()
        ]
    return narrow[0] if narrow else ""


def _type_name(tensor: onnx.TensorProto) -> str:
    from onnx import TensorProto

    return str(TensorProto.DataType.Name(tensor.data_type)).lower()


def _name_nodes(model: onnx.ModelProto) -> None:
    """Give every unnamed node a name of its own."""
    taken = {node.name for node in model.graph.node}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def _props(model: onnx.ModelProto) -> dict[str, str]:
    return {prop.key: prop.value for prop in model.metadata_props}


def _weight_products(model: onnx.ModelProto) -> list[str]:
    """Return the names of the MatMuls to quantize: an fp32 constant weight, once per token.

    A product whose activations descend from a read of the [CLS] token runs once per text (a
    classifier head, or the last layer of a [CLS]-pruned graph): it keeps fp32.
    """
    from onnx import TensorProto

    graph = model.graph
    constants = _constants(graph)
    per_text: set[str] = set()
    selected = []
    for node in graph.node:  # stored in topological order
        if _reads_cls(node, constants) or any(name in per_text for name in node.input):
            per_text.update(node.output)
            continue
        if node.op_type != "MatMul" or len(node.input) < 2:
            continue
        weight = constants.get(node.input[1])
        if weight is not None and weight.data_type == TensorProto.FLOAT and len(weight.dims) == 2:
            selected.append(node.name)
    return selected


# Bounds of the probe, which catches a copy that computes something else; int8 on the offline
# models stays far inside them (tests/test_quantization.py).
_SCORE_TOLERANCE = 0.25  # of the scores' scale: their largest magnitude, at least 1
_MIN_COSINE = 0.95
# Values of each probe row kept with an int8 copy: an embedder's row is tokens x dimensions (x
# 30,522 words for SPLADE), too large to store and parse at every load.
_FINGERPRINT_VALUES = 4096
# The probe of the int8 embedders: one text, unpadded. Their outputs are per token, and what
# a graph computes at padded positions is never used, so int8 need not match fp32 there.
_TEXT_PROBE = ("Paris, the capital and largest city of France, lies on the Seine in the north.",)


class Int8:
    """``quantize_int8`` as a ``kept_graph.GraphRewrite``; after the [CLS] pruning if asked.

    Its version covers what makes the bytes: ``QUANTIZE_VERSION``, the weights' range
    (``full_range_int8``) and, after the pruning, ``cls_pruning.REWRITE_VERSION``. A graph
    quantized already is left as it is (``apply`` returns ''), and ``already_quantized`` says
    what shows it.
    """

    def __init__(self, *, after_cls_pruning: bool = False, full_range: bool | None = None) -> None:
        """Quantize a graph as it is, or after ``cls_pruning.prune_to_cls``."""
        self.after_cls_pruning = after_cls_pruning
        self.full_range = full_range_int8() if full_range is None else full_range
        self.already_quantized = ""

    @property
    def label(self) -> str:
        """The copy, in messages."""
        return "[CLS]-pruned int8" if self.after_cls_pruning else "int8"

    @property
    def suffix(self) -> str:
        """The kept copy's name part: ``int8-v1`` or ``cls-pruned-int8-v1``."""
        kind = "cls-pruned-int8" if self.after_cls_pruning else "int8"
        return f"{kind}-v{QUANTIZE_VERSION}"

    @property
    def version(self) -> str:
        """Every version and choice the kept copy's bytes depend on."""
        parts = [f"int8 v{QUANTIZE_VERSION}", f"{8 if self.full_range else 7}-bit weights"]
        if self.after_cls_pruning:
            parts.insert(0, f"[CLS] pruning v{cls_pruning.REWRITE_VERSION}")
        return ", ".join(parts)

    @property
    def probe(self) -> Sequence[Any]:
        """Query-document pairs for a cross-encoder, texts for an embedder."""
        return ClsPruning.probe if self.after_cls_pruning else _TEXT_PROBE

    def apply(self, model: onnx.ModelProto) -> str:
        """Replace ``model`` by its int8 copy; say what was done, or '' if it is int8 already."""
        evidence = _quantized_evidence(model)
        if evidence:
            self.already_quantized = evidence
            return ""
        pruned = prune_to_cls(model) if self.after_cls_pruning else 0
        quantized = quantize_int8(model, full_range=self.full_range)
        model.CopyFrom(quantized)
        del quantized
        products = sum(node.op_type == "MatMulInteger" for node in model.graph.node)
        bits = 8 if self.full_range else 7
        done = f"{products} matrix products now run on int8 ({bits}-bit weights)"
        if pruned:
            return f"{pruned} ONNX ops of the last layer now run on [CLS] only; {done}"
        return done

    def fingerprint(self, outputs: Sequence[Any]) -> list[Any]:
        """The first ``_FINGERPRINT_VALUES`` values of each row of each output."""
        return [np.asarray(o).reshape(len(o), -1)[:, :_FINGERPRINT_VALUES] for o in outputs]

    def accept(self, published: Sequence[Any], rewritten: Sequence[Any]) -> str:
        """Refuse outputs that int8's rounding cannot explain: a broken copy, not a coarse one.

        The probe guards against a graph that computes something else; how close int8 comes to
        fp32 is measured by ``benchmarks/int8.py``.
        """
        return int8_mismatch(published, rewritten)


def int8_mismatch(published: Sequence[Any], rewritten: Sequence[Any]) -> str:
    """Return how int8 outputs stray further from fp32 ones than int8's rounding does; ''."""
    for i, (want, got) in enumerate(zip(published, rewritten, strict=True)):
        want, got = np.asarray(want, np.float64), np.asarray(got, np.float64)
        if want.shape != got.shape:
            return f"output {i} has shape {got.shape}, not {want.shape}"
        if not np.isfinite(got).all():
            return f"output {i} holds values that are not finite"
        rows_want, rows_got = want.reshape(len(want), -1), got.reshape(len(got), -1)
        if rows_want.shape[1] == 1:  # one score per row: against the scale of the scores
            scale = max(float(np.max(np.abs(rows_want))), 1.0)
            error = float(np.max(np.abs(rows_got - rows_want))) / scale
            if error > _SCORE_TOLERANCE:
                return f"output {i} differs by up to {error:.3f} of the scores' scale"
            continue
        norms = np.linalg.norm(rows_want, axis=1) * np.linalg.norm(rows_got, axis=1)
        similarity = float(np.min((rows_want * rows_got).sum(axis=1) / np.maximum(norms, 1e-30)))
        if similarity < _MIN_COSINE:
            return f"output {i} has a row at cosine {similarity:.4f} to the fp32 one"
    return ""


def use_int8_graph(engine: Any) -> bool:  # noqa: ANN401 - fastembed's model
    """Load ``engine``'s session from the int8 copy of its graph (see ``kept_graph``).

    Returns:
        Whether the int8 graph is now in use; False where the graph is quantized already (it
        runs as published, and a warning says so) or could not be quantized.
    """
    return _use_int8(engine, Int8())


def use_cls_pruned_int8_graph(encoder: Any) -> bool:  # noqa: ANN401 - fastembed's model
    """Load a cross-encoder's session from the int8 copy of its [CLS]-pruned graph.

    Returns:
        Whether the int8 graph is now in use; where the published graph is quantized already,
        the [CLS]-pruned one is used if it can be (``cls_pruning.use_pruned_graph``).
    """
    rewrite = Int8(after_cls_pruning=True)
    if _use_int8(encoder, rewrite):
        return True
    if rewrite.already_quantized:
        cls_pruning.use_pruned_graph(encoder)
    return False


def _use_int8(engine: Any, rewrite: Int8) -> bool:  # noqa: ANN401 - fastembed's model
    if use_kept_graph(engine, rewrite):
        return True
    if rewrite.already_quantized:
        logger.warning(
            "%s: its ONNX graph is quantized already (it has %s): quantize='int8' runs it as "
            "published, not quantized twice",
            engine.model_name,
            rewrite.already_quantized,
        )
    return False
