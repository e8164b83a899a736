"""Ingestion throughput: FastEmbedEmbedding against fastembed and llama-index-embeddings-fastembed.

Run ``python benchmarks/ingest.py`` (``--help`` for options). One process embeds the same
seeded chunks (2,000 by default, 100 to 200 words each, from the words of
examples/data/movies.json) with sentence-transformers/all-MiniLM-L6-v2, real weights built
offline by tests/offline_models.py, in three ways, each at its defaults:

- this package's ``FastEmbedEmbedding(...).get_text_embedding_batch(chunks)``;
- fastembed's ``TextEmbedding(...).passage_embed(chunks)`` called directly: the ceiling;
- ``llama_index.embeddings.fastembed.FastEmbedEmbedding`` (embed_batch_size 10, so fastembed
  gets 10 texts a call), loaded offline through its ``**kwargs``.

The methods take turns, in a rotating order, over a few rounds after a warm-up on a slice;
each figure is the median. fastembed pads every batch to its longest text, so the padding each
batching causes is printed too. The vectors of this package and of fastembed must agree.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import _common  # first: sets HF_HUB_OFFLINE and puts tests/ on sys.path
import numpy as np
from fastembed import TextEmbedding
from llama_index.embeddings.fastembed import FastEmbedEmbedding as PackageEmbedding

from llama_index_fastembed_rerank import FastEmbedEmbedding, _fastembed
from llama_index_fastembed_rerank.batching import length_batches

TOLERANCE = 1e-5
TARGET = 0.95  # this package's throughput against fastembed's own call

Embedder = Callable[[list[str]], Any]  # vectors: lists of floats or numpy arrays


def padding_ratio(lengths: list[int], batches: list[list[int]]) -> float:
    """Return tokens run (each batch padded to its longest) over real tokens."""
    run = sum(len(rows) * max(lengths[r] for r in rows) for rows in batches)
    return run / sum(lengths)


def measure(
    embedders: dict[str, Embedder], chunks: list[str], runs: int
) -> tuple[dict[str, list[float]], dict[str, np.ndarray]]:
    """Time every embedder on all chunks per round, after a warm-up; return seconds, vectors."""
    for embed in embedders.values():
        embed(chunks[:64])
    seconds: dict[str, list[float]] = {name: [] for name in embedders}
    vectors: dict[str, np.ndarray] = {}
    names = list(embedders)
    for round_ in range(runs):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            start = time.perf_counter()
            result = embedders[name](chunks)
            seconds[name].append(time.perf_counter() - start)
            vectors[name] = np.asarray(result, dtype=np.float32)
        print(f"  round {round_ + 1}/{runs} done", flush=True)
    return seconds, vectors


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3, help="timed rounds (median is reported)")
    parser.add_argument(
        "--extra-batch-sizes",
        type=int,
        nargs="*",
        default=[],
        help="also time this package with these max_batch_tokens values",
    )
    args = parser.parse_args()

    cache = _common.provision()
    offline: dict[str, Any] = {"cache_dir": cache, "local_files_only": True}
    chunks = _common.make_chunks(args.chunks, 100, 200)
    ours = FastEmbedEmbedding(_common.EMBED_MODEL, **offline)
    direct = TextEmbedding(_common.EMBED_MODEL, **offline)
    package = PackageEmbedding(model_name=_common.EMBED_MODEL, **offline)

    embedders: dict[str, Embedder] = {
        "FastEmbedEmbedding (ours)": ours.get_text_embedding_batch,
        "TextEmbedding.passage_embed": lambda texts: list(direct.passage_embed(texts)),
        "llama-index-embeddings-fastembed": package.get_text_embedding_batch,
    }
    encodings = _fastembed.tokenizer(direct).encode_batch(chunks)  # type: ignore[union-attr]
    lengths = [sum(e.attention_mask) for e in encodings]
    # What each method runs: ours by token length within its two limits, the others in order.
    batches = {
        "FastEmbedEmbedding (ours)": list(
            length_batches(lengths, ours.batch_size, ours.max_batch_tokens)
        ),
        "TextEmbedding.passage_embed": _common.in_order(len(chunks), 256),  # fastembed's default
        "llama-index-embeddings-fastembed": _common.in_order(len(chunks), package.embed_batch_size),
    }
    for size in args.extra_batch_sizes:
        variant = FastEmbedEmbedding(_common.EMBED_MODEL, max_batch_tokens=size, **offline)
        embedders[f"ours, max_batch_tokens={size}"] = variant.get_text_embedding_batch
        batches[f"ours, max_batch_tokens={size}"] = list(
            length_batches(lengths, variant.batch_size, size)
        )
    truncated = sum(1 for e in encodings if e.overflowing)
    words = [len(c.split()) for c in chunks]

    for line in _common.machine_lines():
        print(line)
    print(f"Model: {_common.EMBED_MODEL} (real weights, offline); onnxruntime default threads")
    print(
        f"Chunks: {len(chunks)}, {min(words)}-{max(words)} words, "
        f"{min(lengths)}-{max(lengths)} tokens (mean {statistics.mean(lengths):.0f}; "
        f"{truncated} cut at the model's 256-token window); {args.runs} rounds after a warm-up"
    )
    seconds, vectors = measure(embedders, chunks, args.runs)

    rate = {name: len(chunks) / statistics.median(s) for name, s in seconds.items()}
    ref, pkg = rate["TextEmbedding.passage_embed"], rate["llama-index-embeddings-fastembed"]
    print()
    header = (
        f"{'method':<34}{'runs':>6}{'chunks/s':>10}{'vs direct':>11}{'vs li-fe':>10}"
        f"{'padding':>9}  rounds (s)"
    )
    print(header)
    print("-" * len(header))
    for name, value in rate.items():
        runs = ", ".join(f"{s:.1f}" for s in seconds[name])
        print(
            f"{name:<34}{len(batches[name]):>6}{value:>10.1f}{value / ref:>10.2f}x"
            f"{value / pkg:>9.2f}x{padding_ratio(lengths, batches[name]):>8.2f}x  {runs}"
        )
    print(
        "runs: ONNX runs; padding: tokens run / real tokens (each run padded to its longest "
        "chunk); li-fe: llama-index-embeddings-fastembed"
    )

    ours_vectors = vectors["FastEmbedEmbedding (ours)"]
    diff = float(np.max(np.abs(ours_vectors - vectors["TextEmbedding.passage_embed"])))
    diff_package = float(np.max(np.abs(ours_vectors - vectors["llama-index-embeddings-fastembed"])))
    ratio = rate["FastEmbedEmbedding (ours)"] / ref
    verdict = "met" if ratio >= TARGET else "MISSED"
    print(f"\nours / direct passage_embed: {ratio:.2f}x (target >= {TARGET}x: {verdict})")
    ours_rate = rate["FastEmbedEmbedding (ours)"]
    print(f"ours / llama-index-embeddings-fastembed: {ours_rate / pkg:.2f}x")
    print(f"max |ours - direct| over {ours_vectors.size} values: {diff:.1e}")
    print(f"max |ours - llama-index-embeddings-fastembed|: {diff_package:.1e} (other batching)")
    if diff > TOLERANCE:
        msg = f"FAILED: vectors differ from fastembed's by {diff:.1e} > {TOLERANCE}"
        raise SystemExit(msg)


if __name__ == "__main__":
    main()
