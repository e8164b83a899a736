"""Local ONNX reranking and embeddings for LlamaIndex, with fastembed: no PyTorch, no API key."""

import importlib.metadata

from .edge import QdrantEdgeVectorStore, push_to_qdrant
from .embedding import FastEmbedEmbedding
from .fusion import distribution_based_score_fusion, reciprocal_rank_fusion
from .qdrant import qdrant_hybrid_store
from .rerank import FastEmbedRerank
from .sparse import FastEmbedSparseEmbedding

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
__version__ = importlib.metadata.version("llama-index-fastembed-rerank")
