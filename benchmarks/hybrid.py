"""Hybrid (dense + BM25) ingestion and query latency: qdrant_hybrid_store against the store's own.

Run ``python benchmarks/hybrid.py`` (``--help`` for options). One process ingests the same
seeded chunks (2,000 by default, 10 to 400 words, from the words of examples/data/movies.json)
into embedded Qdrant (``QdrantClient(":memory:")``) with ``VectorStoreIndex(nodes, ...)``, real
all-MiniLM-L6-v2 and BM25 built offline by tests/offline_models.py, three ways:

- ours: ``qdrant_hybrid_store`` with this package's ``FastEmbedEmbedding`` and
  ``FastEmbedSparseEmbedding`` at their defaults;
- the baseline: ``QdrantVectorStore(enable_hybrid=True, fastembed_sparse_model="Qdrant/bm25")``
  at its defaults, with llama-index-embeddings-fastembed's ``FastEmbedEmbedding`` at its
  defaults (LlamaIndex's documented hybrid recipe);
- the baseline store with this package's dense embedder, to show where the time goes.

The ingestions take turns in a rotating order over a few rounds after a warm-up; each figure
is the median. Then, on the collection ours built, query latency of hybrid retrieval (20
dense + 20 sparse candidates, RRF to 20) against dense-only retrieval of 20, and of the
baseline's hybrid on its own collection.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import uuid
import warnings
from collections.abc import Callable
from typing import Any

import _common  # first: sets HF_HUB_OFFLINE and puts tests/ on sys.path
from fastembed import TextEmbedding
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.schema import TextNode
from llama_index.embeddings.fastembed import FastEmbedEmbedding as PackageEmbedding
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import QdrantClient

from llama_index_fastembed_rerank import (
    FastEmbedEmbedding,
    FastEmbedSparseEmbedding,
    _fastembed,
    qdrant_hybrid_store,
)
from llama_index_fastembed_rerank.batching import length_batches

SPARSE_MODEL = "Qdrant/bm25"
TARGET = 1.5  # ours against the baseline's hybrid ingestion
TOP_K = 20

Ingest = Callable[[list[TextNode]], VectorStoreIndex]


def nodes_of(chunks: list[str]) -> list[TextNode]:
    return [TextNode(id_=str(uuid.UUID(int=i)), text=c) for i, c in enumerate(chunks)]


def ingesters(cache: str) -> dict[str, Ingest]:
    offline: dict[str, Any] = {"cache_dir": cache, "local_files_only": True}
    ours_dense = FastEmbedEmbedding(_common.EMBED_MODEL, **offline)
    ours_sparse = FastEmbedSparseEmbedding(SPARSE_MODEL, **offline)
    package_dense = PackageEmbedding(model_name=_common.EMBED_MODEL, **offline)

    def index(store: QdrantVectorStore, embed_model: Any, nodes: list[TextNode]) -> Any:
        return VectorStoreIndex(
            nodes,
            storage_context=StorageContext.from_defaults(vector_store=store),
            embed_model=embed_model,
        )

    def baseline_store() -> QdrantVectorStore:
        # The store builds its own SparseTextEmbedding from FASTEMBED_CACHE_PATH (set in main).
        return QdrantVectorStore(
            "chunks",
            client=QdrantClient(":memory:"),
            enable_hybrid=True,
            fastembed_sparse_model=SPARSE_MODEL,
        )

    return {
        "qdrant_hybrid_store (ours)": lambda nodes: index(
            qdrant_hybrid_store(
                "chunks", client=QdrantClient(":memory:"), sparse_model=ours_sparse
            ),
            ours_dense,
            nodes,
        ),
        "store defaults + li-fe": lambda nodes: index(baseline_store(), package_dense, nodes),
        "store defaults + our dense": lambda nodes: index(baseline_store(), ours_dense, nodes),
    }


def dense_work(chunks: list[str], cache: str) -> tuple[float, dict[str, float]]:
    """Return the dense model's FLOPs on the chunks, and what each method runs (padding in)."""
    model = TextEmbedding(_common.EMBED_MODEL, cache_dir=cache, local_files_only=True)
    encodings = _fastembed.tokenizer(model).encode_batch(chunks)  # type: ignore[union-attr]
    lengths = [sum(e.attention_mask) for e in encodings]
    ours = FastEmbedEmbedding(_common.EMBED_MODEL, cache_dir=cache, local_files_only=True)
    ours_batches = list(length_batches(lengths, ours.batch_size, ours.max_batch_tokens))
    package_batch = PackageEmbedding(model_name=_common.EMBED_MODEL).embed_batch_size
    batches = {
        "qdrant_hybrid_store (ours)": ours_batches,
        "store defaults + li-fe": _common.in_order(len(chunks), package_batch),
        "store defaults + our dense": ours_batches,
    }
    run = {
        name: sum(len(rows) * _common.encoder_flops(max(lengths[r] for r in rows)) for rows in b)
        for name, b in batches.items()
    }
    return sum(_common.encoder_flops(n) for n in lengths), run


def measure_ingest(
    methods: dict[str, Ingest], chunks: list[str], runs: int
) -> tuple[dict[str, list[float]], dict[str, VectorStoreIndex]]:
    for ingest in methods.values():
        ingest(nodes_of(chunks[:64]))
    seconds: dict[str, list[float]] = {name: [] for name in methods}
    indexes: dict[str, VectorStoreIndex] = {}
    names = list(methods)
    for round_ in range(runs):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            nodes = nodes_of(chunks)  # fresh nodes: an index writes embeddings into them
            start = time.perf_counter()
            indexes[name] = methods[name](nodes)
            seconds[name].append(time.perf_counter() - start)
        print(f"  round {round_ + 1}/{runs} done", flush=True)
    return seconds, indexes


def latency_ms(retrieve: Callable[[str], Any], queries: list[str]) -> tuple[float, float]:
    retrieve(queries[0])  # warm-up
    times = []
    for query in queries:
        start = time.perf_counter()
        retrieve(query)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times), _common.percentile(times, 95)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3, help="timed rounds (median is reported)")
    parser.add_argument("--queries", type=int, default=30)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local")

    cache = _common.provision()
    os.environ["FASTEMBED_CACHE_PATH"] = cache
    chunks = _common.make_chunks(args.chunks, 10, 400)
    words = [len(c.split()) for c in chunks]
    for line in _common.machine_lines(("llama-index-vector-stores-qdrant",)):
        print(line)
    print(
        f"Models: {_common.EMBED_MODEL} + {SPARSE_MODEL} (real, offline); embedded Qdrant in "
        f"memory. Chunks: {len(chunks)}, {min(words)}-{max(words)} words (mean "
        f"{statistics.mean(words):.0f}); {args.runs} rounds after a warm-up"
    )
    seconds, indexes = measure_ingest(ingesters(cache), chunks, args.runs)

    real, run = dense_work(chunks, cache)
    rate = {name: len(chunks) / statistics.median(s) for name, s in seconds.items()}
    base = rate["store defaults + li-fe"]
    print()
    header = (
        f"{'hybrid ingestion':<30}{'chunks/s':>10}{'vs baseline':>13}{'work':>7}{'GFLOP/s':>9}"
        "  rounds (s)"
    )
    print(header)
    print("-" * len(header))
    for name, value in rate.items():
        runs = ", ".join(f"{s:.1f}" for s in seconds[name])
        gflops = run[name] / statistics.median(seconds[name]) / 1e9
        print(
            f"{name:<30}{value:>10.1f}{value / base:>12.2f}x{run[name] / real:>6.2f}x"
            f"{gflops:>9.1f}  {runs}"
        )
    ratio = rate["qdrant_hybrid_store (ours)"] / base
    verdict = "met" if ratio >= TARGET else "MISSED"
    print(f"ours / baseline: {ratio:.2f}x (target >= {TARGET}x: {verdict})")
    print(
        f"work: the dense model's matrix-product FLOPs run (batches padded to their longest "
        f"chunk) over the {real / 1e9:.0f} GFLOP the chunks need ({real / len(chunks) / 1e9:.2f} "
        "a chunk); GFLOP/s: those run over the whole ingestion's median time; "
        "li-fe: llama-index-embeddings-fastembed"
    )

    queries = _common.make_queries(args.queries)
    ours = indexes["qdrant_hybrid_store (ours)"]
    baseline = indexes["store defaults + li-fe"]
    hybrid = {"vector_store_query_mode": "hybrid", "sparse_top_k": TOP_K}
    cases = {
        "dense only (ours, same collection)": ours.as_retriever(similarity_top_k=TOP_K),
        "hybrid, RRF (ours)": ours.as_retriever(similarity_top_k=TOP_K, **hybrid),
        "hybrid, store defaults": baseline.as_retriever(similarity_top_k=TOP_K, **hybrid),
    }
    print(f"\nQuery latency, {len(queries)} queries, top {TOP_K}, ms")
    header = f"{'retrieval':<36}{'median':>8}{'p95':>8}"
    print(header)
    print("-" * len(header))
    for name, retriever in cases.items():
        median, p95 = latency_ms(retriever.retrieve, queries)
        print(f"{name:<36}{median:>8.1f}{p95:>8.1f}")


if __name__ == "__main__":
    main()
