"""qdrant_hybrid_store: a hybrid (dense + sparse) QdrantVectorStore wired to this package."""

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

_INSTALL_HINT = "pip install 'llama-index-fastembed-rerank[qdrant]'"
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
