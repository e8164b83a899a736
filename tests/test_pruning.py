"""The [CLS] pruning rewrite: small ONNX graphs built here, torch exports, the real models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from llama_index_fastembed_rerank.cls_pruning import prune_to_cls

DATA = Path(__file__).parent / "data"
HIDDEN = 4


def run(model: onnx.ModelProto, **inputs: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, inputs)  # type: ignore[no-any-return]


def small_graph(*nodes: onnx.NodeProto, outputs: tuple[str, ...] = ("y",)) -> onnx.ModelProto:
    """x [batch, seq, 4] -> nodes -> outputs, with a weight w [4, 4] and a [CLS] index."""
    rng = np.random.default_rng(0)
    graph = helper.make_graph(
        list(nodes),
        "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", HIDDEN])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, None) for o in outputs],
        initializer=[
            numpy_helper.from_array(rng.normal(size=(HIDDEN, HIDDEN)).astype(np.float32), "w"),
            numpy_helper.from_array(np.array(0, np.int64), "zero"),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def cls_read(data: str = "r") -> onnx.NodeProto:
    return helper.make_node("Gather", [data, "zero"], ["y"], axis=1)


def pruned_copy(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    return copy, prune_to_cls(copy)


X = np.random.default_rng(1).normal(size=(3, 5, HIDDEN)).astype(np.float32)


def test_token_wise_ops_before_the_cls_read_run_on_one_token():
    model = small_graph(
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        cls_read(),
    )
    pruned, count = pruned_copy(model)
    assert count == 2
    np.testing.assert_array_equal(run(pruned, x=X)[0], run(model, x=X)[0])
    pruned.graph.output.append(helper.make_tensor_value_info("h", TensorProto.FLOAT, None))
    assert run(pruned, x=X)[1].shape == (3, 1, HIDDEN)  # the projection saw [CLS] alone


def test_a_tensor_used_elsewhere_is_computed_in_full():
    model = small_graph(
        helper.make_node("MatMul", ["x", "w"], ["h"]),
        helper.make_node("Relu", ["h"], ["r"]),
        cls_read(),
        outputs=("y", "h"),  # h is also returned: it must keep every token
    )
    pruned, count = pruned_copy(model)
    assert count == 1
    for got, want in zip(run(pruned, x=X), run(model, x=X), strict=True):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize(
    "mixing",
    [
        helper.make_node("Softmax", ["x"], ["r"], axis=1),  # mixes tokens
        helper.make_node("MatMul", ["x", "x_t"], ["r"]),  # activations times activations
    ],
    ids=["softmax-over-tokens", "matmul-of-activations"],
)
def test_ops_that_mix_tokens_stop_the_pruning(mixing):
    model = small_graph(
        helper.make_node("Transpose", ["x"], ["x_t"], perm=[0, 2, 1]),
        mixing,
        cls_read(),
    )
    _, count = pruned_copy(model)
    assert count == 0


def test_a_graph_without_a_single_cls_read_is_left_unchanged():
    two_reads = small_graph(
        helper.make_node("Relu", ["x"], ["r"]),
        cls_read(),
        helper.make_node("Gather", ["r", "zero"], ["z"], axis=1),
        outputs=("y", "z"),
    )
    pruned, count = pruned_copy(two_reads)
    assert count == 0
    assert pruned == two_reads


def test_the_embedding_model_has_no_cls_read(offline_cache):
    # all-MiniLM-L6-v2 returns every token's hidden state: nothing may be pruned.
    folder = next((offline_cache / "models--Qdrant--all-MiniLM-L6-v2-onnx").glob("snapshots/*"))
    model = onnx.load(str(folder / "model.onnx"))
    before = model.SerializeToString()
    assert prune_to_cls(model) == 0
    assert model.SerializeToString() == before


@pytest.mark.parametrize(
    "export", sorted(DATA.glob("tiny-*-torch-export.onnx")), ids=lambda p: p.stem
)
def test_torch_exports_prune_to_equal_logits(export):
    # Tiny random sequence classifiers exported by torch.onnx the way the published ONNX
    # rerankers are (eager attention); made by tests/data/make_torch_exports.py.
    model = onnx.load(str(export))
    pruned, count = pruned_copy(model)
    assert count >= 10  # a layer's output projection, feed-forward, norms and residuals
    rng = np.random.default_rng(2)
    ids = rng.integers(5, 90, size=(3, 11)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    mask[2, 3:] = 0
    inputs = {"input_ids": ids, "attention_mask": mask}
    names = {i.name for i in model.graph.input}
    if "token_type_ids" in names:
        inputs["token_type_ids"] = np.zeros_like(ids)
    np.testing.assert_allclose(run(pruned, **inputs)[0], run(model, **inputs)[0], atol=1e-5)
