"""FastEmbedEmbedding: a LlamaIndex embedding model over fastembed's TextEmbedding."""

from __future__ import annotations

import asyncio
from typing import Any

from fastembed import TextEmbedding
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from llama_index.core.bridge.pydantic import ConfigDict, Field, field_validator

from .engine import FastEmbedEmbeddingOptions, document_options, find_model
from .inputs import checked_list, checked_text, warn_truncated_texts

DEFAULT_EMBED_MODEL = "BAAI/bge-small-en-v1.5"
_TEXTS_FIX = "pass a list of strings, e.g. [text]"


@document_options
class FastEmbedEmbedding(FastEmbedEmbeddingOptions, BaseEmbedding):
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

    model_config = ConfigDict(
        validate_assignment=True,
        arbitrary_types_allowed=True,
        extra="forbid",  # a misspelt option fails instead of being ignored
        protected_namespaces=("pydantic_model_",),
    )

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

    @field_validator("model_name")
    @classmethod
    def _known_model(cls, value: str) -> str:
        find_model(TextEmbedding, value)
        return value

    @property
    def embedding_size(self) -> int:
        """The length of this model's vectors, known without loading the model."""
        return int(find_model(TextEmbedding, self.model_name)["dim"])

    def warm_up(self) -> None:
        """Load the model now, e.g. so a service fails at start rather than on a query."""
        self._shared_engine(TextEmbedding, self.model_name)

    def get_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Embedding]:
        """Embed documents (any iterable of strings), in input order."""
        texts = checked_list("texts", texts, str, _TEXTS_FIX)
        return super().get_text_embedding_batch(texts, show_progress, **kwargs)

    async def aget_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Embedding]:
        """Embed documents (any iterable of strings), in input order, off the event loop."""
        texts = checked_list("texts", texts, str, _TEXTS_FIX)
        return await super().aget_text_embedding_batch(texts, show_progress, **kwargs)

    def _get_query_embedding(self, query: str) -> Embedding:
        query = checked_text("query", query)
        engine = self._shared_engine(TextEmbedding, self.model_name)
        warn_truncated_texts(engine, [query])
        return next(iter(engine.query_embed(query))).tolist()  # type: ignore[no-any-return]

    def _get_text_embedding(self, text: str) -> Embedding:
        return self._get_text_embeddings([checked_text("text", text)])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        engine = self._shared_engine(TextEmbedding, self.model_name)
        return [v.tolist() for v in self._embed_passages(engine, texts)]

    async def _aget_query_embedding(self, query: str) -> Embedding:
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Embedding:
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Embedding]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)
