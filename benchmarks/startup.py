"""Start-up: the command line's --help and query, and the package's import, in fresh processes.

Run ``python benchmarks/startup.py`` (``--runs N``). Each figure is the median wall-clock time
of N fresh processes, the kinds taking turns:

- ``--help``: the command's help, which imports no model library (target: 0.3 s);
- ``import``: ``import llama_index_fastembed_rerank``, and importing its classes;
- ``query``: ``llama-index-fastembed-rerank query`` on the tutorial's 20 descriptions in an
  embedded collection (all-MiniLM-L6-v2, the reranker's model cached), retrieving 20 and
  reranking to 5, against the same work done by a short Python script with the library: the
  model loads plus the search (target: the command at most 1.5x the script).

The reranker is the offline stand-in, imported under ``Xenova/ms-marco-MiniLM-L-6-v2`` into a
temporary cache of this benchmark's own (a LOAN of the name: same size and cost, untrained
head); all-MiniLM-L6-v2 is the real model.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common  # first: sets HF_HUB_OFFLINE and puts tests/ on sys.path

import offline_models

HELP_TARGET_S = 0.3
QUERY_TARGET = 1.5
COMMAND = [sys.executable, "-m", "llama_index_fastembed_rerank"]
RERANKER = "Xenova/ms-marco-MiniLM-L-6-v2"

# The work `query` does, as a user would write it with the library.
SCRIPT = """
import sys
from llama_index.core import VectorStoreIndex
from llama_index_fastembed_rerank import (
    FastEmbedEmbedding, FastEmbedRerank, QdrantEdgeVectorStore,
)
folder, query = sys.argv[1], sys.argv[2]
embed = FastEmbedEmbedding("sentence-transformers/all-MiniLM-L6-v2")
reranker = FastEmbedRerank(top_n=5)
embed.warm_up()
reranker.warm_up()
with QdrantEdgeVectorStore(folder) as store:
    index = VectorStoreIndex.from_vector_store(store, embed_model=embed)
    nodes = index.as_retriever(similarity_top_k=20).retrieve(query)
for node in reranker.postprocess_nodes(nodes, query_str=query):
    print(f"{node.score:8.4f}  {node.node.get_content()[:60]}")
"""


def timed(argv: list[str], env: dict[str, str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        msg = f"{argv} failed:\n{done.stderr}"
        raise SystemExit(msg)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    for line in _common.machine_lines(("qdrant-edge-py",)):
        print(line)
    built = Path(_common.provision()).parent
    from llama_index_fastembed_rerank.offline import import_model

    with tempfile.TemporaryDirectory(prefix="startup-") as tmp:
        cache, data = Path(tmp) / "cache", Path(tmp) / "data"
        import_model(built / "all-MiniLM-L6-v2", offline_models.EMBED_MODEL, cache)
        import_model(built / "standin-cross-encoder", RERANKER, cache)
        env = {**os.environ, "FASTEMBED_CACHE_PATH": str(cache), "HF_HUB_OFFLINE": "1"}
        texts = Path(tmp) / "movies"
        texts.mkdir()
        for i, text in enumerate(_common.movies()["descriptions"]):  # type: ignore[arg-type]
            (texts / f"{i:02}.txt").write_text(text)
        root = data / "qdrant"
        subprocess.run(
            [*COMMAND, "ingest", str(texts), "--collection", "movies", "--qdrant-path",
             str(root), "--embed-model", offline_models.EMBED_MODEL],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        query = str(_common.movies()["query"])
        script = Path(tmp) / "query.py"
        script.write_text(SCRIPT)
        kinds = {
            "python -c pass": [sys.executable, "-c", "pass"],
            "--help": [*COMMAND, "--help"],
            "import llama_index_fastembed_rerank": [
                sys.executable, "-c", "import llama_index_fastembed_rerank",
            ],
            "import its classes": [
                sys.executable, "-c",
                "from llama_index_fastembed_rerank import FastEmbedEmbedding, FastEmbedRerank",
            ],
            "query (command)": [
                *COMMAND, "query", query, "--collection", "movies", "--qdrant-path", str(root),
                "--top-k", "20", "--top-n", "5",
            ],
            "query (script)": [sys.executable, str(script), str(root / "movies"), query],
        }  # fmt: skip
        for argv in kinds.values():  # warm the page cache
            timed(argv, env)
        times: dict[str, list[float]] = {name: [] for name in kinds}
        for _ in range(args.runs):
            for name, argv in kinds.items():
                times[name].append(timed(argv, env))
        shutil.rmtree(data, ignore_errors=True)

    median = {name: statistics.median(values) for name, values in times.items()}
    print(f"\nMedians of {args.runs} fresh processes each (seconds):")
    for name, seconds in median.items():
        print(f"  {name:<38}{seconds:7.3f}")
    ratio = median["query (command)"] / median["query (script)"]
    help_ok = median["--help"] <= HELP_TARGET_S
    print(
        f"\n--help: {median['--help']:.3f} s (target <= {HELP_TARGET_S} s: "
        f"{'met' if help_ok else 'MISSED'})"
    )
    print(
        f"query: the command {ratio:.2f}x the script's model loads and search "
        f"(target <= {QUERY_TARGET}x: {'met' if ratio <= QUERY_TARGET else 'MISSED'})"
    )
    print(json.dumps({"medians_s": median, "query_ratio": ratio}))


if __name__ == "__main__":
    main()
