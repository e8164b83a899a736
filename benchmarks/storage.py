"""Embedded storage: QdrantEdgeVectorStore against QdrantVectorStore on qdrant-client's local mode.

Run ``python benchmarks/storage.py`` (``--help`` for options; the default sizes take hours on
2 cores: run it in the background). Both stores are driven through LlamaIndex's vector store
interface (``add`` in batches of 2,048 as ``VectorStoreIndex`` does, ``query`` with a
``VectorStoreQuery``), with synthetic data shaped like real chunks, so no model runs:

- dense: 384 values (all-MiniLM-L6-v2's size), normalised, drawn around 1,000 cluster centres
  (real embeddings cluster; uniform random vectors are HNSW's worst case);
- sparse: ~60 distinct terms per chunk from a Zipf-like 30,000-term vocabulary, weighted as
  BM25 weighs a document (k=1.2, b=0.75), with Qdrant's IDF modifier; queries have 5 terms;
- payload: what QdrantVectorStore writes for a 150-word TextNode with a ``source`` key (one of
  100 values: the filter's 1% selectivity), about 1.6 KB a point.

Each store is written by this process, then reopened and queried in a fresh subprocess (open
time, RSS, p50/p95 of dense, sparse, hybrid RRF and dense with a filter on ``source``, and on
``tag``, a key mixing ints and strings, which the edge store filters without a payload index),
the queries timed on their second pass.
Local mode stops at the first size whose estimated time (from the last size's rates) exceeds
``--local-budget-s``. The edge store's writes include its index upkeep; the time of the
engine's index builds within them is given too.

Last, recall@20 of the edge store's HNSW index against exact search, on real embeddings:
all-MiniLM-L6-v2 vectors (offline weights) of chunks of Debian package long descriptions
(``/var/lib/apt/lists/*_i18n_Translation-en*``, which ``apt-get update -o
Acquire::Languages=en`` fetches), cached on disk between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import _common  # first: sets HF_HUB_OFFLINE and puts examples/ on sys.path
import numpy as np
from llama_index.core.bridge.pydantic import PrivateAttr
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import (
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
)

from llama_index_fastembed_rerank import FastEmbedSparseEmbedding, QdrantEdgeVectorStore

DIM = 384
CENTRES = 1_000
VOCABULARY = 30_000
DOC_TERMS = 60
QUERY_TERMS = 5
WORDS = 150
SOURCES = 100
BATCH = 2_048  # VectorStoreIndex's insert_batch_size
TOP_K = 20
RECALL_QUERIES = 200
CACHE = Path.home() / ".cache" / "llama-index-fastembed-rerank" / "storage-bench"
TRANSLATIONS = "/var/lib/apt/lists/*_i18n_Translation-en*"
TARGETS = {"hybrid p50 ms at 100k": 10.0, "vs local": 100.0, "reopen s": 2.0, "writes/s": 3000.0}


# --- synthetic data -------------------------------------------------------------------------


def centres() -> np.ndarray:
    return np.random.default_rng([_common.SEED, 0]).normal(size=(CENTRES, DIM))


def dense_batch(start: int, n: int, centre: np.ndarray) -> np.ndarray:
    rng = np.random.default_rng([_common.SEED, 1, start])
    v = centre[rng.integers(0, CENTRES, n)] + 0.8 * rng.normal(size=(n, DIM))
    return (v / np.linalg.norm(v, axis=1, keepdims=True)).astype(np.float32)


def zipf_terms(rng: np.random.Generator, n: int) -> np.ndarray:
    # Zipf over ranks, folded into the vocabulary: a few very common terms, a long tail.
    return (rng.zipf(1.1, n) - 1) % VOCABULARY


def doc_sparse(i: int) -> tuple[list[int], list[float]]:
    rng = np.random.default_rng([_common.SEED, 2, i])
    terms, counts = np.unique(zipf_terms(rng, 90), return_counts=True)
    keep = rng.permutation(len(terms))[:DOC_TERMS]
    terms, tf = terms[keep], counts[keep].astype(float)
    length = WORDS / 80  # document length over the average
    values = tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * length))
    return terms.tolist(), values.tolist()


def query_sparse(j: int) -> tuple[list[int], list[float]]:
    rng = np.random.default_rng([_common.SEED, 3, j])
    terms = np.unique(zipf_terms(rng, QUERY_TERMS))
    return terms.tolist(), [1.0] * len(terms)


class PrecomputedSparse(FastEmbedSparseEmbedding):
    """BM25's settings (IDF modifier) with the synthetic vectors, made before the clock starts.

    A document's vector is looked up by the number in its text ("chunk 123"), a query's is
    made from its text ("query 7"); no model runs, so the stores' own time is measured.
    """

    _table: dict[int, tuple[list[int], list[float]]] = PrivateAttr(default_factory=dict)

    def prepare(self, start: int, n: int) -> None:
        self._table = {i: doc_sparse(i) for i in range(start, start + n)}

    def doc_fn(self, texts: list[str]) -> tuple[list[list[int]], list[list[float]]]:
        vectors = [self._table[int(t[t.index("chunk ") + 6 :].split(maxsplit=1)[0])] for t in texts]
        return [v[0] for v in vectors], [v[1] for v in vectors]

    def query_fn(self, texts: list[str]) -> tuple[list[list[int]], list[list[float]]]:
        vectors = [query_sparse(int(t.split()[1])) for t in texts]
        return [v[0] for v in vectors], [v[1] for v in vectors]


def nodes(start: int, n: int, centre: np.ndarray) -> list[TextNode]:
    words = _common.word_pool()
    rng = np.random.default_rng([_common.SEED, 4, start])
    vectors = dense_batch(start, n, centre).tolist()
    out = []
    for k in range(n):
        i = start + k
        filler = " ".join(words[w] for w in rng.integers(0, len(words), WORDS))
        out.append(
            TextNode(
                id_=str(uuid.UUID(int=i + 1)),
                text=f"chunk {i} {filler}",
                embedding=vectors[k],
                # "tag" mixes ints and strings, so the store filters on it without an index.
                metadata={
                    "source": f"file-{i % SOURCES}.txt",
                    "tag": i % SOURCES if i % 2 else f"t{i % SOURCES}",
                },
            )
        )
    return out


def queries(n: int) -> list[VectorStoreQuery]:
    centre = centres()
    vectors = dense_batch(10**9, n, centre).tolist()
    return [
        VectorStoreQuery(
            query_embedding=vectors[j],
            query_str=f"query {j}",
            similarity_top_k=TOP_K,
            sparse_top_k=TOP_K,
        )
        for j in range(n)
    ]


# --- the stores -----------------------------------------------------------------------------


def sparse_model() -> PrecomputedSparse:
    return PrecomputedSparse("Qdrant/bm25")


def open_store(kind: str, path: Path, sparse: PrecomputedSparse | None = None) -> Any:
    sparse = sparse or sparse_model()
    if kind == "edge":
        return QdrantEdgeVectorStore(path, sparse_model=sparse)
    from qdrant_client import QdrantClient

    from llama_index_fastembed_rerank import qdrant_hybrid_store

    return qdrant_hybrid_store("bench", client=QdrantClient(path=str(path)), sparse_model=sparse)


def close_store(kind: str, store: Any) -> None:
    if kind == "edge":
        store.close()
    else:
        store.client.close()


class TimedShard:
    """The edge store's shard, with the time its index builds (``optimize``) take."""

    def __init__(self, shard: Any) -> None:
        self._shard = shard
        self.seconds = 0.0
        self.cpu = 0.0

    def optimize(self) -> bool:
        wall, cpu = time.perf_counter(), time.process_time()
        done = bool(self._shard.optimize())
        self.seconds += time.perf_counter() - wall
        self.cpu += time.process_time() - cpu
        return done

    def __getattr__(self, name: str) -> Any:
        return getattr(self._shard, name)


def write(kind: str, path: Path, size: int) -> dict[str, float]:
    """Write ``size`` synthetic nodes through ``add``; return timings."""
    centre = centres()
    sparse = sparse_model()
    store = open_store(kind, path, sparse)
    timed = None
    seconds = 0.0
    for start in range(0, size, BATCH):
        batch = nodes(start, min(BATCH, size - start), centre)
        sparse.prepare(start, len(batch))
        began = time.perf_counter()
        store.add(batch)
        seconds += time.perf_counter() - began
        if kind == "edge" and timed is None:
            timed = TimedShard(store._folder.shard)
            store._folder.shard = timed
        if start // BATCH % 25 == 24:
            print(f"    {kind}: {start + BATCH:,} written, {seconds:.0f} s", flush=True)
    close_store(kind, store)
    index_s = timed.seconds if timed else 0.0
    return {
        "write_s": seconds,
        "index_s": index_s,
        "index_cpu_s": timed.cpu if timed else 0.0,
        "disk_mib": sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20,
    }


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def query_child(kind: str, path: Path, n_queries: int) -> dict[str, Any]:
    """Reopen the store in this (fresh) process and time its queries."""
    import llama_index.vector_stores.qdrant  # noqa: F401 - imported before the clock starts
    import qdrant_client  # noqa: F401

    before = rss_mib()
    began = time.perf_counter()
    store = open_store(kind, path)
    first = queries(1)[0]
    store.query(first)
    reopen = time.perf_counter() - began
    half = MetadataFilters(filters=[MetadataFilter(key="source", value="file-7.txt")])
    untagged = MetadataFilters(filters=[MetadataFilter(key="tag", value="t8")])
    out: dict[str, Any] = {"reopen_s": reopen, "rss_open_mib": rss_mib() - before}
    if kind == "edge":
        began = time.perf_counter()
        store.query(VectorStoreQuery(query_embedding=first.query_embedding, filters=half))
        out["first_filter_s"] = time.perf_counter() - began
    modes = {
        "dense": {},
        "sparse": {"mode": VectorStoreQueryMode.SPARSE},
        "hybrid": {"mode": VectorStoreQueryMode.HYBRID},
        "dense+filter": {"filters": half},
        "dense+filter, no index": {"filters": untagged},
    }
    # A first pass reads the files in from disk (the page cache may have dropped them); the
    # second pass is timed.
    for timed in (False, True):
        for name, changes in modes.items():
            times = []
            for q in queries(n_queries):
                q = VectorStoreQuery(**{**q.__dict__, **changes})
                began = time.perf_counter()
                result = store.query(q)
                times.append((time.perf_counter() - began) * 1000)
                assert result.ids, f"{kind} {name}: no result"
            if timed:
                out[name] = (statistics.median(times), _common.percentile(times, 95))
    out["rss_mib"] = rss_mib()
    close_store(kind, store)
    return out


def measure_queries(kind: str, path: Path, n_queries: int, timeout: float) -> dict[str, Any]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(_common.ROOT), *sys.path[:1]])}
    result = subprocess.run(
        [sys.executable, __file__, "--query-child", kind, str(path), str(n_queries)],
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(result.stderr[-3000:])
    return json.loads(result.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


# --- recall on real embeddings ----------------------------------------------------------------


def debian_chunks() -> list[str]:
    """Chunks of Debian's package long descriptions: the short one joined to each paragraph."""
    import glob

    files = sorted(glob.glob(TRANSLATIONS))
    if not files:
        msg = (
            f"no {TRANSLATIONS}: run `apt-get update -o Acquire::Languages=en` first (or pass "
            f"--no-recall)"
        )
        raise SystemExit(msg)
    main_file = max(files, key=lambda f: os.path.getsize(f))
    text = subprocess.run(
        ["lz4cat", main_file] if main_file.endswith(".lz4") else ["cat", main_file],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    descriptions: dict[str, list[str]] = {}
    for block in text.split("\n\n"):
        lines = block.split("\n")
        md5 = None
        for k, line in enumerate(lines):
            if line.startswith("Description-md5:"):
                md5 = line.split(":", 1)[1].strip()
            elif line.startswith("Description-en:") and md5:
                desc = [line.split(":", 1)[1].strip()] + [x[1:] for x in lines[k + 1 :]]
                descriptions.setdefault(md5, desc)
                break
    chunks: set[str] = set()
    for desc in descriptions.values():
        short, paragraphs, current = desc[0], [], []
        for line in desc[1:]:
            if line.strip() == ".":
                if current:
                    paragraphs.append(" ".join(current))
                    current = []
            else:
                current.append(line.strip())
        if current:
            paragraphs.append(" ".join(current))
        for paragraph in paragraphs:
            chunks.add(f"{short}. {paragraph}" if paragraph else short)
        if not paragraphs:
            chunks.add(short)
    ordered = sorted(chunks)
    import random

    random.Random(_common.SEED).shuffle(ordered)
    return ordered


def real_vectors(n: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Return ``n`` chunk vectors, RECALL_QUERIES query vectors, and where the text is from."""
    CACHE.mkdir(parents=True, exist_ok=True)
    texts_path, vectors_path = CACHE / "texts.json", CACHE / "vectors.npy"
    total = n + RECALL_QUERIES
    if vectors_path.exists() and texts_path.exists():
        vectors = np.load(vectors_path)
        if len(vectors) >= total:
            return vectors[:n], vectors[-RECALL_QUERIES:], str(texts_path)
    texts = debian_chunks()[:total]
    texts_path.write_text(json.dumps(texts))
    from llama_index_fastembed_rerank import FastEmbedEmbedding

    model = FastEmbedEmbedding(
        _common.EMBED_MODEL, cache_dir=_common.provision(), local_files_only=True
    )
    parts = []
    for start in range(0, total, 5_000):
        parts.append(
            np.asarray(
                model.get_text_embedding_batch(texts[start : start + 5_000]), dtype=np.float32
            )
        )
        print(f"    embedded {start + len(parts[-1]):,} of {total:,} chunks", flush=True)
    vectors = np.concatenate(parts)
    np.save(vectors_path, vectors)
    return vectors[:n], vectors[-RECALL_QUERIES:], str(texts_path)


def recall(n: int, folder: Path) -> dict[str, Any]:
    """Recall@20 of the edge store's index against exact search, on ``n`` real chunks."""
    corpus, query_vectors, _ = real_vectors(n)
    path = folder / f"real-{n}"
    store = QdrantEdgeVectorStore(path)
    began = time.perf_counter()
    for start in range(0, n, BATCH):
        store.add(
            [
                TextNode(id_=str(uuid.UUID(int=start + k + 1)), text="", embedding=v)
                for k, v in enumerate(corpus[start : start + BATCH].tolist())
            ]
        )
    write_s = time.perf_counter() - began
    info = store.client.info()
    out: dict[str, Any] = {
        "write_s": write_s,
        "segments": info.segments_count,
        "indexed": info.indexed_vectors_count / n,
    }
    exact = [
        set(
            store.query(
                VectorStoreQuery(query_embedding=q, similarity_top_k=TOP_K),
                search_params={"exact": True},
            ).ids
        )
        for q in query_vectors.tolist()
    ]
    for ef in (None, 128, 256):
        params = None if ef is None else {"hnsw_ef": ef}
        found, times = [], []
        for q, truth in zip(query_vectors.tolist(), exact, strict=True):
            began = time.perf_counter()
            ids = store.query(
                VectorStoreQuery(query_embedding=q, similarity_top_k=TOP_K), search_params=params
            ).ids
            times.append((time.perf_counter() - began) * 1000)
            found.append(len(truth & set(ids)) / TOP_K)
        out[f"ef={ef or 'default'}"] = (
            float(np.mean(found)),
            float(min(found)),
            statistics.median(times),
        )
    store.close()
    shutil.rmtree(path, ignore_errors=True)
    return out


# --- the run --------------------------------------------------------------------------------


def ms(pair: tuple[float, float] | None) -> str:
    return "-" if pair is None else f"{pair[0]:.1f} / {pair[1]:.1f}"


def report(size: int, edge: dict[str, Any], local: dict[str, Any] | None, note: str) -> None:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"\n{size:,} points (load average {load}; queries: p50 / p95 ms)")
    print(f"  {'':<30}{'edge':>18}{'local mode':>18}{'local/edge':>12}")
    rows = [
        (
            "writes (points/s)",
            f"{size / edge['write_s']:,.0f}",
            local and f"{size / local['write_s']:,.0f}",
        ),
        (
            "  of which index builds",
            f"{edge['index_s']:.1f} s ({1000 * edge['index_cpu_s'] / size:.2f} CPU-ms/pt)",
            None,
        ),
        (
            "  writes without them",
            f"{size / max(edge['write_s'] - edge['index_s'], 1e-9):,.0f}",
            None,
        ),
        ("disk (MiB)", f"{edge['disk_mib']:,.0f}", local and f"{local['disk_mib']:,.0f}"),
        ("reopen + 1st query (s)", f"{edge['reopen_s']:.2f}", local and f"{local['reopen_s']:.2f}"),
        (
            "RSS after queries (MiB)",
            f"{edge['rss_mib']:,.0f}",
            local and f"{local['rss_mib']:,.0f}",
        ),
        (
            "  of which opening (MiB)",
            f"{edge['rss_open_mib']:,.0f}",
            local and f"{local['rss_open_mib']:,.0f}",
        ),
        ("1st filtered query (s)", f"{edge['first_filter_s']:.2f}", None),
    ]
    for name, ours, theirs in rows:
        print(f"  {name:<30}{ours:>18}{theirs or '-':>18}")
    for mode in ("dense", "sparse", "hybrid", "dense+filter", "dense+filter, no index"):
        ratio = f"{local[mode][0] / edge[mode][0]:,.0f}x" if local else "-"
        theirs = ms(local and local[mode])
        print(f"  {mode:<30}{ms(edge[mode]):>18}{theirs:>18}{ratio:>12}")
    if note:
        print(f"  local mode: {note}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,300000,1000000")
    parser.add_argument("--queries", type=int, default=50, help="per mode and size, edge")
    parser.add_argument("--local-queries", type=int, default=10, help="per mode, local mode")
    parser.add_argument("--local-budget-s", type=float, default=3600, help="per size")
    parser.add_argument("--recall-sizes", default="50000,100000")
    parser.add_argument("--no-recall", action="store_true")
    parser.add_argument("--folder", default=None, help="where the stores are written")
    parser.add_argument("--query-child", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local")
    if args.query_child:
        kind, path, n = args.query_child
        print(json.dumps(query_child(kind, Path(path), int(n))))
        return

    for line in _common.machine_lines(("qdrant-edge-py", "llama-index-vector-stores-qdrant")):
        print(line)
    print(
        f"Synthetic chunks: {DIM}-d clustered dense, sparse ~{DOC_TERMS} terms of a "
        f"{VOCABULARY:,}-term Zipf vocabulary (IDF), {WORDS}-word TextNodes; adds of {BATCH:,}; "
        f"top {TOP_K}; p50 / p95 over {args.queries} queries (local mode: {args.local_queries}) "
        f"in a fresh process after reopening; local mode's budget {args.local_budget_s:.0f} s "
        f"a size"
    )
    folder = Path(args.folder or tempfile.mkdtemp(prefix="storage-bench-"))
    local_rate: dict[str, float] | None = None
    for size in [int(s) for s in args.sizes.split(",") if s]:
        print(f"\n== {size:,} points ==", flush=True)
        edge_path = folder / f"edge-{size}"
        edge = write("edge", edge_path, size)
        edge.update(measure_queries("edge", edge_path, args.queries, timeout=3600))
        shutil.rmtree(edge_path, ignore_errors=True)
        local, note = None, ""
        if local_rate is not None:
            estimate = (
                size * local_rate["per_point_s"]
                + args.local_queries * (size / local_rate["size"]) * local_rate["query_s"]
            )
            if estimate > args.local_budget_s:
                note = f"not run: estimated {estimate / 60:.0f} min > the budget"
                local_rate["skip"] = 1
        if local_rate is None or not local_rate.get("skip"):
            local_path = folder / f"local-{size}"
            local = write("local", local_path, size)
            local.update(measure_queries("local", local_path, args.local_queries, timeout=7200))
            shutil.rmtree(local_path, ignore_errors=True)
            query_s = sum(local[m][0] for m in ("dense", "sparse", "hybrid")) * 2 / 1000
            local_rate = {"per_point_s": local["write_s"] / size, "size": size, "query_s": query_s}
        report(size, edge, local, note)
        if size == 100_000:
            hybrid = edge["hybrid"][0]
            bare = size / max(edge["write_s"] - edge["index_s"], 1e-9)
            print(
                f"  targets at 100k: hybrid p50 {hybrid:.1f} ms (<= 10: "
                f"{'met' if hybrid <= 10 else 'MISSED'}); reopen {edge['reopen_s']:.2f} s (<= 2: "
                f"{'met' if edge['reopen_s'] <= 2 else 'MISSED'}); writes {bare:,.0f}/s "
                f"(>= 3,000: {'met' if bare >= 3000 else 'MISSED'}), the index builds' "
                f"{1000 * edge['index_cpu_s'] / size:.2f} CPU-ms a point besides "
                f"({size / edge['write_s']:,.0f}/s with them)"
                + (
                    f"; vs local mode {local['hybrid'][0] / hybrid:,.0f}x (>= 100: "
                    f"{'met' if local['hybrid'][0] / hybrid >= 100 else 'MISSED'})"
                    if local
                    else ""
                ),
                flush=True,
            )
    if not args.no_recall:
        print(
            f"\nRecall@{TOP_K} of the HNSW index against exact search, on real embeddings: "
            f"{_common.EMBED_MODEL} vectors of Debian package descriptions "
            f"({TRANSLATIONS}), {RECALL_QUERIES} held-out chunks as queries"
        )
        for n in [int(s) for s in args.recall_sizes.split(",")]:
            r = recall(n, folder)
            cells = ", ".join(
                f"{k}: mean {v[0]:.3f} (min {v[1]:.2f}), {v[2]:.1f} ms"
                for k, v in r.items()
                if k.startswith("ef")
            )
            written = (
                f"{r['indexed']:.0%} in the HNSW index, {r['segments']} segments, written in "
                f"{r['write_s']:.0f} s"
            )
            print(f"  {n:,} chunks ({written}): {cells}")
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    main()
