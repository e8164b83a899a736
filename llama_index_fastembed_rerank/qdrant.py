"""Qdrant collections for this package: ``qdrant_hybrid_store`` and the collection schema.

``qdrant_hybrid_store`` builds a hybrid (dense + sparse) ``QdrantVectorStore`` wired to this
package's encoders and fusion. The schema functions below create, describe and check the
collections the command line writes: ``QdrantVectorStore``'s vector names and payload, plus a
record of the models that made the vectors, in Qdrant's collection metadata.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .fusion import reciprocal_rank_fusion
from .inputs import shown
from .sparse import FastEmbedSparseEmbedding

if TYPE_CHECKING:
    from llama_index.core.vector_stores.types import VectorStoreQueryResult
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import AsyncQdrantClient, QdrantClient
    from qdrant_client.http.models import SparseVectorParams

    from .embedding import FastEmbedEmbedding

_INSTALL_HINT = "pip install 'llama-index-fastembed-rerank[qdrant]'"
# The collection metadata entry that records which models made a collection's vectors.
RECORD_KEY = "llama_index_fastembed_rerank"
# QdrantVectorStore arguments this function sets itself, and the argument that sets each.
_SET_HERE = {
    "enable_hybrid": "qdrant_hybrid_store always builds a hybrid store",
    "sparse_doc_fn": "pass sparse_model= instead",
    "sparse_query_fn": "pass sparse_model= instead",
    "fastembed_sparse_model": "pass sparse_model=FastEmbedSparseEmbedding(name) instead",
    "hybrid_fusion_fn": "pass fusion= instead",
}


def qdrant_hybrid_store(
    collection_name: str,
    *,
    client: QdrantClient | None = None,
    aclient: AsyncQdrantClient | None = None,
    url: str | None = None,
    api_key: str | None = None,
    sparse_model: FastEmbedSparseEmbedding | None = None,
    fusion: Callable[..., VectorStoreQueryResult] = reciprocal_rank_fusion,
    **store_kwargs: Any,
) -> QdrantVectorStore:
    """Build a hybrid ``QdrantVectorStore`` that encodes, stores and fuses sparse vectors right.

    Documents are encoded with ``sparse_model.doc_fn`` and queries with
    ``sparse_model.query_fn`` (fastembed's ``query_embed``, which the store's own encoder never
    calls); the collection's sparse vectors get Qdrant's IDF modifier where the model needs
    it (BM25, bm42, miniCOIL); candidates are fused with ``fusion``, Qdrant's RRF by default.
    The dense side is the index's embedding model, as usual.

    Args:
        collection_name: The Qdrant collection; created on the first insert if missing.
        client: A ``QdrantClient``: ``QdrantClient(":memory:")`` or ``path=...`` runs Qdrant
            in this process; ``url=...`` talks to a server or cluster.
        aclient: An ``AsyncQdrantClient``, needed for ``aretrieve``/``aquery``.
        url: A Qdrant server or cluster, instead of ``client``: both clients are made for it.
        api_key: The server's API key, with ``url``.
        sparse_model: The sparse encoder; default ``FastEmbedSparseEmbedding()`` (BM25).
        fusion: How the dense and sparse candidates are fused: ``reciprocal_rank_fusion``,
            ``distribution_based_score_fusion``, or either with options bound by
            ``functools.partial`` (e.g. RRF's ``k``).
        **store_kwargs: Anything else ``QdrantVectorStore`` takes (``batch_size``,
            ``client_kwargs``, ``dense_config``, ...).

    Returns:
        The store, with ``enable_hybrid=True``: query it with
        ``index.as_retriever(vector_store_query_mode="hybrid", ...)``.

    Raises:
        ValueError: Neither or both of a client and a url were given; an api_key without a
            url; an argument this function sets itself; or the collection exists with a
            sparse vector configuration this model cannot use (checked where a sync client
            is at hand).
        TypeError: ``client``, ``aclient``, ``sparse_model`` or ``fusion`` is of the wrong
            type.

    Example:
        ```python
        store = qdrant_hybrid_store("movies", client=QdrantClient(path="./qdrant"))
        # or, for a server: qdrant_hybrid_store("movies", url="http://localhost:6333")
        index = VectorStoreIndex.from_documents(
            documents, storage_context=StorageContext.from_defaults(vector_store=store)
        )
        retriever = index.as_retriever(
            vector_store_query_mode="hybrid", similarity_top_k=10, sparse_top_k=10
        )
        ```
    """
    try:
        import qdrant_client
        from llama_index.vector_stores.qdrant import QdrantVectorStore
    except ImportError as e:
        msg = f"qdrant_hybrid_store needs the Qdrant vector store: {_INSTALL_HINT}"
        raise ImportError(msg) from e

    _check_arguments(client, aclient, url, api_key, sparse_model, fusion, store_kwargs)
    sparse_model = sparse_model or FastEmbedSparseEmbedding()
    if url is not None and (client is not None or aclient is not None):
        msg = (
            f"qdrant_hybrid_store got both url={url!r} and a client: pass one, the url for a "
            f"server or the client you made for it"
        )
        raise ValueError(msg)
    if client is None and aclient is None:
        if url is None:
            msg = (
                "qdrant_hybrid_store needs a Qdrant to talk to: pass client=QdrantClient(...) "
                "(':memory:' or path=... for embedded Qdrant), or url=... for a server"
            )
            raise ValueError(msg)
        # QdrantVectorStore itself insists on an api_key with a url; a local server has none.
        client_kwargs = store_kwargs.pop("client_kwargs", None) or {}
        client = qdrant_client.QdrantClient(url=url, api_key=api_key, **client_kwargs)
        aclient = qdrant_client.AsyncQdrantClient(url=url, api_key=api_key, **client_kwargs)
    needed = sparse_vector_params(sparse_model)
    modifier = needed.modifier
    sparse_config = store_kwargs.pop("sparse_config", None) or needed
    if sparse_config.modifier != modifier:
        msg = (
            f"sparse_config has {_modifier(sparse_config.modifier)}, but "
            f"{sparse_model.model_name} needs {_modifier(modifier)}: leave sparse_config out "
            f"and qdrant_hybrid_store sets it"
        )
        raise ValueError(msg)
    store = QdrantVectorStore(
        collection_name=collection_name,
        client=client,
        aclient=aclient,
        enable_hybrid=True,
        sparse_doc_fn=sparse_model.doc_fn,
        sparse_query_fn=sparse_model.query_fn,
        hybrid_fusion_fn=fusion,
        sparse_config=sparse_config,
        **store_kwargs,
    )
    if client is not None and client.collection_exists(collection_name):
        _check_existing(client, store, sparse_model, modifier)
    return store


def sparse_vector_params(sparse_model: FastEmbedSparseEmbedding) -> SparseVectorParams:
    """Return the ``SparseVectorParams`` a collection needs for ``sparse_model``'s vectors."""
    from qdrant_client.http import models

    modifier = models.Modifier.IDF if sparse_model.requires_idf else None
    return models.SparseVectorParams(index=models.SparseIndexParams(), modifier=modifier)


def _check_arguments(
    client: object,
    aclient: object,
    url: object,
    api_key: object,
    sparse_model: object,
    fusion: object,
    store_kwargs: dict[str, Any],
) -> None:
    """Refuse arguments that would fail later, deep inside the store, or be ignored."""
    import qdrant_client

    for name, value, expected in (
        ("client", client, qdrant_client.QdrantClient),
        ("aclient", aclient, qdrant_client.AsyncQdrantClient),
    ):
        if value is not None and not isinstance(value, expected):
            msg = (
                f"{name} must be {expected.__name__}(...), got {shown(value)}: for a server, "
                f"pass url=... instead"
            )
            raise TypeError(msg)
    if api_key is not None and url is None:
        msg = (
            "api_key is used only with url=...: with client=..., give the key to "
            "QdrantClient(url=..., api_key=...) itself"
        )
        raise ValueError(msg)
    if sparse_model is not None and not isinstance(sparse_model, FastEmbedSparseEmbedding):
        msg = (
            f"sparse_model must be a FastEmbedSparseEmbedding, got {shown(sparse_model)}: "
            f"pass sparse_model=FastEmbedSparseEmbedding('Qdrant/bm25') or another model name"
        )
        raise TypeError(msg)
    if not callable(fusion):
        msg = (
            f"fusion must be a function such as reciprocal_rank_fusion or "
            f"distribution_based_score_fusion, got {shown(fusion)}"
        )
        raise TypeError(msg)
    for name, fix in _SET_HERE.items():
        if name in store_kwargs:
            msg = f"{name} is set by qdrant_hybrid_store: {fix}"
            raise ValueError(msg)


def _check_existing(
    client: QdrantClient,
    store: QdrantVectorStore,
    sparse_model: FastEmbedSparseEmbedding,
    modifier: Any,  # noqa: ANN401 - qdrant_client's Modifier, imported lazily
) -> None:
    """Refuse a collection whose sparse vectors the model's scores would be wrong in."""
    name = store.collection_name
    sparse_vectors = client.get_collection(name).config.params.sparse_vectors or {}
    params = sparse_vectors.get(store.sparse_vector_name)
    if params is None:
        msg = (
            f"Collection {name!r} has no sparse vector named {store.sparse_vector_name!r} "
            f"(it has {sorted(sparse_vectors) or 'none'}), so hybrid search cannot use it: "
            f"ingest into a new collection, or delete this one first"
        )
        raise ValueError(msg)
    if params.modifier != modifier:
        msg = (
            f"Collection {name!r} stores sparse vectors with {_modifier(params.modifier)}, "
            f"but {sparse_model.model_name} needs {_modifier(modifier)}, or its scores are "
            f"wrong (BM25 without IDF weighs every term alike): re-ingest into a new "
            f"collection, or delete this one first"
        )
        raise ValueError(msg)


def _modifier(modifier: Any) -> str:  # noqa: ANN401 - qdrant_client's Modifier or None
    return "no modifier" if modifier is None else f"the {modifier.value.upper()} modifier"


def collection_record(client: QdrantClient, collection: str) -> dict[str, Any] | None:
    """Return the models ``collection`` records (``embed_model``, ``sparse_model``).

    None where the collection does not exist or was not made by this package.
    """
    if not client.collection_exists(collection):
        return None
    metadata = getattr(client.get_collection(collection).config, "metadata", None) or {}
    record = metadata.get(RECORD_KEY)
    return record if isinstance(record, dict) else None


def create_collection(
    client: QdrantClient,
    collection: str,
    embed_model: FastEmbedEmbedding,
    sparse_model: FastEmbedSparseEmbedding | None,
) -> None:
    """Create ``collection`` for the vectors of these models, recording their names.

    Vector names and distance are ``QdrantVectorStore``'s; sparse vectors (when
    ``sparse_model`` is given) get the modifier the model needs.
    """
    from llama_index.vector_stores.qdrant.base import (
        DEFAULT_DENSE_VECTOR_NAME,
        DEFAULT_SPARSE_VECTOR_NAME,
        DOCUMENT_ID_KEY,
    )
    from qdrant_client.http import models

    record = {
        "embed_model": embed_model.model_name,
        "sparse_model": sparse_model and sparse_model.model_name,
    }
    client.create_collection(
        collection,
        vectors_config={
            DEFAULT_DENSE_VECTOR_NAME: models.VectorParams(
                size=embed_model.embedding_size, distance=models.Distance.COSINE
            )
        },
        sparse_vectors_config=(
            {DEFAULT_SPARSE_VECTOR_NAME: sparse_vector_params(sparse_model)}
            if sparse_model is not None
            else None
        ),
        metadata={RECORD_KEY: record},
    )
    # Each file's chunks are found by their document id; a server needs the index for that.
    client.create_payload_index(collection, DOCUMENT_ID_KEY, models.PayloadSchemaType.KEYWORD)


def check_dense_vectors(
    client: QdrantClient, collection: str, embed_model: FastEmbedEmbedding
) -> None:
    """Refuse a collection whose dense vectors ``embed_model``'s cannot be searched among.

    Raises:
        ValueError: It has no dense vector, or vectors of another size.
    """
    from llama_index.vector_stores.qdrant.base import DEFAULT_DENSE_VECTOR_NAME

    vectors = client.get_collection(collection).config.params.vectors
    params = (
        (vectors.get(DEFAULT_DENSE_VECTOR_NAME) or vectors.get(""))
        if isinstance(vectors, dict)
        else vectors
    )
    if params is None:
        msg = (
            f"collection {collection!r} has no dense vector {DEFAULT_DENSE_VECTOR_NAME!r} to search"
        )
        raise ValueError(msg)
    if params.size != embed_model.embedding_size:
        msg = (
            f"collection {collection!r} holds vectors of {params.size} numbers, but "
            f"{embed_model.model_name} makes {embed_model.embedding_size}: pass the --embed-model "
            f"it was ingested with, or use another collection"
        )
        raise ValueError(msg)


def collection_store(
    client: QdrantClient, collection: str, sparse_model: FastEmbedSparseEmbedding | None
) -> QdrantVectorStore:
    """Return the store of ``collection``: hybrid with ``sparse_model``, else dense only."""
    from llama_index.vector_stores.qdrant import QdrantVectorStore

    if sparse_model is not None:
        return qdrant_hybrid_store(collection, client=client, sparse_model=sparse_model)
    return QdrantVectorStore(collection_name=collection, client=client)


def stored_chunk_ids(client: QdrantClient, collection: str) -> dict[str, set[str]]:
    """Return the ids of the points in ``collection``, by their document id."""
    from llama_index.vector_stores.qdrant.base import DOCUMENT_ID_KEY

    chunks: dict[str, set[str]] = {}
    offset = None
    while True:
        points, offset = client.scroll(
            collection,
            limit=1024,
            offset=offset,
            with_payload=[DOCUMENT_ID_KEY],
            with_vectors=False,
        )
        for point in points:
            doc_id = (point.payload or {}).get(DOCUMENT_ID_KEY)
            if isinstance(doc_id, str):
                chunks.setdefault(doc_id, set()).add(str(point.id))
        if offset is None:
            return chunks
