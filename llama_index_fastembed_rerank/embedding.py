"""FastEmbedEmbedding: a LlamaIndex embedding model over fastembed's TextEmbedding."""

from __future__ import annotations

from typing import Any

from fastembed import TextEmbedding
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from pydantic import Field

from .default_models import DEFAULT_EMBED_MODEL
from .embedding_base import FastEmbedEmbeddingBase
from .loading import find_model
from .options import MODEL_CONFIG, document_options


@document_options
class FastEmbedEmbedding(FastEmbedEmbeddingBase, BaseEmbedding):
    """Embed queries and documents with a local fastembed model (ONNX, no PyTorch).

    Queries go through fastembed's ``query_embed`` and documents through ``passage_embed``,
    so models that treat the two differently get what they expect. Documents reach this class
    in LlamaIndex batches of ``embed_batch_size`` texts, which run in order of token length,
    in ONNX batches within ``batch_size`` and ``max_batch_tokens``. The model loads on first
    use, once per process for each model and engine options.

    Example:
        ```python
        from llama_index.core import Settings

        Settings.embed_model = FastEmbedEmbedding("BAAI/bge-small-en-v1.5")
        Settings.embed_model.embedding_size
        # 384   <- known before anything is embedded (Qdrant needs it for the collection)
        vector = Settings.embed_model.get_query_embedding("capital of France")
        len(vector), type(vector[0])
        # (384, <class 'float'>)
        ```
    """

    model_config = MODEL_CONFIG

    _engine_class = TextEmbedding
    _model_field = "model_name"

    model_name: str = Field(
        default=DEFAULT_EMBED_MODEL,
        description="A text embedding model from `TextEmbedding.list_supported_models()`.",
    )

    def __init__(self, model_name: str = DEFAULT_EMBED_MODEL, **data: Any) -> None:
        """Create the embedding model; the model itself loads on first use (or ``warm_up()``)."""
        super().__init__(model_name=model_name, **data)

    @classmethod
    def class_name(cls) -> str:
        """Return the name LlamaIndex serializes this class under."""
        return "FastEmbedEmbedding"

    @property
    def embedding_size(self) -> int:
        """The length of this model's vectors, known without loading the model."""
        return int(find_model(TextEmbedding, self.model_name)["dim"])

    def _vector(self, vector: Any) -> Embedding:  # noqa: ANN401 - a numpy array
        return vector.tolist()  # type: ignore[no-any-return]
