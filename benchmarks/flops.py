"""How close FastEmbedRerank runs to the machine: achieved GFLOP/s against a MatMul peak.

Run ``python benchmarks/flops.py`` (``--help`` for options).

FLOPs of one query-document pair of L tokens through a BERT cross-encoder with N layers,
hidden size H, A heads and feed-forward size I (Xenova/ms-marco-MiniLM-L-6-v2: N=6, H=384,
A=12, I=1536), counting a multiply-add as 2 FLOPs and only the matrix products::

    per layer:  Q, K, V projections     3 * 2*L*H*H
                attention output proj.      2*L*H*H
                scores Q K^T (all heads)    2*L*L*H      (A heads of 2*L*L*(H/A))
                context softmax(.) V        2*L*L*H
                feed-forward in and out     2 * 2*L*H*I
    F(L) = N * (8*L*H^2 + 4*L^2*H + 4*L*H*I) + 2*H^2 + 2*H   (pooler and one-logit head)

With ``optimize_graph`` (the default) the last layer's output projection and feed-forward run
on the [CLS] row alone, so a pair costs F(L) - (L-1) * (2*H^2 + 4*H*I): the figures below
count this work actually done, not the published graph's.

Softmax, GELU, layer norms, embeddings and the mask are O(L*H) element-wise work, under 1%
at these sizes, and are left out. At L=128, F = 2.87 GFLOP; at L=256, 6.04 GFLOP (pruned
as below: 2.53 and 5.36).

FastEmbedRerank(top_n=None).postprocess_nodes scores one query against 100 documents built
from words that are one token each, so every pair is exactly L tokens and no batch is padded;
achieved GFLOP/s = 100 * F(L) / median seconds. The model is the offline stand-in for
Xenova/ms-marco-MiniLM-L-6-v2 (the same graph shape, an untrained head).

The peak is measured on this machine with onnxruntime itself: one-MatMul graphs at the shapes
the model runs with a batch of 64 pairs (``--peak-batch``) of 128 tokens (``--peak-seq``):
[B*L, H] x [H, H], [B*L, H] x [H, I], [B*L, I] x [I, H] and the attention's batched
[B*A, L, H/A] x [B*A, H/A, L] and [B*A, L, L] x [B*A, L, H/A] (weights as initializers, as
in the model, so onnxruntime pre-packs them), with the same intra-op threads as fastembed's
session; and with numpy (its BLAS, default threads) for comparison. The peak is the best
shape's median; the "MatMul-mix ceiling" weighs each shape's rate by its share of the model's
FLOPs at that length.

int8 (``--no-int8`` skips it): the same reranker on the int8 copy of its pruned graph that
``FastEmbedRerank(quantize="int8")`` makes and keeps (on links to the model's files in a
temporary folder), timed the same way, and the int8 peak at the
three weight shapes, each a one-op graph with the weight an int8 initializer:
``MatMulInteger`` (uint8 activations times int8 weights into int32: the integer kernel
alone), ``DynamicQuantizeMatMul`` (what the int8 graph runs once onnxruntime has fused it:
quantize the fp32 activations, multiply, scale back to fp32, per-column weight scales) and
``QLinearMatMul`` (static quantization's op: uint8 in and out). The attention's two products
stay fp32 in the int8 graph, so its ceiling takes them at the fp32 rates above. A multiply-add
counts 2 operations, in int8 as in fp32.
"""

from __future__ import annotations

import argparse
import functools
import random
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import _common  # first: sets HF_HUB_OFFLINE and puts examples/ on sys.path
import numpy as np
import onnxruntime as ort
import psutil
from llama_index.core.schema import NodeWithScore, TextNode
from onnx import TensorProto, helper, numpy_helper

import offline_models
from llama_index_fastembed_rerank import FastEmbedRerank, _fastembed

LAYERS, HIDDEN, HEADS, INTERMEDIATE = (
    _common.LAYERS,
    _common.HIDDEN,
    _common.HEADS,
    _common.INTERMEDIATE,
)
PAIRS = 100


def pair_flops(length: int) -> int:
    """Return the matrix-product FLOPs of one pair of ``length`` tokens (formula above)."""
    h, i = HIDDEN, INTERMEDIATE
    pruned = (length - 1) * (2 * h * h + 4 * h * i)  # the last layer after attention, but [CLS]
    return _common.encoder_flops(length) + 2 * h * h + 2 * h - pruned


def uniform_documents(tokenizer: object, query: str, length: int) -> list[str]:
    """Return ``PAIRS`` seeded documents making pairs of exactly ``length`` tokens with query."""

    def tokens(text: str) -> int:
        return len(tokenizer.encode(text, add_special_tokens=False).ids)  # type: ignore[attr-defined]

    one_token = [w for w in sorted({w.lower() for w in _common.word_pool()}) if tokens(w) == 1]
    query_tokens = tokens(query)
    words = length - query_tokens - 3  # [CLS] query [SEP] document [SEP]
    rng = random.Random(f"{_common.SEED}-uniform-{length}")
    return [" ".join(rng.choices(one_token, k=words)) for _ in range(PAIRS)]


def median_seconds(run: Callable[[], object], repeats: int) -> float:
    run()  # warm-up
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def matmul_session(
    a_shape: list[int], b: np.ndarray, b_is_weight: bool, threads: int
) -> ort.InferenceSession:
    """Return an onnxruntime session computing a @ b for a float32 input ``a``.

    A weight is an initializer, as in the model, so onnxruntime may pre-pack it; otherwise
    ``b`` is a second input, as the attention's activations are.
    """
    from onnx import TensorProto, helper, numpy_helper

    out_shape = [*a_shape[:-1], b.shape[-1]]
    inputs = [helper.make_tensor_value_info("a", TensorProto.FLOAT, a_shape)]
    if not b_is_weight:
        inputs.append(helper.make_tensor_value_info("b", TensorProto.FLOAT, list(b.shape)))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["a", "b"], ["y"])],
        "matmul",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=[numpy_helper.from_array(b, "b")] if b_is_weight else [],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )


def matmul_peaks(batch: int, seq: int, threads: int) -> list[tuple[str, float, float, float]]:
    """Return (shape, FLOP share in the model, onnxruntime GFLOP/s, numpy GFLOP/s) per shape."""
    rows, heads, head = batch * seq, batch * HEADS, HIDDEN // HEADS
    projection = 2 * rows * HIDDEN * HIDDEN  # Q, K, V and the output: four of these a layer
    ffn = 2 * rows * HIDDEN * INTERMEDIATE
    attention = 2 * heads * seq * seq * head  # scores, and again the context
    shapes = [  # name, A, B, FLOPs of this shape in one layer at (batch, seq)
        ("[B*L,H]x[H,H]", [rows, HIDDEN], [HIDDEN, HIDDEN], 4 * projection),
        ("[B*L,H]x[H,I]", [rows, HIDDEN], [HIDDEN, INTERMEDIATE], ffn),
        ("[B*L,I]x[I,H]", [rows, INTERMEDIATE], [INTERMEDIATE, HIDDEN], ffn),
        ("[B*A,L,d]x[B*A,d,L]", [heads, seq, head], [heads, head, seq], attention),
        ("[B*A,L,L]x[B*A,L,d]", [heads, seq, seq], [heads, seq, head], attention),
    ]
    layer_flops = sum(flops for *_, flops in shapes)
    rng = np.random.default_rng(_common.SEED)
    results = []
    for name, a_shape, b_shape, flops in shapes:
        a = rng.standard_normal(a_shape, dtype=np.float32)
        b = rng.standard_normal(b_shape, dtype=np.float32)
        # One product's FLOPs: the projection row stands for four products of its shape.
        one = 2 * int(np.prod(a_shape)) * b_shape[-1]
        is_weight = len(b_shape) == 2  # the projections' weights; attention multiplies activations
        session = matmul_session(a_shape, b, is_weight, threads)
        feed = {"a": a} if is_weight else {"a": a, "b": b}
        ort_s = median_seconds(functools.partial(session.run, None, feed), 7)
        np_s = median_seconds(functools.partial(np.matmul, a, b), 7)
        results.append((name, flops / layer_flops, one / ort_s / 1e9, one / np_s / 1e9))
    return results


INT8_OPS = ("MatMulInteger", "DynamicQuantizeMatMul", "QLinearMatMul")


def int8_matmul_session(
    op: str, a_shape: list[int], b: np.ndarray, threads: int
) -> tuple[ort.InferenceSession, dict[str, np.ndarray]]:
    """Return a one-``op`` onnxruntime session for a @ b with ``b`` an int8 weight, and a feed.

    The activations are uint8 for MatMulInteger and QLinearMatMul, and fp32 for
    DynamicQuantizeMatMul, which quantizes them itself; weight scales are per column.
    """
    rng = np.random.default_rng(_common.SEED)
    n = b.shape[-1]
    weight = np.clip(np.round(b / np.abs(b).max(axis=0) * 127), -127, 127).astype(np.int8)
    scales = (np.abs(b).max(axis=0) / 127).astype(np.float32)
    inits = [numpy_helper.from_array(weight, "b")]
    fp32_a = op == "DynamicQuantizeMatMul"
    a_type = TensorProto.FLOAT if fp32_a else TensorProto.UINT8
    a = (
        rng.standard_normal(a_shape, dtype=np.float32)
        if fp32_a
        else rng.integers(0, 256, a_shape, dtype=np.uint8)
    )
    if op == "MatMulInteger":
        inits.append(numpy_helper.from_array(np.array(128, np.uint8), "a_zero"))
        node = helper.make_node("MatMulInteger", ["a", "b", "a_zero"], ["y"])
        y_type = TensorProto.INT32
    elif op == "DynamicQuantizeMatMul":
        inits.append(numpy_helper.from_array(scales, "b_scale"))
        node = helper.make_node(
            "DynamicQuantizeMatMul", ["a", "b", "b_scale"], ["y"], domain="com.microsoft"
        )
        y_type = TensorProto.FLOAT
    else:
        inits += [
            numpy_helper.from_array(np.array(0.05, np.float32), "a_scale"),
            numpy_helper.from_array(np.array(128, np.uint8), "a_zero"),
            numpy_helper.from_array(scales, "b_scale"),
            numpy_helper.from_array(np.zeros(n, np.int8), "b_zero"),
            numpy_helper.from_array(np.array(0.5, np.float32), "y_scale"),
            numpy_helper.from_array(np.array(128, np.uint8), "y_zero"),
        ]
        node = helper.make_node(
            "QLinearMatMul",
            ["a", "a_scale", "a_zero", "b", "b_scale", "b_zero", "y_scale", "y_zero"],
            ["y"],
        )
        y_type = TensorProto.UINT8
    graph = helper.make_graph(
        [node],
        "int8_matmul",
        [helper.make_tensor_value_info("a", a_type, a_shape)],
        [helper.make_tensor_value_info("y", y_type, [*a_shape[:-1], n])],
        initializer=inits,
    )
    opsets = [helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]
    model = helper.make_model(graph, opset_imports=opsets, ir_version=8)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return session, {"a": a}


def int8_peaks(batch: int, seq: int, threads: int) -> list[tuple[str, float, list[float]]]:
    """Return (shape, FLOP share in the model, GOP/s of each of INT8_OPS) per weight shape."""
    rows = batch * seq
    projection = 2 * rows * HIDDEN * HIDDEN
    ffn = 2 * rows * HIDDEN * INTERMEDIATE
    attention = 2 * batch * HEADS * seq * seq * (HIDDEN // HEADS)
    layer_flops = 4 * projection + 2 * ffn + 2 * attention
    shapes = [
        ("[B*L,H]x[H,H]", [rows, HIDDEN], [HIDDEN, HIDDEN], 4 * projection),
        ("[B*L,H]x[H,I]", [rows, HIDDEN], [HIDDEN, INTERMEDIATE], ffn),
        ("[B*L,I]x[I,H]", [rows, INTERMEDIATE], [INTERMEDIATE, HIDDEN], ffn),
    ]
    rng = np.random.default_rng(_common.SEED)
    results = []
    for name, a_shape, b_shape, flops in shapes:
        b = rng.standard_normal(b_shape, dtype=np.float32)
        one = 2 * int(np.prod(a_shape)) * b_shape[-1]
        rates = []
        for op in INT8_OPS:
            session, feed = int8_matmul_session(op, a_shape, b, threads)
            rates.append(one / median_seconds(functools.partial(session.run, None, feed), 7) / 1e9)
        results.append((name, flops / layer_flops, rates))
    return results


def int8_reranker(reranker: FastEmbedRerank, folder: Path) -> FastEmbedRerank:
    """Return ``reranker`` with ``quantize="int8"``, on links to its files in ``folder``.

    The int8 graph it makes on its first load is kept there, not in the cache.
    """
    encoder = reranker._model()
    files = _fastembed.model_files(encoder)
    if files is None:
        msg = f"{reranker.model}: fastembed does not say where its ONNX file is"
        raise SystemExit(msg)
    model_file = encoder.model.model_description.model_file  # type: ignore[attr-defined]
    model_dir = Path(str(files[0])[: -len(model_file)])
    for path in model_dir.rglob("*"):
        if path.is_file() and ".int8-" not in path.name:
            link = folder / path.relative_to(model_dir)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path.resolve())
    return reranker.model_copy(update={"specific_model_path": str(folder), "quantize": "int8"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[64, 128, 256])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per length")
    parser.add_argument("--peak-batch", type=int, default=64)
    parser.add_argument("--peak-seq", type=int, default=128)
    parser.add_argument("--no-int8", action="store_true", help="skip the int8 reranker and peak")
    args = parser.parse_args()

    cache = _common.provision()
    reranker = FastEmbedRerank(
        offline_models.STANDIN_RERANK_MODEL, top_n=None, cache_dir=cache, local_files_only=True
    )
    encoder = reranker._model()
    tokenizer = encoder.model.tokenizer  # type: ignore[attr-defined]
    session = encoder.model.model  # type: ignore[attr-defined]
    # 0 is onnxruntime's default: one thread per physical core.
    threads = session.get_session_options().intra_op_num_threads or psutil.cpu_count(False)
    query = str(_common.movies()["query"])
    with tempfile.TemporaryDirectory(prefix="flops-int8-") as tmp:
        rerankers = {"fp32": reranker}
        if not args.no_int8:
            rerankers["int8"] = int8_reranker(reranker, Path(tmp))
            rerankers["int8"].warm_up()
        run(args, rerankers, tokenizer, query, threads)


def run(
    args: argparse.Namespace,
    rerankers: dict[str, FastEmbedRerank],
    tokenizer: object,
    query: str,
    threads: int,
) -> None:
    reranker = rerankers["fp32"]
    for line in _common.machine_lines():
        print(line)
    print(
        f"Model: {reranker.model} (shape of Xenova/ms-marco-MiniLM-L-6-v2: {LAYERS} layers, "
        f"hidden {HIDDEN}, {HEADS} heads, FFN {INTERMEDIATE}); batch_size {reranker.batch_size}; "
        f"onnxruntime intra-op threads {threads}"
    )
    print(
        f"{PAIRS} pairs per run, all of one length; median of {args.repeats} after a warm-up"
        + ("; fp32 and int8 take turns at each length" if len(rerankers) > 1 else "")
    )
    print()
    measured: dict[str, list[tuple[int, float]]] = {kind: [] for kind in rerankers}
    for length in args.lengths:
        documents = uniform_documents(tokenizer, query, length)
        pairs = tokenizer.encode_batch([(query, d) for d in documents])  # type: ignore[attr-defined]
        lengths = {sum(e.attention_mask) for e in pairs}
        if lengths != {length} or any(len(e.ids) != length for e in pairs):
            msg = f"pairs are not all {length} tokens: {sorted(lengths)}"
            raise SystemExit(msg)
        nodes = [NodeWithScore(node=TextNode(text=d)) for d in documents]
        for kind, each in rerankers.items():
            rerank = functools.partial(each.postprocess_nodes, nodes, query_str=query)
            measured[kind].append((length, median_seconds(rerank, args.repeats)))

    peaks = matmul_peaks(args.peak_batch, args.peak_seq, threads)
    peak = max(ort_rate for _, _, ort_rate, _ in peaks)
    numpy_peak = max(np_rate for *_, np_rate in peaks)

    header = (
        f"{'tokens/pair':>11}{'GFLOP/pair':>12}{'pairs/s':>9}{'ms/pair':>9}{'GFLOP/s':>9}"
        f"{'of ORT peak':>13}"
    )
    print(header)
    print("-" * len(header))
    for length, seconds in measured["fp32"]:
        gflop = pair_flops(length) / 1e9
        achieved = PAIRS * gflop / seconds
        print(
            f"{length:>11}{gflop:>12.2f}{PAIRS / seconds:>9.1f}{seconds / PAIRS * 1000:>9.1f}"
            f"{achieved:>9.1f}{achieved / peak:>12.0%}"
        )
    print()
    print(
        f"MatMul peak at the model's shapes, B={args.peak_batch} pairs of L={args.peak_seq} "
        f"tokens (median of 7 after a warm-up), onnxruntime with {threads} intra-op threads:"
    )
    header = f"{'shape':<22}{'share of FLOPs':>15}{'onnxruntime':>13}{'numpy':>9}  GFLOP/s"
    print(header)
    print("-" * len(header))
    for name, share, ort_rate, np_rate in peaks:
        print(f"{name:<22}{share:>15.0%}{ort_rate:>13.1f}{np_rate:>9.1f}")
    # What the model's matrix products alone would take at these rates, at the peak's length.
    ceiling = 1 / sum(share / ort_rate for _, share, ort_rate, _ in peaks)
    print(
        f"\nPeak: onnxruntime {peak:.1f} GFLOP/s, numpy {numpy_peak:.1f} GFLOP/s (best shape); "
        f"the model's MatMul mix at onnxruntime's per-shape rates: {ceiling:.1f} GFLOP/s"
    )
    for length, seconds in measured["fp32"]:
        achieved = PAIRS * pair_flops(length) / 1e9 / seconds
        print(
            f"L={length}: FastEmbedRerank {achieved:.1f} GFLOP/s = {achieved / peak:.0%} of "
            f"onnxruntime's peak, {achieved / numpy_peak:.0%} of numpy's, "
            f"{achieved / ceiling:.0%} of the MatMul-mix ceiling"
        )
    if "int8" in measured:
        print_int8(args, measured, peaks, threads)


def print_int8(
    args: argparse.Namespace,
    measured: dict[str, list[tuple[int, float]]],
    peaks: list[tuple[str, float, float, float]],
    threads: int,
) -> None:
    int8 = int8_peaks(args.peak_batch, args.peak_seq, threads)
    print()
    print(
        f"int8 peak at the weight shapes, B={args.peak_batch} pairs of L={args.peak_seq} tokens "
        f"(median of 7 after a warm-up), {threads} intra-op threads, GOP/s:"
    )
    header = (
        f"{'shape':<22}{'share':>7}{'fp32 MatMul':>13}"
        + "".join(f"{op:>23}" for op in INT8_OPS)
        + f"{'DQMatMul/fp32':>15}"
    )
    print(header)
    print("-" * len(header))
    fp32_rate = {name: rate for name, _, rate, _ in peaks}
    for name, share, rates in int8:
        print(
            f"{name:<22}{share:>7.0%}{fp32_rate[name]:>13.1f}"
            + "".join(f"{r:>23.1f}" for r in rates)
            + f"{rates[1] / fp32_rate[name]:>14.2f}x"
        )
    dqmm = [(share, rates[1]) for _, share, rates in int8]
    int8_peak = max(rates[1] for *_, rates in int8)
    integer_peak = max(rates[0] for *_, rates in int8)
    # The int8 graph: weight products at DynamicQuantizeMatMul's rates, attention's at fp32's.
    attention = [(share, rate) for name, share, rate, _ in peaks if name.startswith("[B*A")]
    ceiling = 1 / sum(share / rate for share, rate in dqmm + attention)
    print(
        f"\nint8 peak: DynamicQuantizeMatMul {int8_peak:.1f} GOP/s, MatMulInteger "
        f"{integer_peak:.1f} GOP/s (best shape); the int8 graph's mix (weight products at "
        f"DynamicQuantizeMatMul's rates, attention at fp32's): {ceiling:.1f} GOP/s"
    )
    header = (
        f"{'tokens/pair':>11}{'fp32 pairs/s':>14}{'int8 pairs/s':>14}{'int8/fp32':>11}"
        f"{'int8 GOP/s':>12}{'of int8 peak':>14}{'of int8 mix':>13}"
    )
    print(header)
    print("-" * len(header))
    for (length, fp32_s), (_, int8_s) in zip(measured["fp32"], measured["int8"], strict=True):
        achieved = PAIRS * pair_flops(length) / 1e9 / int8_s
        print(
            f"{length:>11}{PAIRS / fp32_s:>14.1f}{PAIRS / int8_s:>14.1f}{fp32_s / int8_s:>10.2f}x"
            f"{achieved:>12.1f}{achieved / int8_peak:>13.0%}{achieved / ceiling:>13.0%}"
        )


if __name__ == "__main__":
    main()
