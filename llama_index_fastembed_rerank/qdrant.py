"""Qdrant collections for this package: ``qdrant_hybrid_store`` and the collection schema.

``qdrant_hybrid_store`` builds a hybrid (dense + sparse) ``QdrantVectorStore`` wired to this
package's encoders and fusion. The schema functions below create, describe and check the
collections the command line writes: ``QdrantVectorStore``'s vector names and payload, plus a
record of the models that made the vectors, in Qdrant's collection metadata.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .fusion import reciprocal_rank_fusion
from .inputs import shown
from .sparse import FastEmbedSparseEmbedding

if TYPE_CHECKING:
    from llama_index.core.vector_stores.types import (
        BasePydanticVectorStore,
        VectorStoreQueryResult,
    )
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import AsyncQdrantClient, QdrantClient
    from qdrant_client.http.models import SparseVectorParams

    from .edge import QdrantEdgeVectorStore
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
    check_hybrid_options(sparse_model, fusion)
    for name, fix in _SET_HERE.items():
        if name in store_kwargs:
            msg = f"{name} is set by qdrant_hybrid_store: {fix}"
            raise ValueError(msg)


def check_hybrid_options(sparse_model: object, fusion: object) -> None:
    """Refuse a sparse model or a fusion function of the wrong type, naming the fix.

    Raises:
        TypeError: ``sparse_model`` is neither None nor a ``FastEmbedSparseEmbedding``, or
            ``fusion`` cannot be called.
    """
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


def model_record(
    embed_model: FastEmbedEmbedding, sparse_model: FastEmbedSparseEmbedding | None
) -> dict[str, Any]:
    """Return what a collection records of the models that make its vectors."""
    return {
        "embed_model": embed_model.model_name,
        "sparse_model": None if sparse_model is None else sparse_model.model_name,
        # SPLADE-tiny loads from a folder under SPLADE++'s name: the folder says which it is.
        "sparse_model_path": None if sparse_model is None else sparse_model.specific_model_path,
        # int8 vectors differ a little from fp32 ones: a query is embedded as they were.
        "quantize": embed_model.quantize,
    }


class Collection(abc.ABC):
    """A collection the command line writes and searches: a folder of Qdrant Edge, or a server's.

    Both hold what ``QdrantVectorStore`` writes (its vector names, point ids and payload) and a
    record of the models that made the vectors (``RECORD_KEY``).
    """

    def __init__(self, name: str, where: str) -> None:
        """Describe the collection ``name``; ``where`` says where it is, without credentials."""
        self.name = name
        self.where = where

    @abc.abstractmethod
    def exists(self) -> bool:
        """Whether the collection exists."""

    def record(self) -> dict[str, Any] | None:
        """Return the models the collection records; None if absent or not made here."""
        if not self.exists():
            return None
        record = self._metadata().get(RECORD_KEY)
        return record if isinstance(record, dict) else None

    @abc.abstractmethod
    def _metadata(self) -> Mapping[str, Any]:
        """Return the collection's metadata, where its record is kept; it exists."""

    @abc.abstractmethod
    def create(
        self,
        embed_model: FastEmbedEmbedding,
        sparse_model: FastEmbedSparseEmbedding | None,
    ) -> None:
        """Create the collection for these models' vectors, recording them."""

    @abc.abstractmethod
    def dense_size(self) -> int | None:
        """Return the length of the dense vectors; None where there are none to search."""

    @abc.abstractmethod
    def store(self, sparse_model: FastEmbedSparseEmbedding | None) -> BasePydanticVectorStore:
        """Return a LlamaIndex store on the collection: hybrid with ``sparse_model``."""

    @abc.abstractmethod
    def stored_chunk_ids(self) -> dict[str, set[str]]:
        """Return the ids of the points in the collection, by their document id."""

    @abc.abstractmethod
    def count(self) -> int:
        """Return how many points the collection holds."""

    @abc.abstractmethod
    def names(self) -> list[str]:
        """Return the names of the collections beside this one (to say which exist)."""

    def close(self) -> None:  # noqa: B027 - most collections hold nothing to release
        """Release what the collection holds open."""

    def check_dense_vectors(self, embed_model: FastEmbedEmbedding) -> None:
        """Refuse a collection whose dense vectors ``embed_model``'s cannot be searched among.

        Raises:
            ValueError: It has no dense vector, or vectors of another size.
        """
        from llama_index.vector_stores.qdrant.base import DEFAULT_DENSE_VECTOR_NAME

        size = self.dense_size()
        if size is None:
            msg = (
                f"collection {self.name!r} has no dense vector {DEFAULT_DENSE_VECTOR_NAME!r} to "
                f"search"
            )
            raise ValueError(msg)
        if size != embed_model.embedding_size:
            msg = (
                f"collection {self.name!r} holds vectors of {size} numbers, but "
                f"{embed_model.model_name} makes {embed_model.embedding_size}: pass the "
                f"--embed-model it was ingested with, or use another collection"
            )
            raise ValueError(msg)


class ServerCollection(Collection):
    """A collection on a Qdrant server or cluster, through a ``QdrantClient``."""

    def __init__(self, client: QdrantClient, name: str, where: str) -> None:
        """Use ``client``'s collection ``name``."""
        super().__init__(name, where)
        self.client = client

    def exists(self) -> bool:  # noqa: D102 - Collection's
        return bool(self.client.collection_exists(self.name))

    def _metadata(self) -> Mapping[str, Any]:
        config = self.client.get_collection(self.name).config
        return getattr(config, "metadata", None) or {}

    def create(  # noqa: D102 - Collection's
        self,
        embed_model: FastEmbedEmbedding,
        sparse_model: FastEmbedSparseEmbedding | None,
    ) -> None:
        from llama_index.vector_stores.qdrant.base import (
            DEFAULT_DENSE_VECTOR_NAME,
            DEFAULT_SPARSE_VECTOR_NAME,
            DOCUMENT_ID_KEY,
        )
        from qdrant_client.http import models

        self.client.create_collection(
            self.name,
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
            metadata={RECORD_KEY: model_record(embed_model, sparse_model)},
        )
        # Each file's chunks are found by their document id; a server needs the index for that.
        self.client.create_payload_index(
            self.name, DOCUMENT_ID_KEY, models.PayloadSchemaType.KEYWORD
        )

    def dense_size(self) -> int | None:  # noqa: D102 - Collection's
        from llama_index.vector_stores.qdrant.base import DEFAULT_DENSE_VECTOR_NAME

        vectors = self.client.get_collection(self.name).config.params.vectors
        if isinstance(vectors, dict):
            params = vectors.get(DEFAULT_DENSE_VECTOR_NAME) or vectors.get("")
        else:
            params = vectors
        return None if params is None else int(params.size)

    def store(  # noqa: D102 - Collection's
        self, sparse_model: FastEmbedSparseEmbedding | None
    ) -> QdrantVectorStore:
        from llama_index.vector_stores.qdrant import QdrantVectorStore

        if sparse_model is not None:
            return qdrant_hybrid_store(self.name, client=self.client, sparse_model=sparse_model)
        return QdrantVectorStore(collection_name=self.name, client=self.client)

    def stored_chunk_ids(self) -> dict[str, set[str]]:  # noqa: D102 - Collection's
        from llama_index.vector_stores.qdrant.base import DOCUMENT_ID_KEY

        chunks: dict[str, set[str]] = {}
        if not self.exists():
            return chunks
        offset = None
        while True:
            points, offset = self.client.scroll(
                self.name,
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

    def count(self) -> int:  # noqa: D102 - Collection's
        return int(self.client.count(self.name, exact=True).count) if self.exists() else 0

    def names(self) -> list[str]:  # noqa: D102 - Collection's
        return sorted(c.name for c in self.client.get_collections().collections)


class EmbeddedCollection(Collection):
    """A collection in a folder of its own under ``root``, on Qdrant Edge in this process.

    The folder is opened (and locked against other processes) once the collection is read or
    written, and made only when it is written; ``close()`` releases it.
    """

    def __init__(self, root: Path, name: str) -> None:
        """Describe the folder ``root / name``.

        Raises:
            ValueError: ``root`` holds qdrant-client's local mode, which this store cannot read.
        """
        super().__init__(name, f"embedded Qdrant at {root}")
        refuse_local_mode(root)
        self.root = root
        self.path = root / name
        self._stores: dict[str | None, QdrantEdgeVectorStore] = {}

    def _open(self, sparse_model: FastEmbedSparseEmbedding | None = None) -> QdrantEdgeVectorStore:
        """Return a store on the folder (one per sparse model: they share the open folder)."""
        from .edge import QdrantEdgeVectorStore

        key = None if sparse_model is None else sparse_model.model_name
        if key not in self._stores:
            self._stores[key] = QdrantEdgeVectorStore(self.path, sparse_model=sparse_model)
        return self._stores[key]

    def exists(self) -> bool:  # noqa: D102 - Collection's
        from .edge import is_collection_folder

        return is_collection_folder(self.path)

    def _metadata(self) -> Mapping[str, Any]:
        return self._open().read_metadata()

    def create(  # noqa: D102 - Collection's
        self,
        embed_model: FastEmbedEmbedding,
        sparse_model: FastEmbedSparseEmbedding | None,
    ) -> None:
        # The engine makes the shard on the first write, sized from its vectors.
        self._open().write_metadata({RECORD_KEY: model_record(embed_model, sparse_model)})

    def dense_size(self) -> int | None:  # noqa: D102 - Collection's
        if not self.exists():
            return None
        config = self._open().collection_config
        return None if config is None else int(config.dense_size)

    def check_dense_vectors(self, embed_model: FastEmbedEmbedding) -> None:  # noqa: D102
        if self.dense_size() is not None:  # else nothing is stored yet: any size fits
            super().check_dense_vectors(embed_model)

    def store(  # noqa: D102 - Collection's
        self, sparse_model: FastEmbedSparseEmbedding | None
    ) -> BasePydanticVectorStore:
        return self._open(sparse_model)

    def stored_chunk_ids(self) -> dict[str, set[str]]:  # noqa: D102 - Collection's
        from llama_index.vector_stores.qdrant.base import DOCUMENT_ID_KEY

        chunks: dict[str, set[str]] = {}
        if not self.exists():
            return chunks
        for point in self._open().iter_points(1024):
            doc_id = point.payload.get(DOCUMENT_ID_KEY)
            if isinstance(doc_id, str):
                chunks.setdefault(doc_id, set()).add(point.id)
        return chunks

    def count(self) -> int:  # noqa: D102 - Collection's
        return self._open().count() if self.exists() else 0

    def names(self) -> list[str]:  # noqa: D102 - Collection's
        return embedded_collections(self.root)

    def close(self) -> None:  # noqa: D102 - Collection's
        for store in self._stores.values():
            store.close()
        self._stores.clear()


def embedded_collections(root: Path) -> list[str]:
    """Return the names of the collections in the folders under ``root``."""
    from .edge import is_collection_folder

    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and is_collection_folder(p))


def refuse_local_mode(root: Path) -> None:
    """Refuse a folder that qdrant-client's local mode wrote (earlier versions' default).

    Raises:
        ValueError: ``root`` holds local mode's ``meta.json`` and ``collection/`` folder.
    """
    if (root / "meta.json").is_file() and (root / "collection").is_dir():
        msg = (
            f"{root} holds collections of qdrant-client's local mode, which an earlier version "
            f"wrote; this version keeps collections in Qdrant Edge folders: ingest your files "
            f"again with --qdrant-path set to a new folder (or move {root} away first)"
        )
        raise ValueError(msg)
