"""What the dense and the sparse embedding classes share: their options and their batching."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, ClassVar

from pydantic import Field

from . import _fastembed
from .batching import DEFAULT_MAX_BATCH_TOKENS, run_batches, token_lengths
from .inputs import checked_list, checked_text, warn_truncated, warn_truncated_texts
from .options import FastEmbedEngineOptions
from .quantization import use_int8_graph

_TEXTS_FIX = "pass a list of strings, e.g. [text]"


class FastEmbedEmbeddingBase(FastEmbedEngineOptions):
    """A LlamaIndex embedding over a fastembed model: queries, documents, batching.

    Each class names it first among its bases, then the LlamaIndex base class it implements
    (``BaseEmbedding`` or ``BaseSparseEmbedding``), sets ``_engine_class`` and turns one
    fastembed vector into LlamaIndex's form (``_vector``).
    """

    # The LlamaIndex base class of each subclass, whose batch method this one's checks wrap.
    _llama_index_base: ClassVar[type[Any]]

    model_name: str
    # fastembed's default is 256: on a CPU big batches only add padding and memory, and a
    # SPLADE model's output is batch x tokens x its 30,522-word vocabulary.
    batch_size: int = Field(
        default=64,
        ge=1,
        description="Most texts per ONNX run (fastembed's `batch_size`).",
    )
    max_batch_tokens: int | None = Field(
        default=DEFAULT_MAX_BATCH_TOKENS,
        ge=1,
        description=(
            "Most tokens per ONNX run, padding included (texts times the longest text's "
            "tokens); a longer text runs alone. `None` leaves batching to `batch_size`. Small "
            "runs are fastest on a CPU; on a GPU raise it or pass `None`."
        ),
    )
    parallel: int | None = Field(
        default=None,
        ge=0,
        description=(
            "fastembed's data parallelism for large ingestion: worker processes, `0` for one per "
            "core, `None` for one process on ONNX Runtime's threads."
        ),
    )
    # LlamaIndex's default of 10 would cut fastembed's batches to 10 texts.
    embed_batch_size: int = Field(
        default=2048,
        gt=0,
        le=2048,
        description="Texts LlamaIndex hands over per call (callbacks, progress).",
    )

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Note the LlamaIndex base class a subclass names after this one."""
        super().__init_subclass__(**kwargs)
        # The first class after ours in the MRO that defines the batch call (BaseEmbedding or
        # BaseSparseEmbedding), so that a user's subclass of one of ours finds it too.
        cls._llama_index_base = next(
            b
            for b in cls.__mro__
            if not issubclass(b, FastEmbedEmbeddingBase) and "get_text_embedding_batch" in vars(b)
        )

    def _prepare(self) -> Callable[[Any], object] | None:
        return use_int8_graph if self.quantize else None

    def _vector(self, vector: Any) -> Any:  # noqa: ANN401 - fastembed's vector, LlamaIndex's
        """Return one fastembed vector in LlamaIndex's form (Python floats)."""
        raise NotImplementedError

    def get_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Any]:
        """Embed documents (any iterable of strings), in input order."""
        texts = checked_list("texts", texts, str, _TEXTS_FIX)
        base = self._llama_index_base
        return base.get_text_embedding_batch(self, texts, show_progress, **kwargs)  # type: ignore[no-any-return]

    async def aget_text_embedding_batch(
        self, texts: list[str], show_progress: bool = False, **kwargs: Any
    ) -> list[Any]:
        """Embed documents (any iterable of strings), in input order, off the event loop."""
        texts = checked_list("texts", texts, str, _TEXTS_FIX)
        base = self._llama_index_base
        return await base.aget_text_embedding_batch(self, texts, show_progress, **kwargs)  # type: ignore[no-any-return]

    def _get_query_embedding(self, query: str) -> Any:  # noqa: ANN401 - see _vector
        query = checked_text("query", query)
        model = self._model()
        warn_truncated_texts(model, [query])
        return self._vector(next(iter(model.query_embed(query))))

    def _get_text_embedding(self, text: str) -> Any:  # noqa: ANN401 - see _vector
        return self._get_text_embeddings([checked_text("text", text)])[0]

    def _get_text_embeddings(self, texts: list[str]) -> list[Any]:
        return [self._vector(v) for v in self._embed_passages(self._model(), texts)]

    async def _aget_query_embedding(self, query: str) -> Any:  # noqa: ANN401 - see _vector
        return await asyncio.to_thread(self._get_query_embedding, query)

    async def _aget_text_embedding(self, text: str) -> Any:  # noqa: ANN401 - see _vector
        return await asyncio.to_thread(self._get_text_embedding, text)

    async def _aget_text_embeddings(self, texts: list[str]) -> list[Any]:
        return await asyncio.to_thread(self._get_text_embeddings, texts)

    def _document_method(self, engine: Any) -> Callable[..., Any]:  # noqa: ANN401 - fastembed's
        """Return the fastembed method that embeds documents: ``passage_embed``."""
        return engine.passage_embed  # type: ignore[no-any-return]

    def _embed_passages(self, engine: Any, texts: list[str]) -> list[Any]:  # noqa: ANN401
        """Return each text's document vector (``_document_method``), in input order.

        The texts run in order of token length, in batches within ``batch_size`` and
        ``max_batch_tokens``: fastembed pads a batch to its longest text, and a text's vector
        does not depend on its batch.
        """
        tokenizer = _fastembed.tokenizer(engine)
        if tokenizer is None or self.parallel is not None:
            # No tokenizer (BM25), or worker processes, which start anew on every call: one
            # call, in character order.
            warn_truncated_texts(engine, texts)
            lengths, max_texts, max_tokens = [len(t) for t in texts], max(len(texts), 1), None
        else:
            encodings = tokenizer.encode_batch(texts)
            warn_truncated(engine.model_name, encodings, "texts", "embedded")
            lengths = token_lengths(encodings)
            max_texts, max_tokens = self.batch_size, self.max_batch_tokens

        embed = self._document_method(engine)

        def run(rows: list[int]) -> Any:  # noqa: ANN401 - fastembed's vectors
            return embed(
                [texts[i] for i in rows], batch_size=self.batch_size, parallel=self.parallel
            )

        vectors: list[Any] = [None] * len(texts)
        for i, vector in run_batches(lengths, max_texts, max_tokens, run):
            vectors[i] = vector
        return vectors
