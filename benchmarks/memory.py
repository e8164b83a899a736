"""Peak memory: ten instances of one model share one loaded model; the other package's do not.

Run ``python benchmarks/memory.py``. Each scenario runs in a fresh process (so peaks do not
mix), which builds its instances, uses each once, and reports its peak resident set size
(``ru_maxrss``), its RSS after imports, and how many distinct fastembed models its instances
hold:

- ``ours x1``: one FastEmbedRerank (the offline stand-in for Xenova/ms-marco-MiniLM-L-6-v2)
  and one FastEmbedEmbedding (sentence-transformers/all-MiniLM-L6-v2);
- ``ours x10``: ten of each, same model and options;
- ``li-fe x1`` and ``li-fe x10``: llama-index-embeddings-fastembed's FastEmbedEmbedding, which
  loads a model in each instance, for reference.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
from typing import Any

import _common  # first: sets HF_HUB_OFFLINE and puts tests/ on sys.path

SCENARIOS = {
    "ours x1": ("ours", 1),
    "ours x10": ("ours", 10),
    "li-fe x1": ("li-fe", 1),
    "li-fe x10": ("li-fe", 10),
}
TEXTS = ["Paris is the capital of France.", "Cats purr.", "Berlin is in Germany."]
QUERY = "capital of France"


def mib(kib: float) -> float:
    return kib / 1024


def rss_kib() -> float:
    import psutil

    return float(psutil.Process().memory_info().rss) / 1024


def held(instances: list[Any], engine_class: type) -> int:
    """Return how many distinct fastembed models of ``engine_class`` the instances hold."""
    models = [instance._engine.loaded[1] for instance in instances]
    if not all(isinstance(model, engine_class) for model in models):
        msg = f"an instance holds something other than a {engine_class.__name__}"
        raise SystemExit(msg)
    return len({id(model) for model in models})


def child(kind: str, count: int, cache: str) -> dict[str, Any]:
    """Build ``count`` instances of ``kind``, use each once; return what was measured."""
    from llama_index.core.schema import NodeWithScore, TextNode

    import offline_models

    offline_models.register_standin()
    offline: dict[str, Any] = {"cache_dir": cache, "local_files_only": True}
    if kind == "ours":
        from fastembed import TextEmbedding
        from fastembed.rerank.cross_encoder import TextCrossEncoder

        from llama_index_fastembed_rerank import FastEmbedEmbedding, FastEmbedRerank

        baseline = rss_kib()
        rerankers = [
            FastEmbedRerank(offline_models.STANDIN_RERANK_MODEL, top_n=2, **offline)
            for _ in range(count)
        ]
        embedders = [FastEmbedEmbedding(_common.EMBED_MODEL, **offline) for _ in range(count)]
        for reranker in rerankers:
            nodes = [NodeWithScore(node=TextNode(text=t)) for t in TEXTS]
            reranker.postprocess_nodes(nodes, query_str=QUERY)
        for embedder in embedders:
            embedder.get_text_embedding_batch(TEXTS)
            embedder.get_query_embedding(QUERY)
        engines = {
            "rerank models": held(rerankers, TextCrossEncoder),
            "embedding models": held(embedders, TextEmbedding),
        }
    else:
        from llama_index.embeddings.fastembed import FastEmbedEmbedding as PackageEmbedding

        baseline = rss_kib()
        package = [
            PackageEmbedding(model_name=_common.EMBED_MODEL, **offline) for _ in range(count)
        ]
        for model in package:
            model.get_text_embedding_batch(TEXTS)
            model.get_query_embedding(QUERY)
        engines = {"embedding models": len({id(e._model) for e in package})}
    peak = float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)  # KiB on Linux
    return {"baseline": baseline, "peak": peak, "engines": engines}


def run_scenario(name: str, cache: str) -> dict[str, Any]:
    kind, count = SCENARIOS[name]
    command = [sys.executable, __file__, "--child", kind, str(count), cache]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        msg = f"scenario {name!r} failed:\n{done.stderr}"
        raise SystemExit(msg)
    return json.loads(done.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--child", nargs=3, metavar=("KIND", "COUNT", "CACHE"), help="internal")
    args = parser.parse_args()
    if args.child:
        kind, count, cache = args.child
        print(json.dumps(child(kind, int(count), cache)))
        return

    cache = _common.provision()
    for line in _common.machine_lines():
        print(line)
    print("Each scenario in a fresh process; every instance used once. MiB.")
    results = {name: run_scenario(name, cache) for name in SCENARIOS}
    print()
    header = (
        f"{'scenario':<11}{'instances':>22}{'peak RSS':>10}{'after imports':>15}"
        f"{'models':>8}  distinct models the instances hold"
    )
    print(header)
    print("-" * len(header))
    for name, result in results.items():
        kind, count = SCENARIOS[name]
        instances = f"{count} rerank + {count} embed" if kind == "ours" else f"{count} embed"
        engines = ", ".join(f"{n} {what}" for what, n in result["engines"].items())
        print(
            f"{name:<11}{instances:>22}{mib(result['peak']):>10.0f}{mib(result['baseline']):>15.0f}"
            f"{mib(result['peak'] - result['baseline']):>8.0f}  {engines}"
        )
    print("models: peak RSS minus RSS after imports, i.e. what loading and running cost")

    def ratio(ten: str, one: str, key: str = "peak") -> float:
        if key == "peak":
            return float(results[ten]["peak"] / results[one]["peak"])
        cost = {n: results[n]["peak"] - results[n]["baseline"] for n in (ten, one)}
        return float(cost[ten] / cost[one])

    print(
        f"\nours x10 / ours x1: peak {ratio('ours x10', 'ours x1'):.2f}x, "
        f"models {ratio('ours x10', 'ours x1', 'cost'):.2f}x"
    )
    print(
        f"li-fe x10 / li-fe x1: peak {ratio('li-fe x10', 'li-fe x1'):.2f}x, "
        f"models {ratio('li-fe x10', 'li-fe x1', 'cost'):.2f}x"
    )
    shared = results["ours x10"]["engines"]
    if any(n != 1 for n in shared.values()):
        msg = f"FAILED: ten instances of one model hold {shared} models, expected 1 each"
        raise SystemExit(msg)


if __name__ == "__main__":
    main()
