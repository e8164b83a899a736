"""Local ONNX reranking and embeddings for LlamaIndex, with fastembed: no PyTorch, no API key."""

import importlib.metadata

from .embedding import FastEmbedEmbedding
from .rerank import FastEmbedRerank

__all__ = ["FastEmbedEmbedding", "FastEmbedRerank", "__version__"]
__version__ = importlib.metadata.version("llama-index-fastembed-rerank")
