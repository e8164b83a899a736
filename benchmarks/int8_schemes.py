"""How quantize_int8's scheme was chosen: onnxruntime's alternatives, measured side by side.

Run ``python benchmarks/int8_schemes.py`` (``--help`` for options). Every alternative is made
from the same fp32 graph with onnxruntime's own tools, differing from the chosen scheme
(``quantization.quantize_int8``) in one respect, and all run through onnxruntime directly on
the same batches (length order, at most 64 texts and 512 padded tokens, as this package
batches):

- ``per-tensor``: one scale per weight tensor instead of one per output channel;
- ``7-bit``: 7-bit weights (``reduce_range``), which quantize_int8 uses on CPUs without VNNI,
  whose 8-bit products may saturate (on a CPU with VNNI, the chosen scheme has 8 bits);
- ``+ embeddings``: onnxruntime's default op types, which also store the embedding tables in
  8 bits (``Gather``);
- ``first/last fp32``: the first and the last layer's products left in fp32;
- ``attention int8``: the attention's two products of activations quantized too;
- ``shapes kept``: the shapes the quantizer records are left in the graph, so onnxruntime
  fuses each residual Add and LayerNorm into ``SkipLayerNormalization`` when it loads it;
- ``fused first``: onnxruntime's transformer optimizer (``optimize_model``, model type bert)
  run before quantizing: it fuses layer norms and GELU here, and attention where the export
  matches its patterns (the offline graphs do not);
- ``static``: static quantization (QDQ, per-channel weights, activation ranges calibrated by
  MinMax on 64 of the labelled documents);
- reranker only, ``unpruned``: the published graph quantized instead of the [CLS]-pruned one.

Fidelity on the labelled set of ``benchmarks/int8.py`` (Python's docstrings): for the dense
model the cosine to the fp32 vectors and MRR@10 / Recall@10; for the stand-in reranker
(pruned fp32 as reference) the score error relative to each query's spread and Kendall's tau
over 20 candidates, as int8.py reports them. Speed: the process's CPU time with one onnxruntime
thread (steady on a shared machine), median of ``--repeats`` rounds in turns; dense on the
labelled documents, the reranker on the "uniform" and "mixed" texts of rerank_throughput.py.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common  # first: sets HF_HUB_OFFLINE and puts examples/ on sys.path
import numpy as np
import onnx
import onnxruntime as ort
from int8 import CANDIDATES, SEED, cosine, docstring_pairs, kendall_tau, retrieval
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from rerank_throughput import QUERY, make_texts
from tokenizers import Tokenizer

from llama_index_fastembed_rerank.batching import length_batches
from llama_index_fastembed_rerank.cls_pruning import prune_to_cls
from llama_index_fastembed_rerank.quantization import (
    _name_nodes,
    _weight_products,
    full_range_int8,
    quantize_int8,
)

Inputs = dict[str, np.ndarray]


def alternative(
    source: Path,
    dest: Path,
    *,
    per_channel: bool = True,
    reduce_range: bool = False,
    op_types: tuple[str, ...] = ("MatMul",),
    const_b_only: bool = True,
    keep: tuple[int, int] = (0, 0),
    keep_shapes: bool = False,
) -> Path:
    """Quantize ``source`` dynamically as quantize_int8 does, but for the options given.

    ``keep`` leaves that many weight products at the start and at the end in fp32.
    """
    prepared = dest.with_suffix(".prepared.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(prepared)
    options.log_severity_level = 3
    ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    graph = onnx.load(str(prepared))
    _name_nodes(graph)
    onnx.save(graph, str(prepared))
    selected = _weight_products(graph)
    nodes = selected[keep[0] : len(selected) - keep[1]]
    weights = {t.name for t in graph.graph.initializer}
    for node in graph.graph.node:
        if node.op_type == "Attention" and "Attention" in op_types:
            nodes.append(node.name)
        elif node.op_type == "Gather" and "Gather" in op_types and node.input[0] in weights:
            nodes.append(node.name)  # an embedding table
        elif node.op_type == "MatMul" and not const_b_only and node.input[1] not in weights:
            nodes.append(node.name)  # the attention's products of activations
    quantize_dynamic(
        prepared,
        dest,
        op_types_to_quantize=list(op_types),
        nodes_to_quantize=nodes,
        per_channel=per_channel,
        reduce_range=reduce_range,
        weight_type=QuantType.QInt8,
        extra_options={
            "MatMulConstBOnly": const_b_only,
            "DefaultTensorType": onnx.TensorProto.FLOAT,
        },
    )
    if not keep_shapes:
        model = onnx.load(str(dest))
        del model.graph.value_info[:]
        onnx.save(model, str(dest))
    return dest


def fused_first(source: Path, dest: Path) -> Path:
    from onnxruntime.transformers.optimizer import optimize_model

    fused = dest.with_suffix(".fused.onnx")
    optimized = optimize_model(
        str(source), model_type="bert", num_heads=12, hidden_size=384, opt_level=0
    )
    optimized.save_model_to_file(str(fused))
    return alternative(fused, dest, op_types=("MatMul", "Attention"))


def static(source: Path, dest: Path, calibration: list[Inputs]) -> Path:
    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.inputs = iter(calibration)

        def get_next(self) -> Inputs | None:
            return next(self.inputs, None)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_static(
            str(source),
            str(dest),
            Reader(),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul"],
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    model = onnx.load(str(dest))
    del model.graph.value_info[:]
    onnx.save(model, str(dest))
    return dest


# --- running graphs on batches -----------------------------------------------------------


def encode(tokenizer: Tokenizer, texts: list[Any]) -> list[Inputs]:
    """One input dict per text, unpadded (type ids kept, for pairs)."""
    return [
        {
            "input_ids": np.array([e.ids], np.int64),
            "attention_mask": np.array([e.attention_mask], np.int64),
            "token_type_ids": np.array([e.type_ids], np.int64),
        }
        for e in tokenizer.encode_batch(texts)
    ]


def batches(inputs: list[Inputs]) -> list[tuple[list[int], Inputs]]:
    """Group ``inputs`` as this package does, each batch padded to its longest."""
    lengths = [x["input_ids"].shape[1] for x in inputs]
    grouped = []
    for rows in length_batches(lengths, 64, 512):
        width = max(lengths[r] for r in rows)
        feed = {
            k: np.stack([np.pad(inputs[r][k][0], (0, width - lengths[r])) for r in rows])
            for k in inputs[0]
        }
        grouped.append((rows, feed))
    return grouped


def runner(
    path: Path, grouped: list[tuple[list[int], Inputs]], pool: str
) -> Callable[[], np.ndarray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    count = sum(len(rows) for rows, _ in grouped)

    def run() -> np.ndarray:
        out: list[Any] = [None] * count
        for rows, feed in grouped:
            result = session.run(None, feed)[0]
            if pool == "mean":
                mask = feed["attention_mask"][..., None]
                result = (result * mask).sum(1) / mask.sum(1)
                result /= np.linalg.norm(result, axis=1, keepdims=True)
            else:
                result = result[:, 0]
            for j, r in enumerate(rows):
                out[r] = result[j]
        return np.stack(out)

    return run


def cpu_seconds(runs: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    for run in runs.values():
        run()
    seconds: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            start = time.process_time()
            run()
            seconds[name].append(time.process_time() - start)
    return {name: statistics.median(s) for name, s in seconds.items()}


# --- the two models ----------------------------------------------------------------------


def dense(args: argparse.Namespace, pairs: list[tuple[str, str, str]], tmp: Path) -> None:
    folder = Path(_common.provision()).parent / "all-MiniLM-L6-v2"
    source = folder / "model.onnx"
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(256)  # all-MiniLM-L6-v2's window, as fastembed sets it
    tokenizer.no_padding()
    documents = encode(tokenizer, [b for _, _, b in pairs])
    queries = encode(tokenizer, [s for _, s, _ in pairs])
    graphs = build(source, tmp / "dense", documents[:64], keep=(6, 6))
    print(f"\n== Dense: all-MiniLM-L6-v2, {len(pairs)} queries; CPU time on the documents")
    doc_batches, query_batches = batches(documents), batches(queries)
    runs = {name: runner(path, doc_batches, "mean") for name, path in graphs.items()}
    seconds = cpu_seconds(runs, args.repeats)
    vectors = {
        name: (run(), runner(graphs[name], query_batches, "mean")()) for name, run in runs.items()
    }
    want_docs = vectors["fp32"][0]
    header = f"{'scheme':<20}{'cos mean':>10}{'cos min':>9}{'MRR@10':>8}{'R@10':>8}{'x fp32':>8}"
    print(header)
    print("-" * len(header))
    for name, (docs, queries_) in vectors.items():
        similarity = cosine(docs, want_docs)
        mrr, recall = retrieval(queries_ @ docs.T)
        print(
            f"{name:<20}{similarity.mean():>10.4f}{similarity.min():>9.4f}{mrr:>8.2f}"
            f"{recall:>8.2f}{seconds['fp32'] / seconds[name]:>7.2f}x",
            flush=True,
        )


def rerank(args: argparse.Namespace, pairs: list[tuple[str, str, str]], tmp: Path) -> None:
    folder = Path(_common.provision()).parent / "standin-cross-encoder"
    published = folder / "onnx" / "model.onnx"
    graph = onnx.load(str(published))
    prune_to_cls(graph)
    source = tmp / "pruned.onnx"
    onnx.save(graph, str(source))
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tokenizer.enable_truncation(512)
    tokenizer.no_padding()
    rng = random.Random(f"{SEED}-rerank")
    cases = []
    for q in rng.sample(range(len(pairs)), min(args.rerank_queries, len(pairs))):
        others = rng.sample([i for i in range(len(pairs)) if i != q], CANDIDATES - 1)
        cases += [(pairs[q][1], pairs[i][2]) for i in [q, *others]]
    inputs = encode(tokenizer, cases)
    # The pruned last layer has 3 products left to quantize (Q, K, V).
    graphs = build(source, tmp / "rerank", inputs[:64], keep=(6, 3))
    graphs["unpruned"] = alternative(published, tmp / "rerank-unpruned.onnx")
    scores = {name: runner(path, batches(inputs), "first")() for name, path in graphs.items()}
    speed = {}
    for kind in ("uniform", "mixed"):
        grouped = batches(encode(tokenizer, [(QUERY, t) for t in make_texts(kind, 100)]))
        runs = {name: runner(path, grouped, "first") for name, path in graphs.items()}
        speed[kind] = cpu_seconds(runs, args.repeats)
    print(
        f"\n== Reranker: the stand-in, {args.rerank_queries} queries x {CANDIDATES} candidates; "
        "CPU time on 100 uniform and 100 mixed texts"
    )
    header = (
        f"{'scheme':<20}{'|d|/spread':>11}{'p95':>7}{'tau':>7}"
        f"{'uniform x fp32':>16}{'mixed x fp32':>14}"
    )
    print(header)
    print("-" * len(header))
    want = scores["fp32"].reshape(-1, CANDIDATES)
    for name, flat in scores.items():
        got = flat.reshape(-1, CANDIDATES)
        relative = np.abs(got - want) / want.std(axis=1, keepdims=True)
        tau = np.mean([kendall_tau(a, b) for a, b in zip(got, want, strict=True)])
        ratios = [speed[k]["fp32"] / speed[k][name] for k in ("uniform", "mixed")]
        print(
            f"{name:<20}{relative.mean():>11.3f}{np.percentile(relative, 95):>7.3f}{tau:>7.3f}"
            f"{ratios[0]:>15.2f}x{ratios[1]:>13.2f}x",
            flush=True,
        )


def build(
    source: Path, tmp: Path, calibration: list[Inputs], keep: tuple[int, int]
) -> dict[str, Path]:
    """Return fp32 and every alternative of ``source``, built into ``tmp``."""
    tmp.mkdir(parents=True)
    chosen = tmp / "chosen.onnx"
    onnx.save(quantize_int8(source), str(chosen))
    return {
        "fp32": source,
        "chosen": chosen,
        "per-tensor": alternative(source, tmp / "pt.onnx", per_channel=False),
        "7-bit": alternative(source, tmp / "rr.onnx", reduce_range=True),
        "+ embeddings": alternative(source, tmp / "gather.onnx", op_types=("MatMul", "Gather")),
        "first/last fp32": alternative(source, tmp / "keep.onnx", keep=keep),
        "attention int8": alternative(source, tmp / "attn.onnx", const_b_only=False),
        "shapes kept": alternative(source, tmp / "shapes.onnx", keep_shapes=True),
        "fused first": fused_first(source, tmp / "fused.onnx"),
        "static": static(source, tmp / "static.onnx", calibration),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=0, help="labelled pairs (0: all)")
    parser.add_argument("--rerank-queries", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=["dense", "rerank"])
    args = parser.parse_args()
    pairs = docstring_pairs()
    if args.queries:
        pairs = random.Random(f"{SEED}-pairs").sample(pairs, min(args.queries, len(pairs)))
    for line in _common.machine_lines(("onnx",)):
        print(line)
    print(f"The chosen scheme's weights here: {8 if full_range_int8() else 7} bits")
    with tempfile.TemporaryDirectory(prefix="int8-schemes-") as tmp:
        if args.only is None or "dense" in args.only:
            dense(args, pairs, Path(tmp))
        if args.only is None or "rerank" in args.only:
            rerank(args, pairs, Path(tmp))


if __name__ == "__main__":
    main()
