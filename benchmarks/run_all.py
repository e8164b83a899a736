"""Run every benchmark in benchmarks/, one after another, and print their output.

Run ``python benchmarks/run_all.py`` with the interpreter that has the benchmark dependencies;
each benchmark runs at its defaults as a subprocess of that interpreter, with
``HF_HUB_OFFLINE=1`` unless set. ``--only NAME ...`` or ``--skip NAME ...`` choose by file
name without ``.py``; ``--quick`` runs the set that takes minutes, not hours (QUICK), to
compare a change's before and after. Exits non-zero if any benchmark failed.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
# The cheap ones first; any other benchmark found here runs after these, by name.
ORDER = (
    "memory",
    "loading",
    "flops",
    "long_documents",
    "query_latency",
    "ingest",
    "rerank_throughput",
    "storage",  # hours at its default sizes: --only storage runs it alone
)
# Minutes each: the speed and memory of the reranker and the embedders, end to end.
QUICK = ("memory", "loading", "flops", "long_documents", "query_latency", "ingest", "startup")


def benchmarks() -> list[Path]:
    found = {
        p.stem: p for p in HERE.glob("*.py") if not p.name.startswith("_") and p.stem != "run_all"
    }
    names = [n for n in ORDER if n in found] + sorted(set(found) - set(ORDER))
    return [found[n] for n in names]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", nargs="+", default=None, metavar="NAME")
    parser.add_argument("--skip", nargs="+", default=[], metavar="NAME")
    parser.add_argument("--quick", action="store_true", help="only " + ", ".join(QUICK))
    args = parser.parse_args()
    if args.quick:
        args.only = [n for n in QUICK if args.only is None or n in args.only]
    selected = [
        p
        for p in benchmarks()
        if (args.only is None or p.stem in args.only) and p.stem not in args.skip
    ]
    env = {**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1")}
    summary = []
    for path in selected:
        print(f"\n=== {path.relative_to(HERE.parent)} ===", flush=True)
        start = time.perf_counter()
        code = subprocess.run([sys.executable, str(path)], env=env, check=False).returncode
        seconds = time.perf_counter() - start
        summary.append((path.stem, code, seconds))
        print(f"--- {path.stem}: {'ok' if code == 0 else f'FAILED ({code})'}, {seconds:.0f} s")
    print("\n=== summary ===")
    for name, code, seconds in summary:
        print(f"{name:<20}{'ok' if code == 0 else f'FAILED ({code})':<14}{seconds:>7.0f} s")
    if any(code for _, code, _ in summary):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
