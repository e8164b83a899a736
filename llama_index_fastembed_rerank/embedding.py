"""FastEmbedEmbedding: a LlamaIndex embedding model over fastembed's TextEmbedding."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from fastembed import TextEmbedding
from llama_index.core.base.embeddings.base import BaseEmbedding, Embedding
from pydantic import Field

from .default_models import DEFAULT_EMBED_MODEL
from .embedding_base import FastEmbedEmbeddingBase
from .loading import find_model
from .options import MODEL_CONFIG, document_options

# The options that cannot change a vector: where the model is found, how its runs are split
# and scheduled, and when it loads. Listed, so that any other option, one added later
# included, changes the IngestionCache key by default.
VECTOR_NEUTRAL_OPTIONS = frozenset(
    {
        "cache_dir",
        "local_files_only",
        "threads",
        "providers",
        "cuda",
        "device_ids",
        "batch_size",
        "max_batch_tokens",
        "parallel",
        "embed_batch_size",
        "num_workers",
        "embeddings_cache",
        "lazy_load",
    }
)


@document_options
class FastEmbedEmbedding(FastEmbedEmbeddingBase, BaseEmbedding):
    """Embed queries and documents with a local fastembed model (ONNX, no PyTorch).

    Queries go through fastembed's ``query_embed`` and documents through ``passage_embed``
    (``doc_embed_type``), so models that treat the two differently get what they expect.
    Documents reach this class in LlamaIndex batches of ``embed_batch_size`` texts, which run
    in order of token length, in ONNX batches within ``batch_size`` and ``max_batch_tokens``.
    The model loads on first use (``lazy_load``), once per process for each model and engine
    options. It takes the options of llama-index-embeddings-fastembed's class of the same name,
    and loads its ``to_dict()``. In ``to_dict()``'s text, which LlamaIndex's ``IngestionCache``
    hashes, options that cannot change a vector (``VECTOR_NEUTRAL_OPTIONS``) are left out.

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
    # llama-index-embeddings-fastembed's default is "default"; "passage" is this class's
    # behaviour from the start, and the two differ for jina-embeddings-v3 only.
    doc_embed_type: Literal["default", "passage"] = Field(
        default="passage",
        description=(
            'How documents are embedded: `"passage"` with fastembed\'s `passage_embed`, '
            '`"default"` with its `embed` (llama-index-embeddings-fastembed\'s default). They '
            "differ only for models that embed documents as a task of their own "
            "(jina-embeddings-v3); queries always go through `query_embed`."
        ),
    )
    lazy_load: bool = Field(
        default=True,
        description=(
            "Load the model on first use (or `warm_up()`); `False` loads it when the instance "
            "is made, as fastembed's `lazy_load=False` does."
        ),
    )

    def __init__(self, model_name: str = DEFAULT_EMBED_MODEL, **data: Any) -> None:
        """Create the embedding model; the model itself loads on first use (or ``warm_up()``)."""
        super().__init__(model_name=model_name, **data)

    def model_post_init(self, context: Any, /) -> None:  # noqa: ANN401 - pydantic's context
        """Load the model now where ``lazy_load`` is False."""
        super().model_post_init(context)
        if not self.lazy_load:
            self.warm_up()

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

    def _document_method(self, engine: Any) -> Callable[..., Any]:  # noqa: ANN401 - fastembed's
        if self.doc_embed_type == "default":
            return engine.embed  # type: ignore[no-any-return]
        return engine.passage_embed  # type: ignore[no-any-return]

    def to_dict(self, **kwargs: Any) -> dict[str, Any]:
        """Return every option, in a dict whose text leaves out ``VECTOR_NEUTRAL_OPTIONS``.

        LlamaIndex's ``IngestionCache`` keys a transformation by ``str(to_dict())``: changing
        ``threads`` or ``batch_size`` then reuses the cached vectors, while changing the model
        or any other option embeds again. ``from_dict``, ``to_json`` and key lookups see every
        option; ``dict(...)`` of the result prints them all.
        """
        return _VectorKeyDict(super().to_dict(**kwargs))


class _VectorKeyDict(dict[str, Any]):
    """A ``to_dict()`` result whose text shows only the options that can change a vector.

    That text is what ``IngestionCache`` hashes; the dict itself holds every option.
    """

    def __repr__(self) -> str:
        return repr({k: v for k, v in self.items() if k not in VECTOR_NEUTRAL_OPTIONS})
