"""End-to-end query latency: Qdrant retrieval of 20, then FastEmbedRerank(top_n=5), or not.

Run ``python benchmarks/query_latency.py`` (``--help`` for options). Two collections, each a
LlamaIndex ``VectorStoreIndex`` over a ``QdrantVectorStore`` on embedded Qdrant
(``QdrantClient(":memory:")``, no server), embedded with this package's FastEmbedEmbedding
(sentence-transformers/all-MiniLM-L6-v2, real weights built offline):

- ``movies``: the tutorial's 20 descriptions (examples/data/movies.json);
- ``chunks``: 10,000 seeded chunks of 60 to 120 words. Embedding them takes minutes on a small
  CPU: the time is printed, and the vectors are kept in a .npy under the temp directory, so
  later runs only load them (``--rebuild`` embeds again).

The timed path for each query is ``index.as_retriever(similarity_top_k=20).retrieve(query)``
(embedding the query and searching Qdrant), then
``FastEmbedRerank(top_n=5).postprocess_nodes(nodes, query_str=query)`` on what it returned, with
the offline stand-in for Xenova/ms-marco-MiniLM-L-6-v2 (same size and cost, untrained head).
No LLM is called: an LLM's answer would dwarf both stages and is not ours to measure. The
queries are the tutorial's and seeded questions of 4 to 12 words, after a warm-up of 3.
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import _common  # first: sets HF_HUB_OFFLINE and puts tests/ on sys.path
import numpy as np
from llama_index.core import StorageContext, VectorStoreIndex
from llama_index.core.schema import TextNode
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import QdrantClient

import offline_models
from llama_index_fastembed_rerank import FastEmbedEmbedding, FastEmbedRerank

RETRIEVE_K = 20
TOP_N = 5
WARM_UP = 3


def cached_vectors(
    chunks: list[str], embed_model: FastEmbedEmbedding, rebuild: bool
) -> tuple[np.ndarray, str]:
    """Return the chunks' vectors from the .npy cache, or embed them; and how they were got."""
    digest = hashlib.sha256("\n".join([embed_model.model_name, *chunks]).encode()).hexdigest()
    path = Path(tempfile.gettempdir()) / "lifr-bench" / f"vectors-{digest[:16]}.npy"
    if path.exists() and not rebuild:
        return np.load(path), f"loaded from {path}"
    start = time.perf_counter()
    vectors = np.array(embed_model.get_text_embedding_batch(chunks), dtype=np.float32)
    seconds = time.perf_counter() - start
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, vectors)
    return vectors, (
        f"embedded in {seconds:.0f} s ({len(chunks) / seconds:.1f} chunks/s), saved to {path}"
    )


def build_index(
    name: str, texts: list[str], vectors: np.ndarray, embed_model: FastEmbedEmbedding
) -> tuple[VectorStoreIndex, float]:
    """Load texts with their vectors into an in-memory Qdrant collection; return it and seconds."""
    start = time.perf_counter()
    nodes = [
        # Qdrant takes UUIDs or integers as point ids: seeded UUIDs keep runs alike.
        TextNode(text=text, id_=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{name}/{i}")), embedding=v)
        for i, (text, v) in enumerate(zip(texts, vectors.tolist(), strict=True))
    ]
    store = QdrantVectorStore(client=QdrantClient(":memory:"), collection_name=name)
    index = VectorStoreIndex(
        nodes,
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed_model,
    )
    return index, time.perf_counter() - start


def time_queries(
    index: VectorStoreIndex, reranker: FastEmbedRerank, queries: list[str]
) -> tuple[list[float], list[float], list[int]]:
    """Return per-query milliseconds of retrieval and of reranking, and the pairs' tokens."""
    retriever = index.as_retriever(similarity_top_k=RETRIEVE_K)
    # The reranker's own tokenizer, to report how long the pairs it scores are.
    encoder = reranker._model()
    tokenizer = encoder.model.tokenizer  # type: ignore[attr-defined]
    retrieve_ms, rerank_ms, tokens = [], [], []
    for i, query in enumerate([*queries[:WARM_UP], *queries]):
        start = time.perf_counter()
        nodes = retriever.retrieve(query)
        retrieved = time.perf_counter()
        kept = reranker.postprocess_nodes(nodes, query_str=query)
        done = time.perf_counter()
        if len(nodes) != RETRIEVE_K or len(kept) != TOP_N:
            msg = f"expected {RETRIEVE_K} retrieved and {TOP_N} kept, got {len(nodes)}, {len(kept)}"
            raise SystemExit(msg)
        if i < WARM_UP:
            continue
        retrieve_ms.append((retrieved - start) * 1000)
        rerank_ms.append((done - retrieved) * 1000)
        pairs = [(query, n.node.get_content()) for n in nodes]
        tokens += [sum(e.attention_mask) for e in tokenizer.encode_batch(pairs)]
    return retrieve_ms, rerank_ms, tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=30)
    parser.add_argument("--rebuild", action="store_true", help="embed the chunks again")
    args = parser.parse_args()
    # llama-index-vector-stores-qdrant asks embedded Qdrant for payload indexes it cannot use.
    warnings.filterwarnings("ignore", message="Payload indexes have no effect")

    cache = _common.provision()
    offline: dict[str, Any] = {"cache_dir": cache, "local_files_only": True}
    embed_model = FastEmbedEmbedding(_common.EMBED_MODEL, **offline)
    reranker = FastEmbedRerank(offline_models.STANDIN_RERANK_MODEL, top_n=TOP_N, **offline)
    embed_model.warm_up()
    reranker.warm_up()
    queries = _common.make_queries(args.queries)

    for line in _common.machine_lines():
        print(line)
    print(
        f"Embedding: {_common.EMBED_MODEL}; reranker: {offline_models.STANDIN_RERANK_MODEL} "
        f"(shape and cost of Xenova/ms-marco-MiniLM-L-6-v2), batch_size {reranker.batch_size}"
    )
    print(
        f"Timed: retriever.retrieve(query) with similarity_top_k={RETRIEVE_K}, then "
        f"reranker.postprocess_nodes(nodes, query_str=query) with top_n={TOP_N}; "
        f"{len(queries)} queries after {WARM_UP} warm-up; no LLM"
    )

    movies = [str(d) for d in _common.movies()["descriptions"]]  # type: ignore[attr-defined]
    movie_vectors = np.array(embed_model.get_text_embedding_batch(movies), dtype=np.float32)
    chunks = _common.make_chunks(args.chunks, 60, 120)
    chunk_vectors, how = cached_vectors(chunks, embed_model, args.rebuild)
    print(f"Chunks: {len(chunks)} of 60-120 words; vectors {how}")

    rows = []
    for name, texts, vectors in (
        ("movies", movies, movie_vectors),
        ("chunks", chunks, chunk_vectors),
    ):
        index, load_s = build_index(name, texts, vectors, embed_model)
        print(f"{name}: {len(texts)} points loaded into Qdrant in {load_s:.1f} s", flush=True)
        retrieve_ms, rerank_ms, tokens = time_queries(index, reranker, queries)
        total_ms = [a + b for a, b in zip(retrieve_ms, rerank_ms, strict=True)]
        rows.append((name, len(texts), retrieve_ms, rerank_ms, total_ms, tokens))

    print()
    header = (
        f"{'collection':<12}{'points':>7}  {'retrieve 20':>16}  {'rerank 20->5':>16}"
        f"  {'retrieve+rerank':>16}{'with/without':>14}{'tokens/pair':>13}"
    )
    print("milliseconds per query, median / p95")
    print(header)
    print("-" * len(header))
    for name, points, retrieve_ms, rerank_ms, total_ms, tokens in rows:
        cells = [
            f"{statistics.median(ms):7.1f} / {_common.percentile(ms, 95):6.1f}"
            for ms in (retrieve_ms, rerank_ms, total_ms)
        ]
        slowdown = statistics.median(total_ms) / statistics.median(retrieve_ms)
        print(
            f"{name:<12}{points:>7}  {cells[0]:>16}  {cells[1]:>16}  {cells[2]:>16}"
            f"{slowdown:>13.1f}x{statistics.mean(tokens):>13.0f}"
        )
    print(
        "with/without: median retrieve+rerank over median retrieve; tokens/pair: mean "
        "query+document tokens the cross-encoder reads"
    )


if __name__ == "__main__":
    main()
