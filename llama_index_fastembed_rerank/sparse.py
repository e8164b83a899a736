"""FastEmbedSparseEmbedding: a LlamaIndex sparse embedding over fastembed's SparseTextEmbedding."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fastembed import SparseTextEmbedding
from llama_index.core.base.embeddings.base_sparse import BaseSparseEmbedding, SparseEmbedding
from pydantic import Field, model_validator

from .default_models import DEFAULT_SPARSE_MODEL
from .embedding_base import _TEXTS_FIX, FastEmbedEmbeddingBase
from .inputs import checked_list
from .loading import find_model
from .options import MODEL_CONFIG, document_options, raw_field

_BM25 = "qdrant/bm25"
# fastembed's Bm25 silently uses no stopwords when its language's list is missing, except for
# Tamil, which has none.
_BM25_LANGUAGES_WITHOUT_LIST = ("tamil",)


def has_weights(model_name: str) -> bool:
    """Whether a sparse model has weights to quantize: every model but BM25."""
    return model_name.lower() != _BM25


# What QdrantVectorStore's sparse_doc_fn and sparse_query_fn return: indices and values per text.
BatchSparseEncoding = tuple[list[list[int]], list[list[float]]]


@document_options
class FastEmbedSparseEmbedding(FastEmbedEmbeddingBase, BaseSparseEmbedding):
    """Embed queries and documents as sparse vectors with a local fastembed model.

    Queries go through fastembed's ``query_embed`` and documents through ``passage_embed``:
    for BM25 a query term weighs 1 and a document term its length-normalised frequency, and
    for bm42, miniCOIL and inference-free SPLADE the two are different computations.
    ``doc_fn`` and ``query_fn`` are the same two paths in the shape QdrantVectorStore takes
    (``sparse_doc_fn``/``sparse_query_fn``); ``qdrant_hybrid_store`` wires them for you. The
    model loads on first use, once per process for each model and engine options. BM25's
    own options (``k``, ``b``, ``avg_len``, ``language``, ``stopwords``) go in
    ``model_kwargs``.

    Example:
        ```python
        sparse = FastEmbedSparseEmbedding()  # Qdrant/bm25
        sparse.requires_idf
        # True   <- the collection must weigh terms by IDF (qdrant_hybrid_store sets it)
        sparse.get_query_embedding("Joan of Arc heresy trial")
        # {1573180577: 1.0, 787975779: 1.0, 1829767973: 1.0, 436085783: 1.0}
        sparse.get_text_embedding("Joan of Arc was tried for heresy, heresy indeed.")
        # {1573180577: 1.665..., 787975779: 1.665..., ..., 1829767973: 1.895...}
        ```
    """

    model_config = MODEL_CONFIG

    _engine_class = SparseTextEmbedding
    _model_field = "model_name"

    model_name: str = Field(
        default=DEFAULT_SPARSE_MODEL,
        description="A sparse model from `SparseTextEmbedding.list_supported_models()`.",
    )

    def __init__(self, model_name: str = DEFAULT_SPARSE_MODEL, **data: Any) -> None:
        """Create the sparse model; the model itself loads on first use (or ``warm_up()``)."""
        super().__init__(model_name=model_name, **data)

    @classmethod
    def class_name(cls) -> str:
        """Return the name LlamaIndex serializes this class under."""
        return "FastEmbedSparseEmbedding"

    @model_validator(mode="before")
    @classmethod
    def _bm25_has_no_weights(cls, data: Any) -> Any:  # noqa: ANN401 - pydantic's raw input
        # "before", so that a refused assignment leaves the instance as it was.
        if not isinstance(data, dict):
            return data
        model_name, quantize = raw_field(cls, data, "model_name"), raw_field(cls, data, "quantize")
        if isinstance(model_name, str) and model_name.lower() == _BM25 and quantize == "int8":
            msg = (
                f"quantize={quantize!r} does not apply to {model_name}: BM25 has no weights to "
                f"quantize (its vectors count terms). Leave quantize out for BM25, or pick a "
                f"SPLADE model such as prithivida/Splade_PP_en_v1"
            )
            raise ValueError(msg)
        return data

    @model_validator(mode="before")
    @classmethod
    def _bm25_has_stopwords(cls, data: Any) -> Any:  # noqa: ANN401 - pydantic's raw input
        # "before", so that a refused assignment leaves the instance as it was.
        if not isinstance(data, dict):
            return data
        model_name = raw_field(cls, data, "model_name")
        folder = raw_field(cls, data, "specific_model_path")
        options = raw_field(cls, data, "model_kwargs")
        if not (
            isinstance(model_name, str) and isinstance(folder, str) and isinstance(options, dict)
        ):
            return data  # the fields' own validation reports it
        if model_name.lower() != _BM25:
            return data
        language = options.get("language", "english")
        if (
            options.get("stopwords") is not None
            or options.get("disable_stemmer")
            or language in _BM25_LANGUAGES_WITHOUT_LIST
        ):
            return data
        stopwords = Path(folder) / f"{language}.txt"
        if not stopwords.is_file():
            msg = (
                f"{model_name} found no stopword list at {stopwords}: fastembed would "
                f"silently keep every stopword. Put the {language} list there (one word a "
                f"line), or pass model_kwargs={{'stopwords': {{...}}}}"
            )
            raise ValueError(msg)
        return data

    @property
    def requires_idf(self) -> bool:
        """Whether Qdrant must weigh this model's terms by IDF (``Modifier.IDF``), as BM25 needs."""
        return bool(find_model(SparseTextEmbedding, self.model_name).get("requires_idf"))

    def doc_fn(self, texts: list[str]) -> BatchSparseEncoding:
        """Encode documents for QdrantVectorStore's ``sparse_doc_fn`` (``passage_embed``)."""
        return _split(self.get_text_embedding_batch(texts))

    def query_fn(self, texts: list[str]) -> BatchSparseEncoding:
        """Encode queries for QdrantVectorStore's ``sparse_query_fn`` (``query_embed``)."""
        texts = checked_list("texts", texts, str, _TEXTS_FIX)
        return _split([self.get_query_embedding(text) for text in texts])

    def _vector(self, vector: Any) -> SparseEmbedding:  # noqa: ANN401 - fastembed's vector
        # Python ints and floats: BM25 query weights come back as numpy int64.
        return {int(i): float(v) for i, v in zip(vector.indices, vector.values, strict=True)}


def _split(embeddings: list[SparseEmbedding]) -> BatchSparseEncoding:
    return [list(e) for e in embeddings], [list(e.values()) for e in embeddings]
