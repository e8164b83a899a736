"""Local ONNX reranking and embeddings for LlamaIndex, with fastembed: no PyTorch, no API key."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    __version__: str
    from .edge import QdrantEdgeVectorStore, push_to_qdrant
    from .embedding import FastEmbedEmbedding
    from .fusion import distribution_based_score_fusion, reciprocal_rank_fusion
    from .qdrant import qdrant_hybrid_store
    from .rerank import FastEmbedRerank
    from .sparse import FastEmbedSparseEmbedding

# The module of each public name. A name's module is imported on first use, so that importing
# the package (the command line's --help, say) does not load LlamaIndex, fastembed or onnx.
_EXPORTS = {
    "FastEmbedEmbedding": "embedding",
    "FastEmbedRerank": "rerank",
    "FastEmbedSparseEmbedding": "sparse",
    "QdrantEdgeVectorStore": "edge",
    "distribution_based_score_fusion": "fusion",
    "push_to_qdrant": "edge",
    "qdrant_hybrid_store": "qdrant",
    "reciprocal_rank_fusion": "fusion",
}

__all__ = [
    "FastEmbedEmbedding",
    "FastEmbedRerank",
    "FastEmbedSparseEmbedding",
    "QdrantEdgeVectorStore",
    "__version__",
    "distribution_based_score_fusion",
    "push_to_qdrant",
    "qdrant_hybrid_store",
    "reciprocal_rank_fusion",
]


def __getattr__(name: str) -> Any:  # noqa: ANN401 - whichever public object is asked for
    if name == "__version__":  # read from the installed metadata, once asked for
        from importlib import metadata

        value: Any = metadata.version("llama-index-fastembed-rerank")
        globals()[name] = value
        return value
    module = _EXPORTS.get(name)
    if module is None:
        msg = f"module {__name__!r} has no attribute {name!r}"
        raise AttributeError(msg)
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
