"""Long documents under long_documents="max": pairs of windows per second, against short pairs.

Run ``python benchmarks/long_documents.py`` (``--help`` for options). One query against seeded
documents drawn from the words of examples/data/movies.json, each several of the model's
windows long. ``FastEmbedRerank(long_documents="max")`` cuts each into windows that fit beside
the query and scores them all; the baseline scores the same window texts as documents of
their own, which fit as they are: pairs of the same token lengths, without the cutting. The
rate of both is window pairs per second; each figure is the median of a few timed runs
after a warm-up, the two taking turns. Every document's score must equal the best of its
windows' scores (within 1e-5), else the run fails.

The model is the offline stand-in for Xenova/ms-marco-MiniLM-L-6-v2 (same size and cost,
untrained head), on the defaults otherwise (batch_size=64, max_batch_tokens=512).
"""

from __future__ import annotations

import argparse
import statistics
import time

import _common  # first: sets HF_HUB_OFFLINE and puts tests/ on sys.path
import numpy as np

import offline_models
from llama_index_fastembed_rerank import FastEmbedRerank, _fastembed
from llama_index_fastembed_rerank.long_documents import cut_windows

QUERY = str(_common.movies()["query"])
TOLERANCE = 1e-5
TARGET = 0.9  # window pairs of long documents at least this fast as short pairs alike


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--documents", type=int, default=8)
    parser.add_argument("--words", type=int, nargs=2, default=[1200, 2000], metavar=("MIN", "MAX"))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    cache = _common.provision()
    name = offline_models.STANDIN_RERANK_MODEL
    options = {"cache_dir": cache, "local_files_only": True, "top_n": None}
    longest = FastEmbedRerank(name, long_documents="max", **options)
    short = FastEmbedRerank(name, **options)
    longest.warm_up()
    documents = _common.make_chunks(args.documents, *args.words)
    windows = cut_windows(
        _fastembed.tokenizer(longest._model()), QUERY, documents, longest.max_windows
    )
    if windows is None or windows.capped:
        msg = "the documents must fit in max_windows windows: pass fewer --words"
        raise SystemExit(msg)
    pairs = len(windows.texts)

    for line in _common.machine_lines():
        print(line)
    print(f"Model: {name} (offline stand-in, shape of Xenova/ms-marco-MiniLM-L-6-v2)")
    print(
        f"{args.documents} documents of {args.words[0]} to {args.words[1]} words: {pairs} "
        f"windows of at most {windows.room} tokens beside the query "
        f"(max_windows={longest.max_windows}); median of {args.repeats} runs after a warm-up"
    )

    seconds: dict[str, list[float]] = {"max": [], "short": []}
    short.score(QUERY, windows.texts[:8])  # warm-up of both, on the shapes they will run
    longest.score(QUERY, documents[:2])
    scores: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for key, run in (
            ("max", lambda: longest.score(QUERY, documents)),
            ("short", lambda: short.score(QUERY, windows.texts)),
        ):
            start = time.perf_counter()
            scores[key] = run()
            seconds[key].append(time.perf_counter() - start)
    best = [
        max(s for s, owner in zip(scores["short"], windows.owners, strict=True) if owner == doc)
        for doc in range(len(documents))
    ]
    difference = float(np.max(np.abs(np.subtract(scores["max"], best))))
    rate = {key: pairs / statistics.median(s) for key, s in seconds.items()}
    print()
    header = f"{'case':<44}{'window pairs/s':>15}{'vs short':>10}"
    print(header)
    print("-" * len(header))
    print(f"{'long documents, long_documents=max':<44}{rate['max']:>15.2f}", end="")
    print(f"{rate['max'] / rate['short']:>9.2f}x")
    print(f"{'the windows as short documents':<44}{rate['short']:>15.2f}{1:>9.2f}x")
    ratio = rate["max"] / rate["short"]
    verdict = "met" if ratio >= TARGET else "MISSED"
    print(f"\nmax / short: {ratio:.2f}x (target >= {TARGET}x: {verdict})")
    print(f"max |document score - best window score|: {difference:.1e}")
    print(f"seconds of every run: { {k: [round(x, 2) for x in v] for k, v in seconds.items()} }")
    if difference > TOLERANCE:
        msg = f"FAILED: a document's score differs from its best window's by {difference:.2e}"
        raise SystemExit(msg)


if __name__ == "__main__":
    main()
