"""Loading a reranker: per-request instances, and a cold or warm load against fastembed's.

Run ``python benchmarks/loading.py`` (``--help`` for options). The model is the offline
stand-in for Xenova/ms-marco-MiniLM-L-6-v2 (same size and cost, untrained head), in a
fastembed cache of the benchmark's own (a temporary copy), so the user's cache is untouched.

- Per-request instances: an app that builds a reranker for each request and drops it,
  ten requests of three short texts each, in one process after a warm-up. "kept" is
  FastEmbedRerank as it is (recently used models stay loaded); "released" calls
  ``FastEmbedRerank.release_models()`` after each request, so every request loads the model
  (from the [CLS]-pruned graph kept on disk), as it did when a model was freed with its last
  instance; "held" keeps one more instance alive throughout.
- Loads, each in a fresh process with the same imports: fastembed's
  ``TextCrossEncoder(model)`` construction; ``FastEmbedRerank(model).warm_up()`` cold (no
  pruned graph kept: it is rewritten and written beside the model) and warm (the kept graph
  is loaded); and ``optimize_graph=False`` (the published graph, no rewrite). Time is the
  call alone, wall-clock and the process's CPU time (steadier on a busy machine); peak RSS
  is the process's (``ru_maxrss``) after it, and "load" is that peak less the RSS before
  the call. Medians over the runs; the scenarios take turns.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _common  # first: sets HF_HUB_OFFLINE and puts tests/ on sys.path

import offline_models

SCENARIOS = ("fastembed", "cold", "warm", "unoptimized")
# A warm load against fastembed's construction: at most this much time, and peak memory.
TARGET_SECONDS = 1.15
TARGET_PEAK = 1.1
QUERY = "capital of France"
TEXTS = ["Paris is the capital of France.", "Cats purr.", "Berlin is in Germany."]
REQUESTS = 10


def rss_kib() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 1024


def child(scenario: str, cache: str) -> dict[str, float]:
    """Load the model once as ``scenario`` says; return seconds, peak and baseline (KiB)."""
    from fastembed.rerank.cross_encoder import TextCrossEncoder

    from llama_index_fastembed_rerank import FastEmbedRerank

    offline_models.register_standin()
    name = offline_models.STANDIN_RERANK_MODEL
    options: dict[str, Any] = {"cache_dir": cache, "local_files_only": True}
    baseline = rss_kib()
    start, cpu_start = time.perf_counter(), time.process_time()
    if scenario == "fastembed":
        TextCrossEncoder(name, **options)
    else:
        FastEmbedRerank(name, optimize_graph=scenario != "unoptimized", **options).warm_up()
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu_start
    peak = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
    return {"seconds": seconds, "cpu": cpu, "peak": peak, "baseline": baseline}


def run_child(scenario: str, cache: str) -> dict[str, float]:
    if scenario == "cold":
        for kept in Path(cache).glob("models--*/snapshots/*/onnx/*.cls-pruned-*.onnx"):
            kept.unlink()
    command = [sys.executable, __file__, "--child", scenario, cache]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        msg = f"scenario {scenario!r} failed:\n{done.stderr}"
        raise SystemExit(msg)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def per_request(cache: str) -> dict[str, float]:
    """Return median seconds per request for each way of holding the model."""
    from llama_index.core.schema import NodeWithScore, TextNode

    from llama_index_fastembed_rerank import FastEmbedRerank

    offline_models.register_standin()
    options: dict[str, Any] = {"cache_dir": cache, "local_files_only": True}

    def request() -> None:
        reranker = FastEmbedRerank(offline_models.STANDIN_RERANK_MODEL, top_n=2, **options)
        nodes = [NodeWithScore(node=TextNode(text=t)) for t in TEXTS]
        reranker.postprocess_nodes(nodes, query_str=QUERY)

    def timed(after: Callable[[], None] | None = None) -> float:
        seconds = []
        for _ in range(REQUESTS):
            start = time.perf_counter()
            request()
            seconds.append(time.perf_counter() - start)
            if after is not None:
                after()
            gc.collect()
        return statistics.median(seconds)

    request()  # warm-up: the first load, and the pruned graph written beside the model
    FastEmbedRerank.release_models()
    gc.collect()
    results = {"released": timed(FastEmbedRerank.release_models), "kept": timed()}
    holder = FastEmbedRerank(offline_models.STANDIN_RERANK_MODEL, **options)
    holder.warm_up()
    results["held"] = timed()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=2, metavar=("SCENARIO", "CACHE"), help="internal")
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per scenario")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(*args.child)))
        return

    shared = Path(_common.provision())
    with tempfile.TemporaryDirectory(prefix="lifr-bench-loading-") as tmp:
        root = Path(tmp)
        for build in shared.parent.iterdir():  # every build, linked: provision() reuses them
            if build.is_dir() and build != shared:
                (root / build.name).symlink_to(build)
        cache = str(offline_models.provision(root))
        for line in _common.machine_lines(("psutil",)):
            print(line)
        print(f"Model: {offline_models.STANDIN_RERANK_MODEL} (offline stand-in, shape of ")
        print("Xenova/ms-marco-MiniLM-L-6-v2), in a temporary copy of the offline cache")
        print()

        requests = per_request(cache)
        print(f"Per-request instances: {REQUESTS} requests of {len(TEXTS)} texts, median s")
        print(f"{'models':<40}{'s/request':>10}{'vs kept':>9}")
        labels = {
            "kept": "kept (FastEmbedRerank as it is)",
            "released": "released after each request",
            "held": "held by another instance",
        }
        for key, label in labels.items():
            print(f"{label:<40}{requests[key]:>10.3f}{requests[key] / requests['kept']:>8.1f}x")
        print()

        runs: dict[str, list[dict[str, float]]] = {s: [] for s in SCENARIOS}
        for _ in range(args.runs):
            for scenario in SCENARIOS:
                runs[scenario].append(run_child(scenario, cache))
        print(f"Loads, each in a fresh process: median of {args.runs} runs (MiB for memory)")
        header = (
            f"{'load':<34}{'seconds':>8}{'vs fe':>7}{'CPU s':>7}{'vs fe':>7}{'peak RSS':>10}"
            f"{'vs fe':>7}{'load':>7}{'vs fe':>7}"
        )
        print(header)
        print("-" * len(header))
        labels = {
            "fastembed": "fastembed TextCrossEncoder(model)",
            "cold": "warm_up(), no pruned graph kept",
            "warm": "warm_up(), pruned graph kept",
            "unoptimized": "warm_up(), optimize_graph=False",
        }
        median = {
            s: {k: statistics.median(r[k] for r in runs[s]) for k in ("seconds", "cpu", "peak")}
            | {"load": statistics.median(r["peak"] - r["baseline"] for r in runs[s])}
            for s in SCENARIOS
        }
        fe = median["fastembed"]
        for scenario, label in labels.items():
            m = median[scenario]
            print(
                f"{label:<34}{m['seconds']:>8.3f}{m['seconds'] / fe['seconds']:>6.2f}x"
                f"{m['cpu']:>7.3f}{m['cpu'] / fe['cpu']:>6.2f}x"
                f"{m['peak'] / 1024:>10.0f}{m['peak'] / fe['peak']:>6.2f}x"
                f"{m['load'] / 1024:>7.0f}{m['load'] / fe['load']:>6.2f}x"
            )
        spread = {s: [round(r["seconds"], 3) for r in runs[s]] for s in SCENARIOS}
        print(f"seconds of every run: {spread}")
        warm = median["warm"]
        for what, ratio, target in (
            ("seconds", warm["seconds"] / fe["seconds"], TARGET_SECONDS),
            ("peak RSS", warm["peak"] / fe["peak"], TARGET_PEAK),
        ):
            verdict = "met" if ratio <= target else "MISSED"
            print(f"warm load / fastembed, {what}: {ratio:.2f}x (target <= {target}x: {verdict})")


if __name__ == "__main__":
    main()
