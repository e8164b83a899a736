"""Int8 against fp32: fidelity, speed and loading of ``quantize="int8"``, side by side in one run.

Run ``python benchmarks/int8.py`` (``--help`` for options). Each model runs twice through this
package's own classes: as published (fp32, the default) and with ``quantize="int8"``, from a
folder of links to the model's files (``specific_model_path``), so that the int8 graph the
option keeps beside the model lands in a temporary folder; for the reranker the int8 graph is
made from the [CLS]-pruned graph that ``FastEmbedRerank`` runs by default.

Models: by default the real weights examples/offline_models.py builds offline:
sentence-transformers/all-MiniLM-L6-v2 (dense), SPLADE-tiny (sparse; loaded under fastembed's
SPLADE++ name, see offline_models.provision_splade) and the stand-in cross-encoder (the trained
all-MiniLM-L6-v2 body with an untrained one-logit head). ``--embed-model``, ``--sparse-model``
and ``--rerank-model`` take any fastembed model name instead (fetched into ``--cache-dir``
where a model hub is reachable). The stand-in's head is untrained, so its scores show how far
int8 moves a score, not whether a ranking stays right: a trained reranker's fidelity must be
measured with this same script, ``--rerank-model Xenova/ms-marco-MiniLM-L-6-v2`` for instance,
on a machine that has it. A model fastembed ships quantized already is reported and skipped.

Labelled set: docstrings of Python's standard library (they ship with the interpreter; the
set depends on the Python version only, printed). For each public module, class, function or
method in a fixed list of modules whose docstring has a summary line (4 to 30 words) and a
body (25 to 400 words), the summary is a query and the body its one relevant document;
duplicates are dropped. The documents of all queries are the corpus.

Fidelity, int8 against fp32:

- dense: cosine of each document's and each query's vector; MRR@10 and Recall@10 of both.
  Batch dependence: int8 quantizes each activation with the range of the whole batch, so a
  text's vector depends a little on the texts batched with it; the cosine between a
  document's vector embedded alone and in the corpus run says how much (fp32 too, as a check);
- sparse: cosine of the sparse vectors, the share of each document's ten heaviest terms that
  stay among its ten heaviest, MRR@10 and Recall@10;
- reranker: each of ``--rerank-queries`` queries with 20 candidates (its document and 19
  others, seeded): |int8 - fp32| relative to the spread (standard deviation) of that query's
  fp32 scores, Kendall's tau, the overlap of the top 5, the top-1 agreement, the MRR@10 of the
  relevant document, and the cosine of the [CLS] state the head reads (the trained body's
  fidelity, before the head), from the two graphs run directly on the same batches.

Speed: the same seeded texts as rerank_throughput.py and ingest.py (one query against 100
"uniform" 60-word or "mixed" 10-to-400-word texts; chunks of 100 to 200 words or of 10 to 400),
fp32 and int8 taking turns over ``--repeats`` rounds after a warm-up. Two clocks: wall time at
the default threads (what a user gets; on a shared machine it moves with the load), and the
process's CPU time with one onnxruntime thread (the arithmetic each version does, steadier
under load). fastembed's own ``TextCrossEncoder.rerank`` is timed too (wall clock).

Loads, each in a fresh process with the same imports, ``--load-runs`` times in turns:
fastembed's own construction of the fp32 model; ``warm_up()`` with ``quantize="int8"`` and no
int8 graph kept (the first load: it quantizes and keeps the graph); and with the int8 graph
kept (every later load). Time is the call alone, wall-clock and CPU; peak RSS is the process's
(Linux's VmHWM, reset after the imports), and "load" that peak less the RSS before the call.
Medians.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import inspect
import json
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import _common  # first: sets HF_HUB_OFFLINE and puts examples/ on sys.path
import numpy as np
import onnx
import onnxruntime as ort
from fastembed.rerank.cross_encoder import TextCrossEncoder
from llama_index.core.schema import NodeWithScore, TextNode

import offline_models
from llama_index_fastembed_rerank import (
    FastEmbedEmbedding,
    FastEmbedRerank,
    FastEmbedSparseEmbedding,
    _fastembed,
)
from llama_index_fastembed_rerank.batching import length_batches
from llama_index_fastembed_rerank.cls_pruning import _constants, _reads_cls, prune_to_cls
from llama_index_fastembed_rerank.kept_graph import kept_path
from llama_index_fastembed_rerank.quantization import Int8, full_range_int8, is_quantized

SEED = _common.SEED
CANDIDATES = 20
BATCH_ALONE = 64  # documents embedded alone too, for batch dependence
MODULES = """abc argparse ast asyncio.base_events asyncio.events asyncio.futures asyncio.locks
asyncio.queues asyncio.streams asyncio.subprocess asyncio.tasks base64 bdb binascii bisect bz2
calendar cmd code codecs collections concurrent.futures configparser contextlib copy csv
dataclasses datetime difflib dis doctest email.message email.parser email.utils enum filecmp
fileinput fnmatch fractions ftplib functools getopt getpass gettext glob graphlib gzip hashlib
heapq hmac html html.parser http.client http.cookies http.server imaplib importlib
importlib.metadata importlib.resources inspect io ipaddress itertools json json.decoder
json.encoder keyword linecache locale logging logging.handlers lzma mailbox mimetypes
multiprocessing.connection multiprocessing.pool multiprocessing.process netrc numbers operator
optparse os os.path pathlib pdb pickle pickletools pkgutil platform plistlib poplib posixpath
pprint profile pstats queue quopri random re reprlib rlcompleter runpy sched secrets selectors
shelve shlex shutil signal site smtplib socket socketserver sqlite3 ssl stat statistics string
struct subprocess symtable sysconfig tabnanny tarfile tempfile textwrap threading timeit token
tokenize trace traceback tracemalloc types typing unittest.case unittest.mock urllib.parse
urllib.request uuid warnings wave weakref xml.dom.minidom xml.etree.ElementTree xml.sax
xmlrpc.client zipapp zipfile zoneinfo""".split()  # noqa: SIM905 - a list literal: 150 lines

Clock = Callable[[], float]
CLOCKS: dict[str, tuple[Clock, int | None]] = {  # name: (clock, onnxruntime threads)
    "wall": (time.perf_counter, None),
    "cpu, 1 thread": (time.process_time, 1),
}


# --- the labelled set --------------------------------------------------------------------


def docstring_pairs(min_words: int = 25, max_words: int = 400) -> list[tuple[str, str, str]]:
    """Return (qualified name, summary line, body) of the standard library's docstrings."""
    seen_summaries: set[str] = set()
    seen_bodies: set[str] = set()
    pairs = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in MODULES:
            try:
                module = importlib.import_module(name)
            except ImportError:  # a module this build lacks (ssl, sqlite3...)
                continue
            members: list[tuple[str, object]] = [(name, module)]
            for attr, obj in sorted(vars(module).items()):
                if attr.startswith("_") or getattr(obj, "__module__", None) != module.__name__:
                    continue
                members.append((f"{name}.{attr}", obj))
                if inspect.isclass(obj):
                    members += [
                        (f"{name}.{attr}.{m}", f)
                        for m, f in sorted(vars(obj).items())
                        if not m.startswith("_") and callable(f)
                    ]
            for qualified, obj in members:
                doc = inspect.getdoc(obj)
                parts = (doc or "").strip().split("\n\n", 1)
                if len(parts) < 2:
                    continue
                summary, body = (" ".join(p.split()) for p in parts)
                if not 4 <= len(summary.split()) <= 30 or not (
                    min_words <= len(body.split()) <= max_words
                ):
                    continue
                if summary in seen_summaries or body in seen_bodies:
                    continue
                seen_summaries.add(summary)
                seen_bodies.add(body)
                pairs.append((qualified, summary, body))
    return pairs


def retrieval(scores: np.ndarray) -> tuple[float, float]:
    """Return MRR@10 and Recall@10 (in points) where query i's relevant document is i."""
    right = scores[np.arange(len(scores)), np.arange(len(scores))][:, None]
    ranks = (scores > right).sum(axis=1)  # 0 is first
    mrr = float(np.mean(np.where(ranks < 10, 1 / (ranks + 1), 0.0)))
    return 100 * mrr, 100 * float(np.mean(ranks < 10))


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def kendall_tau(a: np.ndarray, b: np.ndarray) -> float:
    i, j = np.triu_indices(len(a), 1)
    agree = np.sign(a[i] - a[j]) * np.sign(b[i] - b[j])
    return float(agree.sum() / len(i))


# --- int8 copies -------------------------------------------------------------------------


def model_graph(engine: object, name: str) -> tuple[Path, str]:
    """Return the folder and the model file (relative) fastembed loads ``engine`` from."""
    files = _fastembed.model_files(engine)
    if files is None:
        msg = f"{name}: fastembed does not say where its ONNX file is"
        raise SystemExit(msg)
    model_file = engine.model.model_description.model_file  # type: ignore[attr-defined]
    return Path(str(files[0])[: -len(model_file)]), model_file


def linked_folder(source: Path, dest: Path) -> Path:
    """A folder of links to ``source``'s files: the int8 graph is kept there, not in the cache."""
    for path in source.rglob("*"):
        if path.is_file() and not path.name.startswith(".") and ".int8-" not in path.name:
            link = dest / path.relative_to(source)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path.resolve())
    return dest


LOADS = ("fastembed", "int8, first load", "int8, kept graph")
CLASSES: dict[str, tuple[str, str]] = {  # kind: (our class, fastembed's)
    "dense": ("FastEmbedEmbedding", "TextEmbedding"),
    "sparse": ("FastEmbedSparseEmbedding", "SparseTextEmbedding"),
    "rerank": ("FastEmbedRerank", "TextCrossEncoder"),
}


def load_child(kind: str, scenario: str, name: str, folder: str) -> dict[str, float]:
    """Load the model once as ``scenario`` says; return seconds, CPU, peak and baseline (KiB)."""
    import fastembed
    import psutil
    from fastembed.rerank.cross_encoder import TextCrossEncoder

    import llama_index_fastembed_rerank as package

    offline_models.register_standin()
    ours, theirs = CLASSES[kind]
    engine = TextCrossEncoder if theirs == "TextCrossEncoder" else getattr(fastembed, theirs)
    our_class = getattr(package, ours)  # imported before the clock starts, in every scenario
    # The peak from now: a process started from a big one inherits its high-water mark.
    Path("/proc/self/clear_refs").write_text("5")
    baseline = float(psutil.Process().memory_info().rss) / 1024
    start, cpu_start = time.perf_counter(), time.process_time()
    if scenario == "fastembed":
        engine(name, specific_model_path=folder)
    else:
        our_class(name, specific_model_path=folder, quantize="int8").warm_up()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    status = Path("/proc/self/status").read_text().split("VmHWM:")[1]
    peak = float(status.split()[0])  # KiB
    return {"seconds": seconds, "cpu": cpu, "peak": peak, "baseline": baseline}


def print_loads(kind: str, name: str, folder: Path, kept: Path, runs: int) -> None:
    """Time the three loads in fresh processes, in turns; print medians and ratios."""
    results: dict[str, list[dict[str, float]]] = {s: [] for s in LOADS}
    for _ in range(runs):
        for scenario in LOADS:
            if scenario == "int8, first load":
                kept.unlink(missing_ok=True)
            command = [sys.executable, __file__, "--load-child", kind, scenario, name, str(folder)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0:
                msg = f"load {scenario!r} of {name} failed:\n{done.stderr}"
                raise SystemExit(msg)
            results[scenario].append(json.loads(done.stdout.strip().splitlines()[-1]))
    median = {
        s: {k: statistics.median(r[k] for r in results[s]) for k in ("seconds", "cpu", "peak")}
        | {"load": statistics.median(r["peak"] - r["baseline"] for r in results[s])}
        for s in LOADS
    }
    fe = median["fastembed"]
    print(f"  Loads, each in a fresh process, median of {runs} (MiB):")
    for scenario in LOADS:
        m = median[scenario]
        print(
            f"  {scenario:<18} {m['seconds']:6.3f} s {m['seconds'] / fe['seconds']:5.2f}x  "
            f"CPU {m['cpu']:6.3f} s {m['cpu'] / fe['cpu']:5.2f}x  peak RSS "
            f"{m['peak'] / 1024:5.0f} {m['peak'] / fe['peak']:5.2f}x  load "
            f"{m['load'] / 1024:5.0f} {m['load'] / fe['load']:5.2f}x"
        )
    spread = {s: [round(r["seconds"], 3) for r in results[s]] for s in LOADS}
    print(f"  seconds of every run: {spread}")


def made(model: Any, published: Path, rewrite: Int8) -> Path:
    """Load ``model`` (its int8 graph made now and kept); print the time; return the kept file."""
    start = time.perf_counter()
    model.warm_up()
    kept = kept_path(published, rewrite)
    if not kept.is_file():
        msg = f"{published}: no int8 graph was kept (see the log above)"
        raise SystemExit(msg)
    print(f"  first load with quantize='int8': {time.perf_counter() - start:.2f} s ({kept.name})")
    return kept


# --- speed -------------------------------------------------------------------------------


def time_turns(
    runners: dict[str, Callable[[], object]], clock: Clock, repeats: int
) -> dict[str, list[float]]:
    """Run each runner once to warm up, then ``repeats`` rounds in turns; return seconds."""
    for run in runners.values():
        run()
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    names = list(runners)
    for round_ in range(repeats):
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            start = clock()
            runners[name]()
            seconds[name].append(clock() - start)
    return seconds


def print_speed(case: str, count: int, unit: str, seconds: dict[str, list[float]]) -> None:
    rates = {name: count / statistics.median(s) for name, s in seconds.items()}
    per_round = [f / i for f, i in zip(seconds["fp32"], seconds["int8"], strict=True)]
    extra = "".join(
        f"  {name} {rate:.1f} (int8 {rates['int8'] / rate:.2f}x)"
        for name, rate in rates.items()
        if name not in ("fp32", "int8")
    )
    print(
        f"  {case:<30}{unit} fp32 {rates['fp32']:7.1f}  int8 {rates['int8']:7.1f}  "
        f"int8/fp32 {rates['int8'] / rates['fp32']:.2f}x (rounds "
        f"{', '.join(f'{r:.2f}' for r in per_round)}){extra}",
        flush=True,
    )


# --- the three kinds of model ------------------------------------------------------------


class Pair(NamedTuple):
    """A model at fp32 and its int8 copy, kept on links to the fp32 model's files."""

    fp32: Any
    int8: Any
    int8_dir: Path
    kept: Path
    source: Path
    model_file: str


def fp32_and_int8(
    title: str, model_name: str, make: Callable[..., Any], rewrite: Int8, folder: Path
) -> Pair | None:
    """Build both; None (and say so) for a model fastembed ships quantized already."""
    fp32 = make()
    source, model_file = model_graph(fp32._model(), model_name)
    print(f"\n== {title}: {model_name} ({source / model_file})")
    if is_quantized(source / model_file):
        print("  quantized already (fastembed ships it so): skipped")
        return None
    int8_dir = linked_folder(source, folder)
    int8 = make(specific_model_path=str(int8_dir), quantize="int8")
    kept = made(int8, int8_dir / model_file, rewrite)
    return Pair(fp32, int8, int8_dir, kept, source, model_file)


def dense_section(args: argparse.Namespace, pairs: list[tuple[str, str, str]], tmp: Path) -> None:
    options = embed_options(args, args.embed_model)
    pair = fp32_and_int8(
        "Dense",
        args.embed_model,
        functools.partial(FastEmbedEmbedding, model_name=args.embed_model, **options),
        Int8(),
        tmp / "dense",
    )
    if pair is None:
        return
    fp32, int8, int8_dir, kept = pair.fp32, pair.int8, pair.int8_dir, pair.kept
    queries = [s for _, s, _ in pairs]
    documents = [b for _, _, b in pairs]
    vectors = {}
    for name, model in (("fp32", fp32), ("int8", int8)):
        docs = np.array(model.get_text_embedding_batch(documents), np.float32)
        qs = np.array([model.get_query_embedding(q) for q in queries], np.float32)
        alone = np.array([model.get_text_embedding(d) for d in documents[:BATCH_ALONE]], np.float32)
        vectors[name] = (docs, qs, alone)
    doc_cos = cosine(vectors["int8"][0], vectors["fp32"][0])
    query_cos = cosine(vectors["int8"][1], vectors["fp32"][1])
    print(
        f"  cosine int8 to fp32: documents mean {doc_cos.mean():.4f}, min {doc_cos.min():.4f}; "
        f"queries mean {query_cos.mean():.4f}, min {query_cos.min():.4f}"
    )
    print_retrieval({n: v[1] @ v[0].T for n, v in vectors.items()})
    for name, (docs, _, alone) in vectors.items():
        same = cosine(alone, docs[:BATCH_ALONE])
        print(
            f"  {name}: a document embedded alone against in the corpus run: cosine mean "
            f"{same.mean():.6f}, min {same.min():.6f} ({BATCH_ALONE} documents)"
        )
    if args.load_runs:
        print_loads("dense", args.embed_model, int8_dir, kept, args.load_runs)
    if args.no_speed:
        return
    print("  Speed, chunks/s:")
    for clock_name, (clock, threads) in CLOCKS.items():
        models = {
            "fp32": FastEmbedEmbedding(model_name=args.embed_model, threads=threads, **options),
            "int8": int8.model_copy(update={"threads": threads}),
        }
        for case, (low, high) in (("100-200 words", (100, 200)), ("mixed 10-400", (10, 400))):
            chunks = _common.make_chunks(args.chunks, low, high)
            runners = {n: _bind(m.get_text_embedding_batch, chunks) for n, m in models.items()}
            seconds = time_turns(runners, clock, args.repeats)
            print_speed(f"{case}, {clock_name}", len(chunks), "chunks/s", seconds)


def sparse_section(args: argparse.Namespace, pairs: list[tuple[str, str, str]], tmp: Path) -> None:
    options = embed_options(args, args.sparse_model)
    pair = fp32_and_int8(
        "Sparse",
        args.sparse_model,
        functools.partial(FastEmbedSparseEmbedding, model_name=args.sparse_model, **options),
        Int8(),
        tmp / "sparse",
    )
    if pair is None:
        return
    fp32, int8, int8_dir, kept = pair.fp32, pair.int8, pair.int8_dir, pair.kept
    queries = [s for _, s, _ in pairs]
    documents = [b for _, _, b in pairs]
    found = {}
    for name, model in (("fp32", fp32), ("int8", int8)):
        docs = model.get_text_embedding_batch(documents)
        found[name] = (docs, [model.get_query_embedding(q) for q in queries])
    size = 1 + max(max(v, default=0) for lists in found.values() for vs in lists for v in vs)
    vectors = {n: (dense_of(d, size), dense_of(q, size)) for n, (d, q) in found.items()}
    doc_cos = cosine(vectors["int8"][0], vectors["fp32"][0])
    top = [
        len(set(np.argsort(-a)[:10]) & set(np.argsort(-b)[:10])) / 10
        for a, b in zip(vectors["int8"][0], vectors["fp32"][0], strict=True)
    ]
    print(
        f"  cosine int8 to fp32: documents mean {doc_cos.mean():.4f}, min {doc_cos.min():.4f}; "
        f"ten heaviest terms kept: mean {np.mean(top):.3f}, min {np.min(top):.1f}"
    )
    print_retrieval({n: v[1] @ v[0].T for n, v in vectors.items()})
    if args.load_runs:
        print_loads("sparse", args.sparse_model, int8_dir, kept, args.load_runs)
    if args.no_speed:
        return
    print("  Speed, chunks/s:")
    for clock_name, (clock, threads) in CLOCKS.items():
        models = {
            "fp32": FastEmbedSparseEmbedding(
                model_name=args.sparse_model, threads=threads, **options
            ),
            "int8": int8.model_copy(update={"threads": threads}),
        }
        chunks = _common.make_chunks(args.chunks, 100, 200)
        runners = {n: _bind(m.get_text_embedding_batch, chunks) for n, m in models.items()}
        seconds = time_turns(runners, clock, args.repeats)
        print_speed(f"100-200 words, {clock_name}", len(chunks), "chunks/s", seconds)


def rerank_section(args: argparse.Namespace, pairs: list[tuple[str, str, str]], tmp: Path) -> None:
    options = rerank_options(args)
    pair = fp32_and_int8(
        "Reranker",
        args.rerank_model,
        functools.partial(FastEmbedRerank, model=args.rerank_model, top_n=None, **options),
        Int8(after_cls_pruning=True),
        tmp / "rerank",
    )
    if pair is None:
        return
    fp32, int8, int8_dir, kept = pair.fp32, pair.int8, pair.int8_dir, pair.kept
    encoder, source, model_file = fp32._model(), pair.source, pair.model_file
    pruned = onnx.load(str(source / model_file))
    pruned_ops = prune_to_cls(pruned)
    print(
        f"  int8 made from the [CLS]-pruned graph ({pruned_ops} ops on [CLS] only)"
        if pruned_ops
        else "  no [CLS] read to prune to: int8 made from the published graph"
    )
    int8_graph = onnx.load(str(kept))
    rng = random.Random(f"{SEED}-rerank")
    chosen = rng.sample(range(len(pairs)), min(args.rerank_queries, len(pairs)))
    cases = []
    for q in chosen:
        others = rng.sample([i for i in range(len(pairs)) if i != q], CANDIDATES - 1)
        cases.append((pairs[q][1], [pairs[i][2] for i in [q, *others]]))  # relevant first
    scores = {
        name: np.array([score(model, query, docs) for query, docs in cases])
        for name, model in (("fp32", fp32), ("int8", int8))
    }
    want, got = scores["fp32"], scores["int8"]
    relative = np.abs(got - want) / want.std(axis=1, keepdims=True)
    taus = [kendall_tau(a, b) for a, b in zip(got, want, strict=True)]
    top5 = [
        len(set(np.argsort(-a)[:5]) & set(np.argsort(-b)[:5])) / 5
        for a, b in zip(got, want, strict=True)
    ]
    top1 = np.mean(np.argmax(got, axis=1) == np.argmax(want, axis=1))
    print(
        f"  {len(cases)} queries x {CANDIDATES} candidates; |int8 - fp32| / spread of the "
        f"query's fp32 scores: mean {relative.mean():.3f}, p95 {np.percentile(relative, 95):.3f}, "
        f"max {relative.max():.3f}"
    )
    print(
        f"  rank agreement: Kendall tau mean {np.mean(taus):.3f} (min {np.min(taus):.3f}), top-5 "
        f"overlap {np.mean(top5):.3f}, same top 1 {top1:.3f}"
    )
    mrr = {name: reranked_mrr(s) for name, s in scores.items()}
    print(
        f"  MRR@10 of the relevant candidate: fp32 {mrr['fp32']:.2f}, int8 {mrr['int8']:.2f} "
        f"({mrr['int8'] - mrr['fp32']:+.2f})"
        + ("  <- untrained head: not a relevance figure" if args.standin else "")
    )
    states = cls_states(encoder, pruned, int8_graph, cases)
    if states is None:
        print("  [CLS] state: the graph has no [CLS] read to compare at")
    else:
        similarity = cosine(*states)
        print(
            f"  [CLS] state the head reads, int8 to fp32: cosine mean {similarity.mean():.4f}, "
            f"min {similarity.min():.4f}"
        )
    alone = np.array([[score(int8, query, [d])[0] for d in docs] for query, docs in cases[:5]])
    drift = np.abs(alone - got[:5]) / want[:5].std(axis=1, keepdims=True)
    print(
        f"  int8, a pair scored alone against in its query's run: |difference| / spread max "
        f"{drift.max():.3f} (5 queries)"
    )
    if args.load_runs:
        print_loads("rerank", args.rerank_model, int8_dir, kept, args.load_runs)
    if args.no_speed:
        return
    print("  Speed, pairs/s (one query, 100 texts; fastembed: TextCrossEncoder.rerank):")
    from rerank_throughput import QUERY, make_texts

    fastembed_encoder = TextCrossEncoder(args.rerank_model, **engine_only(options))
    for clock_name, (clock, threads) in CLOCKS.items():
        models: dict[str, Any] = {
            "fp32": fp32.model_copy(update={"threads": threads}),
            "int8": int8.model_copy(update={"threads": threads}),
        }
        for kind in ("uniform", "mixed"):
            texts = make_texts(kind, 100)
            runners = {n: _bind(score, m, QUERY, texts) for n, m in models.items()}
            if threads is None:
                runners["fastembed"] = _bind(_fastembed_scores, fastembed_encoder, QUERY, texts)
            seconds = time_turns(runners, clock, args.repeats)
            print_speed(f"{kind}-100, {clock_name}", len(texts), "pairs/s", seconds)


# --- helpers -----------------------------------------------------------------------------


def _bind(function: Callable[..., object], *args: object) -> Callable[[], object]:
    return lambda: function(*args)


def _fastembed_scores(encoder: TextCrossEncoder, query: str, texts: list[str]) -> list[float]:
    return [float(s) for s in encoder.rerank(query, texts)]


def score(reranker: FastEmbedRerank, query: str, documents: list[str]) -> list[float]:
    nodes = [NodeWithScore(node=TextNode(text=d, id_=str(i))) for i, d in enumerate(documents)]
    ranked = reranker.postprocess_nodes(nodes, query_str=query)
    by_id = {n.node.node_id: float(n.score) for n in ranked}  # type: ignore[arg-type]
    return [by_id[str(i)] for i in range(len(documents))]


def reranked_mrr(scores: np.ndarray) -> float:
    ranks = (scores > scores[:, :1]).sum(axis=1)  # the relevant candidate is column 0
    return 100 * float(np.mean(np.where(ranks < 10, 1 / (ranks + 1), 0.0)))


def cls_states(
    encoder: TextCrossEncoder,
    fp32: onnx.ModelProto,
    int8: onnx.ModelProto,
    cases: list[tuple[str, list[str]]],
) -> tuple[np.ndarray, np.ndarray] | None:
    """Return the [CLS] state both graphs compute for every pair, or None where none is read."""
    sessions = []
    for graph in (fp32, int8):
        copy = onnx.ModelProto()
        copy.CopyFrom(graph)
        constants = _constants(copy.graph)
        # The last read is the head's (a [CLS]-pruned graph also slices its last layer's inputs).
        reads = [n for n in copy.graph.node if _reads_cls(n, constants)]
        if not reads:
            return None
        state = onnx.helper.make_tensor_value_info(
            reads[-1].output[0], onnx.TensorProto.FLOAT, None
        )
        copy.graph.output.append(state)
        session = ort.InferenceSession(copy.SerializeToString(), providers=["CPUExecutionProvider"])
        sessions.append(session)
    tokenizer = _fastembed.tokenizer(encoder)
    states: list[list[np.ndarray]] = [[], []]
    for query, documents in cases:
        pairs = [(query, d) for d in documents]
        encodings = tokenizer.encode_batch(pairs)  # type: ignore[union-attr]
        lengths = [sum(e.attention_mask) for e in encodings]
        rows_out: list[list[np.ndarray | None]] = [[None] * len(pairs), [None] * len(pairs)]
        for rows in length_batches(lengths, 64, 512):  # as FastEmbedRerank batches them
            feed = _fastembed.onnx_inputs(encoder, [pairs[r] for r in rows])
            width = max(lengths[r] for r in rows)
            feed = {k: np.ascontiguousarray(v[:, :width]) for k, v in feed.items()}
            for k, session in enumerate(sessions):
                state = session.run(None, feed)[-1].reshape(len(rows), -1)
                for j, r in enumerate(rows):
                    rows_out[k][r] = state[j]
        for k in range(2):
            states[k] += rows_out[k]  # type: ignore[arg-type]
    return np.stack(states[0]), np.stack(states[1])


def dense_of(vectors: list[dict[int, float]], size: int) -> np.ndarray:
    out = np.zeros((len(vectors), size), np.float32)
    for row, vector in enumerate(vectors):
        out[row, list(vector)] = list(vector.values())
    return out


def print_retrieval(scores: dict[str, np.ndarray]) -> None:
    figures = {name: retrieval(s) for name, s in scores.items()}
    (mrr32, r32), (mrr8, r8) = figures["fp32"], figures["int8"]
    print(
        f"  retrieval ({len(scores['fp32'])} queries): MRR@10 fp32 {mrr32:.2f}, int8 {mrr8:.2f} "
        f"({mrr8 - mrr32:+.2f}); Recall@10 fp32 {r32:.2f}, int8 {r8:.2f} ({r8 - r32:+.2f})"
    )


def embed_options(args: argparse.Namespace, name: str) -> dict[str, Any]:
    if name == offline_models.SPLADE_MODEL and args.standin:
        return {"specific_model_path": str(offline_models.provision_splade())}
    return {"cache_dir": args.cache_dir, "local_files_only": args.standin}


def rerank_options(args: argparse.Namespace) -> dict[str, Any]:
    return {"cache_dir": args.cache_dir, "local_files_only": args.standin}


def engine_only(options: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in options.items() if v is not None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--embed-model", default=offline_models.EMBED_MODEL)
    parser.add_argument("--sparse-model", default=offline_models.SPLADE_MODEL)
    parser.add_argument("--rerank-model", default=offline_models.STANDIN_RERANK_MODEL)
    parser.add_argument("--cache-dir", default=None, help="fastembed cache for other models")
    parser.add_argument("--only", nargs="+", choices=["dense", "sparse", "rerank"])
    parser.add_argument("--queries", type=int, default=0, help="labelled pairs (0: all)")
    parser.add_argument("--rerank-queries", type=int, default=100)
    parser.add_argument("--chunks", type=int, default=200, help="texts per speed case")
    parser.add_argument("--repeats", type=int, default=3, help="timed rounds per speed case")
    parser.add_argument("--no-speed", action="store_true")
    parser.add_argument("--load-runs", type=int, default=5, help="fresh processes per load")
    parser.add_argument("--load-child", nargs=4, help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.load_child:
        print(json.dumps(load_child(*args.load_child)))
        return
    warnings.filterwarnings("ignore", message=r".*query-document pairs were longer")
    offline = args.cache_dir is None
    args.standin = offline
    if offline:
        args.cache_dir = _common.provision()
    pairs = docstring_pairs()
    if args.queries:
        pairs = random.Random(f"{SEED}-pairs").sample(pairs, min(args.queries, len(pairs)))

    for line in _common.machine_lines(("onnx",)):
        print(line)
    words = [len(b.split()) for _, _, b in pairs]
    print(
        f"Labelled set: {len(pairs)} docstrings of Python {sys.version.split()[0]}'s standard "
        f"library (summary line -> body; bodies {min(words)} to {max(words)} words, median "
        f"{statistics.median(words):.0f})"
    )
    print(
        f"int8 weights: {8 if full_range_int8() else 7} bits (full_range_int8(): this CPU "
        f"{'has' if full_range_int8() else 'has no'} VNNI)"
    )
    print(
        f"Speed: {args.repeats} rounds after a warm-up, fp32 and int8 in turns; clocks: "
        f"{', '.join(CLOCKS)} (threads: default, 1)"
    )
    sections = {"dense": dense_section, "sparse": sparse_section, "rerank": rerank_section}
    with tempfile.TemporaryDirectory(prefix="int8-bench-") as tmp:
        for name, section in sections.items():
            if args.only is None or name in args.only:
                section(args, pairs, Path(tmp))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss >> 10
    print(f"\nPeak RSS of this process: {peak} MiB")


if __name__ == "__main__":
    main()
