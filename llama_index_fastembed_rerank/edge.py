"""QdrantEdgeVectorStore: a LlamaIndex vector store in a folder, on Qdrant Edge in this process.

Every use of ``qdrant-edge-py`` (Qdrant's own engine, embedded) lives in this module, which
imports it only when a store opens a folder: ``import llama_index_fastembed_rerank`` works
without it. A collection written here has the point ids, payload keys and vector names that
``QdrantVectorStore`` writes, so ``push_to_qdrant`` can move it to a Qdrant server, where plain
``QdrantVectorStore`` / ``qdrant_hybrid_store`` read it.

What this module assumes of the engine (tests/test_edge.py checks each): a folder is opened by
one ``EdgeShard`` at a time, the second opener failing with ``WouldBlock``; engine calls hold
the GIL (so one lock per folder costs no parallelism); nothing builds the HNSW index but
``optimize()``; an update is in the write-ahead log when it returns; a payload index on a key
whose values have one type gives the results of no index; an empty sparse query finds nothing.
``retrieve`` wants ``with_payload`` and ``with_vector`` although its stubs mark them optional,
so points are read by ``scroll``.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import functools
import json
import logging
import math
import os
import shutil
import sys
import threading
import uuid
import warnings
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from llama_index.core.bridge.pydantic import ConfigDict, Field, PrivateAttr
from llama_index.core.schema import BaseNode, MetadataMode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterCondition,
    FilterOperator,
    MetadataFilter,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryMode,
    VectorStoreQueryResult,
)
from llama_index.core.vector_stores.utils import metadata_dict_to_node, node_to_metadata_dict

from . import staging
from .fusion import reciprocal_rank_fusion
from .inputs import shown
from .options import document_options
from .qdrant import check_hybrid_options
from .sparse import FastEmbedSparseEmbedding

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

logger = logging.getLogger(__name__)

_INSTALL_HINT = "pip install 'llama-index-fastembed-rerank[edge]'"
# The folder holds the engine's shard and this store's record of the collection beside it.
_SHARD = "shard"
_RECORD = "collection.json"
_RECORD_FORMAT = 1
# Held (an OS file lock) while a process has the folder open: a second process is refused
# at once, before it embeds anything, even where the collection is not created yet.
_LOCK = ".lock"
_SCROLL_PAGE = 1_000
# Points searched exactly, without an HNSW index: the engine indexes a segment once its dense
# vectors pass this many (its indexing threshold). Below it exact search is as fast, and the
# build would cost ~1 CPU-ms a point; docs/storage.md has the figures.
EXACT_BELOW = 20_000
# Payload keys node_to_metadata_dict writes for LlamaIndex itself; never indexed on demand.
_NODE_KEYS = frozenset({"_node_content", "_node_type", "document_id", "doc_id", "ref_doc_id"})
# The payload index that gives exactly the results of no index, for a key whose stored values
# all have these JSON types (a keyword index ignores a key's numbers, an integer one its
# floats: with mixed types, conditions such as NE would change meaning).
_INDEX_FOR_TYPES = {
    frozenset({"str"}): "Keyword",
    frozenset({"int"}): "Integer",
    frozenset({"float"}): "Float",
    frozenset({"int", "float"}): "Float",
}


def _engine() -> ModuleType:
    """Import qdrant-edge-py, or say how to install it."""
    try:
        import qdrant_edge
    except ImportError as e:
        msg = f"QdrantEdgeVectorStore needs qdrant-edge-py: {_INSTALL_HINT}"
        raise ImportError(msg) from e
    return qdrant_edge


def _names() -> tuple[str, str, str]:
    """Return QdrantVectorStore's dense and sparse vector names and its document-id key."""
    try:
        from llama_index.vector_stores.qdrant.base import (
            DEFAULT_DENSE_VECTOR_NAME,
            DEFAULT_SPARSE_VECTOR_NAME,
            DOCUMENT_ID_KEY,
        )
    except ImportError as e:
        msg = f"QdrantEdgeVectorStore writes what QdrantVectorStore reads: {_INSTALL_HINT}"
        raise ImportError(msg) from e
    return DEFAULT_DENSE_VECTOR_NAME, DEFAULT_SPARSE_VECTOR_NAME, DOCUMENT_ID_KEY


def is_collection_folder(path: Path) -> bool:
    """Whether ``path`` holds a collection this store wrote (its record, at least)."""
    return (path / _RECORD).is_file()


class FolderInUseError(BlockingIOError):
    """The folder is open in another process: Qdrant Edge opens a folder in one at a time.

    A ``BlockingIOError`` (an ``OSError``), as the lock that tells it.
    """


@dataclass(frozen=True)
class EdgeCollectionConfig:
    """The vectors of a collection in a folder.

    Attributes:
        dense_size: The dense vectors' length (cosine distance).
        sparse: Whether points also have sparse vectors (a hybrid collection).
        sparse_modifier: ``"idf"`` where the sparse vectors are weighed by IDF (BM25), else
            None.
    """

    dense_size: int
    sparse: bool
    sparse_modifier: str | None


@dataclass(frozen=True)
class EdgePoint:
    """One point of a collection, as ``QdrantEdgeVectorStore.iter_points`` yields it.

    Attributes:
        id: The point id: the node id, as Qdrant writes a UUID.
        payload: What ``QdrantVectorStore`` stores: the node's metadata, ``_node_content``,
            ``doc_id``, ...
        dense: The dense vector (normalised, as cosine distance stores it), if asked for.
        sparse: The sparse vector's indices and values, if asked for and the collection has
            them.
    """

    id: str
    payload: dict[str, Any]
    dense: list[float] | None = None
    sparse: tuple[list[int], list[float]] | None = None


class _Folder:
    """One folder's open shard and record, shared by every store on it in this process.

    The engine lets one ``EdgeShard`` open a folder; two stores on one folder in a process
    share this object. ``lock`` serialises every engine call and change of state: the engine's
    calls hold the GIL anyway, so the lock costs no parallelism.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.lock = threading.RLock()
        self.shard: Any = None
        self.record: dict[str, Any] = {}
        self.lock_file: IO[bytes] | None = None
        self.users = 0
        self.closed = False


_OPEN: dict[Path, _Folder] = {}
_OPEN_LOCK = threading.Lock()


def _acquire(path: Path) -> _Folder:
    with _OPEN_LOCK:
        folder = _OPEN.get(path)
        if folder is None:
            folder = _Folder(path)
            with folder.lock:
                folder.lock_file = _lock_folder(path)
                try:
                    _open(folder)
                except BaseException:
                    folder.lock_file.close()
                    raise
            _OPEN[path] = folder
        folder.users += 1
        return folder


def _release(folder: _Folder) -> None:
    with _OPEN_LOCK, folder.lock:
        folder.users -= 1
        if folder.users > 0 or folder.closed:
            return
        folder.closed = True
        _OPEN.pop(folder.path, None)
        if folder.shard is not None:
            folder.shard.close()
            folder.shard = None
        if folder.lock_file is not None:
            folder.lock_file.close()  # releases the OS lock
            folder.lock_file = None


def _lock_folder(path: Path) -> IO[bytes]:
    """Create ``path`` if needed and lock it for this process, or raise FolderInUseError."""
    path.mkdir(parents=True, exist_ok=True)
    lock_file = open(path / _LOCK, "a+b")  # noqa: SIM115 - held open while the folder is
    try:
        if sys.platform == "win32":
            import msvcrt

            msvcrt.locking(lock_file.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl

            fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        lock_file.close()
        raise FolderInUseError(_in_use(path)) from e
    return lock_file


def _in_use(path: Path) -> str:
    return (
        f"{path} is open in another process (Qdrant Edge opens a folder in one process at a "
        f"time): close that process first, or use another folder"
    )


def _open(folder: _Folder) -> None:
    """Read the folder's record and open its shard, if the collection exists."""
    record_path = folder.path / _RECORD
    if record_path.exists():
        folder.record = json.loads(record_path.read_text(encoding="utf-8"))
    shard_path = folder.path / _SHARD
    if not shard_path.is_dir():
        return
    if folder.record.get("dense_size") is None:
        msg = (
            f"{folder.path} has a Qdrant Edge shard but no {_RECORD} describing it: it was "
            f"not written by QdrantEdgeVectorStore, or the file was deleted"
        )
        raise ValueError(msg)
    folder.shard = _load_shard(folder.path, shard_path)


def _load_shard(folder: Path, shard_path: Path) -> Any:  # noqa: ANN401 - qdrant_edge.EdgeShard
    qe = _engine()
    try:
        return qe.EdgeShard.load(str(shard_path))
    except Exception as e:
        if "WouldBlock" in str(e):  # the engine's own lock, taken by something else
            raise FolderInUseError(_in_use(folder)) from e
        msg = f"could not open the Qdrant Edge collection in {folder}: {e}"
        raise RuntimeError(msg) from e


def _count(shard: Any, flt: Any) -> int:  # noqa: ANN401 - qdrant_edge objects
    return int(shard.count(_engine().CountRequest(filter=flt, exact=True)))


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Replace ``path`` with ``data`` as JSON, atomically: a crash leaves the old or the new."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(data, ensure_ascii=False, allow_nan=False)
    staged = staging.stage(path)
    try:
        staged.write_text(text, encoding="utf-8")
        staging.commit(staged, path)
    except BaseException:
        staging.discard(staged)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(path: Path) -> None:
    if os.name == "posix":  # a directory's entries are made durable through its own fd
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _json_type(value: object) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "str"
    if value is None:
        return "null"
    return "list" if isinstance(value, list) else "object"


def _point_id(node_id: object, what: str) -> str:
    """Return ``node_id`` as Qdrant writes a point id, or raise naming what it was."""
    try:
        return str(uuid.UUID(str(node_id)))
    except ValueError:
        msg = (
            f"{what} {node_id!r} is not a UUID: Qdrant's point ids are UUIDs, and "
            f"QdrantVectorStore uses the node id as the point id; give nodes UUID ids (the "
            f"LlamaIndex default, str(uuid.uuid4()))"
        )
        raise ValueError(msg) from None


@functools.partial(document_options, names=("path", "sparse_model", "fusion"))
class QdrantEdgeVectorStore(BasePydanticVectorStore):
    """A LlamaIndex vector store in one folder, on Qdrant Edge (Qdrant's engine, in process).

    One folder holds one collection, created on the first ``add`` and sized from its first
    embedding (cosine distance), with the point ids, payload and vector names
    ``QdrantVectorStore`` writes: ``push_to_qdrant`` moves it to a server as it is. With a
    ``sparse_model`` the store is hybrid exactly as ``qdrant_hybrid_store``: documents through
    ``sparse_model.doc_fn``, queries through ``query_fn``, IDF weighting where the model needs
    it, and ``fusion`` with the query's ``alpha``. Queries run in modes ``default``,
    ``sparse`` and ``hybrid``, with ``MetadataFilters`` as ``QdrantVectorStore`` maps them.

    Upkeep: each ``add`` ends with the engine's optimizer, which does nothing until the
    points not yet indexed pass ``EXACT_BELOW`` (20,000), and then builds their HNSW index:
    the writer waits for it, a query never does; points not yet indexed are searched exactly.
    The first query that filters on a metadata key builds a payload index for it, where the
    key's values have one type. ``add`` returns once its points are in the engine's
    write-ahead log: a process killed afterwards finds them on reopen.

    A folder is open in one process at a time (a second process gets ``FolderInUseError``);
    within a process, stores on one folder share it, and threads may use a store at once; the
    async methods run the sync ones in a worker thread. ``close()`` (or ``with``) releases the
    folder.

    Example:
        ```python
        movies = json.load(open("examples/data/movies.json"))
        store = QdrantEdgeVectorStore("./movies", sparse_model=FastEmbedSparseEmbedding())
        index = VectorStoreIndex.from_documents(
            [Document(text=d) for d in movies["descriptions"]],
            storage_context=StorageContext.from_defaults(vector_store=store),
        )
        store.count()
        # 20      <- one point per description, in ./movies; reopen it in a later process
        retriever = index.as_retriever(vector_store_query_mode="hybrid", sparse_top_k=10)
        ```
    """

    model_config = ConfigDict(
        arbitrary_types_allowed=True, validate_assignment=True, extra="forbid"
    )

    stores_text: bool = True
    flat_metadata: bool = False

    path: str = Field(
        description="The collection's folder, created if missing; one collection a folder.",
        frozen=True,
    )
    sparse_model: FastEmbedSparseEmbedding | None = Field(
        default=None,
        description=(
            "The sparse encoder that makes the store hybrid (e.g. FastEmbedSparseEmbedding() "
            "for BM25); None for dense only."
        ),
        frozen=True,
    )
    fusion: Callable[..., VectorStoreQueryResult] = Field(
        default=reciprocal_rank_fusion,
        description=(
            "How hybrid queries fuse the dense and sparse candidates: reciprocal_rank_fusion "
            "or distribution_based_score_fusion, or either with options bound by "
            "functools.partial. Not written by to_dict/to_json (a function)."
        ),
        exclude=True,
        frozen=True,
    )

    _folder: _Folder = PrivateAttr()
    _finalizer: Any = PrivateAttr(default=None)

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        sparse_model: FastEmbedSparseEmbedding | None = None,
        fusion: Callable[..., VectorStoreQueryResult] = reciprocal_rank_fusion,
        **data: Any,
    ) -> None:
        """Open the folder ``path`` (made if missing) and the collection in it, if any.

        Raises:
            FolderInUseError: Another process has the folder open.
            TypeError: ``sparse_model`` or ``fusion`` is of the wrong type.
            ValueError: The collection there cannot serve ``sparse_model`` (no sparse
                vectors, or the wrong IDF weighting).
            ImportError: qdrant-edge-py or llama-index-vector-stores-qdrant is missing.
        """
        if not isinstance(path, str | os.PathLike):
            msg = f"path must be a folder (str or Path), got {shown(path)}"
            raise TypeError(msg)
        if isinstance(sparse_model, Mapping):  # from_dict / from_json
            fields = {k: v for k, v in sparse_model.items() if k != "class_name"}
            sparse_model = FastEmbedSparseEmbedding.model_validate(fields)
        check_hybrid_options(sparse_model, fusion)
        super().__init__(path=os.fspath(path), sparse_model=sparse_model, fusion=fusion, **data)

    def model_post_init(self, context: Any, /) -> None:  # noqa: ANN401 - pydantic's context
        """Open the folder (shared with other stores on it in this process)."""
        super().model_post_init(context)
        _engine()
        _names()
        folder = _acquire(Path(self.path).resolve())
        self._folder = folder
        self._finalizer = weakref.finalize(self, _release, folder)
        try:
            self._check_sparse_model()
        except BaseException:
            self.close()
            raise

    @classmethod
    def class_name(cls) -> str:
        """Return the name LlamaIndex serializes this class under."""
        return "QdrantEdgeVectorStore"

    # --- the folder ------------------------------------------------------------------------

    @property
    def client(self) -> Any:  # noqa: ANN401 - qdrant_edge.EdgeShard
        """The engine's ``qdrant_edge.EdgeShard``; None until the first add."""
        return self._folder.shard

    def close(self) -> None:
        """Release the folder; the last store on it in this process closes the shard."""
        if self._finalizer is not None:
            self._finalizer()

    def __enter__(self) -> QdrantEdgeVectorStore:
        """Return the store; leaving the block closes it."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Close the store."""
        self.close()

    @property
    def collection_config(self) -> EdgeCollectionConfig | None:
        """The collection's vectors; None before the first add."""
        with self._lock() as folder:
            if folder.shard is None:
                return None
            record = folder.record
            return EdgeCollectionConfig(
                dense_size=int(record["dense_size"]),
                sparse=bool(record["sparse"]),
                sparse_modifier=record.get("sparse_modifier"),
            )

    def read_metadata(self) -> dict[str, Any]:
        """Return the metadata last written by ``write_metadata`` ({} if none)."""
        with self._lock() as folder:
            return copy.deepcopy(folder.record.get("metadata", {}))

    def write_metadata(self, metadata: Mapping[str, Any]) -> None:
        """Replace the collection's metadata with ``metadata``, atomically, in the folder.

        Args:
            metadata: Anything ``json.dumps`` writes (no NaN), e.g. the models the collection
                was embedded with.

        Raises:
            TypeError: ``metadata`` is not a mapping, or not JSON.
        """
        if not isinstance(metadata, Mapping):
            msg = f"metadata must be a dict, got {shown(metadata)}"
            raise TypeError(msg)
        try:
            copied = json.loads(json.dumps(dict(metadata), allow_nan=False))
        except (TypeError, ValueError) as e:
            msg = f"metadata must be JSON (str, numbers, bool, None, lists, dicts): {e}"
            raise TypeError(msg) from e
        with self._lock() as folder:
            self._write_record({**folder.record, "metadata": copied})

    def count(self, filters: MetadataFilters | None = None) -> int:
        """Return how many points the collection holds (that match ``filters``)."""
        with self._lock() as folder:
            if folder.shard is None:
                return 0
            return _count(folder.shard, self._filter(filters=filters))

    def iter_points(
        self, batch_size: int = 256, *, with_vectors: bool = False
    ) -> Iterator[EdgePoint]:
        """Yield every point, in id order, ``batch_size`` read at a time.

        Args:
            batch_size: Points read per engine call.
            with_vectors: Also return each point's dense and sparse vectors.
        """
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
            msg = f"batch_size must be an int >= 1, got {shown(batch_size)}"
            raise ValueError(msg)
        qe = _engine()
        dense_name, sparse_name, _ = _names()
        offset = None
        while True:
            with self._lock() as folder:
                if folder.shard is None:
                    return
                records, offset = folder.shard.scroll(
                    qe.ScrollRequest(
                        offset=offset,
                        limit=batch_size,
                        with_payload=True,
                        with_vector=with_vectors,
                    )
                )
            for record in records:
                vectors = record.vector or {}
                sparse = vectors.get(sparse_name)
                yield EdgePoint(
                    id=str(record.id),
                    payload=record.payload or {},
                    dense=vectors.get(dense_name),
                    sparse=None if sparse is None else (list(sparse.indices), list(sparse.values)),
                )
            if offset is None:
                return

    def optimize(self) -> bool:
        """Run the engine's optimizers now: index, merge and vacuum segments as they need.

        Every ``add`` ends with this; call it after deleting many points to reclaim them.
        It blocks (holding the GIL) while it works.

        Returns:
            Whether the engine had anything to do.
        """
        with self._lock() as folder:
            return folder.shard is not None and bool(folder.shard.optimize())

    # --- writes ----------------------------------------------------------------------------

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        """Add nodes with their embeddings; return their ids.

        Everything is checked and encoded before anything is written: a bad node leaves the
        collection as it was. A node id already there is replaced.

        Raises:
            ValueError: A node has no embedding, one of another length than the collection's,
                a non-finite value, or an id that is not a UUID; or the collection is hybrid
                and the store has no sparse_model.
        """
        nodes = list(nodes)
        if not nodes:
            return []
        qe = _engine()
        dense_name, sparse_name, _ = _names()
        ids, dense, payloads = _prepared(nodes)
        sparse: tuple[list[list[int]], list[list[float]]] | None = None
        if self.sparse_model is not None:
            # Encoded outside the lock: fastembed runs beside other threads' engine calls.
            sparse = self.sparse_model.doc_fn(
                [node.get_content(metadata_mode=MetadataMode.EMBED) for node in nodes]
            )
        with self._lock() as folder:
            if folder.shard is not None:
                self._check_sparse_model()
                if folder.record.get("sparse") and self.sparse_model is None:
                    msg = (
                        f"the collection in {self.path} is hybrid: open it with the "
                        f"sparse_model it was written with, or its new points have no sparse "
                        f"vectors"
                    )
                    raise ValueError(msg)
            size = len(dense[0]) if folder.shard is None else int(folder.record["dense_size"])
            for node, vector in zip(nodes, dense, strict=True):
                if len(vector) != size:
                    msg = (
                        f"node {node.node_id!r} has an embedding of {len(vector)} values, but "
                        f"the collection's have {size}: embed every node with one model, or "
                        f"clear() the collection first"
                    )
                    raise ValueError(msg)
            points = []
            for i, (point_id, vector, payload) in enumerate(zip(ids, dense, payloads, strict=True)):
                vectors: dict[str, Any] = {dense_name: vector}
                if sparse is not None:
                    vectors[sparse_name] = qe.SparseVector(
                        indices=list(sparse[0][i]), values=list(sparse[1][i])
                    )
                points.append(qe.Point(id=point_id, vector=vectors, payload=payload))
            if folder.shard is None:
                self._create(size)
            self._note_payload_types(payloads)
            folder.shard.update(qe.UpdateOperation.upsert_points(points))
            # A no-op until the unindexed points pass EXACT_BELOW; then the writer, never a
            # query, waits for the index build (docs/storage.md).
            folder.shard.optimize()
        return [node.node_id for node in nodes]

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete every node of the document ``ref_doc_id``."""
        qe = _engine()
        _, _, doc_key = _names()
        condition = qe.FieldCondition(doc_key, match=qe.MatchValue(ref_doc_id))
        with self._lock() as folder:
            if folder.shard is not None:
                folder.shard.update(
                    qe.UpdateOperation.delete_points_by_filter(qe.Filter(must=[condition]))
                )

    def delete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete the nodes with these ids that match ``filters``; with neither, every node."""
        qe = _engine()
        with self._lock() as folder:
            if folder.shard is None:
                return
            flt = self._filter(node_ids=node_ids, filters=filters) or qe.Filter()
            folder.shard.update(qe.UpdateOperation.delete_points_by_filter(flt))

    def clear(self) -> None:
        """Delete the collection (points and metadata); the next add creates it anew."""
        with self._lock() as folder:
            if folder.shard is not None:
                folder.shard.close()
                folder.shard = None
            # Renamed first, so that a kill leaves either the collection or none.
            shard = folder.path / _SHARD
            if shard.exists():
                doomed = folder.path / f".{_SHARD}.deleted-{uuid.uuid4().hex}"
                os.replace(shard, doomed)
                _fsync_dir(folder.path)
                shutil.rmtree(doomed, ignore_errors=True)
            with contextlib.suppress(FileNotFoundError):
                (folder.path / _RECORD).unlink()
            folder.record = {}

    # --- reads -----------------------------------------------------------------------------

    def get_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        limit: int | None = None,
    ) -> list[BaseNode]:
        """Return the nodes with these ids that match ``filters`` (with their embeddings)."""
        qe = _engine()
        dense_name, _, _ = _names()
        nodes: list[BaseNode] = []
        offset = None
        with self._lock() as folder:
            if folder.shard is None:
                return []
            flt = self._filter(node_ids=node_ids, filters=filters)
            while limit is None or len(nodes) < limit:
                page = _SCROLL_PAGE if limit is None else min(_SCROLL_PAGE, limit - len(nodes))
                records, offset = folder.shard.scroll(
                    qe.ScrollRequest(
                        offset=offset,
                        limit=page,
                        filter=flt,
                        with_payload=True,
                        with_vector=[dense_name],
                    )
                )
                for record in records:
                    node = metadata_dict_to_node(record.payload)
                    embedding = (record.vector or {}).get(dense_name)
                    if embedding is not None and node.embedding is None:
                        node.embedding = list(embedding)
                    nodes.append(node)
                if offset is None:
                    break
        return nodes

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Return the nodes nearest the query, in its mode: default, sparse or hybrid.

        ``search_params={"hnsw_ef": ..., "exact": True}`` in kwargs tunes the dense search,
        as it does for ``QdrantVectorStore``.

        Raises:
            ValueError: A sparse or hybrid query on a store without sparse_model, a query
                without the embedding or text its mode needs, or an unsupported mode.
        """
        if kwargs.get("qdrant_filters") is not None:
            msg = (
                "qdrant_filters (qdrant_client's Filter) is QdrantVectorStore's: pass "
                "MetadataFilters as filters=... instead"
            )
            raise TypeError(msg)
        mode = VectorStoreQueryMode(query.mode)
        if mode not in (
            VectorStoreQueryMode.DEFAULT,
            VectorStoreQueryMode.SPARSE,
            VectorStoreQueryMode.HYBRID,
        ):
            msg = (
                f"QdrantEdgeVectorStore queries in modes 'default', 'sparse' and 'hybrid', "
                f"not {mode.value!r}"
            )
            raise ValueError(msg)
        sparse_needed = mode != VectorStoreQueryMode.DEFAULT and query.query_str is not None
        if mode != VectorStoreQueryMode.DEFAULT and self.sparse_model is None:
            msg = (
                f"a {mode.value} query needs sparse vectors: open the store with "
                f"sparse_model=FastEmbedSparseEmbedding(...), the model it was written with"
            )
            raise ValueError(msg)
        if mode == VectorStoreQueryMode.SPARSE and query.query_str is None:
            msg = "a sparse query needs its text (query_str): the sparse model encodes it"
            raise ValueError(msg)
        dense_needed = mode != VectorStoreQueryMode.SPARSE
        if dense_needed and query.query_embedding is None:
            msg = f"a {mode.value} query needs query_embedding: the index's embed model makes it"
            raise ValueError(msg)
        sparse_vector = None
        if sparse_needed:
            assert self.sparse_model is not None  # checked above
            (indices,), (values,) = self.sparse_model.query_fn([query.query_str or ""])
            sparse_vector = (list(indices), list(values))
        qe = _engine()
        dense_name, sparse_name, _ = _names()
        params = _search_params(kwargs.get("search_params"))
        requests = []
        with self._lock() as folder:
            if folder.shard is None:
                return VectorStoreQueryResult(nodes=[], similarities=[], ids=[])
            # An empty node_ids is no constraint in a query, as in QdrantVectorStore:
            # VectorStoreIndex passes [] when the store holds the nodes.
            flt = self._filter(
                node_ids=query.node_ids or None, doc_ids=query.doc_ids, filters=query.filters
            )
            if dense_needed:
                requests.append(
                    qe.QueryRequest(
                        limit=query.similarity_top_k,
                        query=qe.Query.Nearest(list(query.query_embedding or []), using=dense_name),
                        filter=flt,
                        params=params,
                        with_payload=True,
                        with_vector=False,
                    )
                )
            if sparse_vector is not None:
                requests.append(
                    qe.QueryRequest(
                        limit=query.sparse_top_k or query.similarity_top_k,
                        query=qe.Query.Nearest(
                            qe.SparseVector(indices=sparse_vector[0], values=sparse_vector[1]),
                            using=sparse_name,
                        ),
                        filter=flt,
                        with_payload=True,
                        with_vector=False,
                    )
                )
            responses = folder.shard.query_batch(qe.QueryBatchRequest(requests))
        results = [_result(points) for points in responses]
        if len(results) == 1:
            return results[0]
        return self.fusion(
            results[0],
            results[1],
            alpha=0.5 if query.alpha is None else query.alpha,
            top_k=query.hybrid_top_k or query.similarity_top_k,
        )

    # --- async: the sync methods in a worker thread ----------------------------------------

    async def async_add(self, nodes: Sequence[BaseNode], **kwargs: Any) -> list[str]:
        """Add nodes in a worker thread; see ``add``."""
        return await asyncio.to_thread(self.add, nodes, **kwargs)

    async def adelete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete a document's nodes in a worker thread; see ``delete``."""
        await asyncio.to_thread(self.delete, ref_doc_id, **delete_kwargs)

    async def adelete_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        **delete_kwargs: Any,
    ) -> None:
        """Delete nodes in a worker thread; see ``delete_nodes``."""
        await asyncio.to_thread(self.delete_nodes, node_ids, filters, **delete_kwargs)

    async def aclear(self) -> None:
        """Delete the collection in a worker thread; see ``clear``."""
        await asyncio.to_thread(self.clear)

    async def aget_nodes(
        self,
        node_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
        limit: int | None = None,
    ) -> list[BaseNode]:
        """Return nodes from a worker thread; see ``get_nodes``."""
        return await asyncio.to_thread(self.get_nodes, node_ids, filters, limit)

    async def aquery(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        """Query in a worker thread; see ``query``."""
        return await asyncio.to_thread(self.query, query, **kwargs)

    # --- internals -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self) -> Iterator[_Folder]:
        folder = self._folder
        with folder.lock:
            if folder.closed or self._finalizer is None or not self._finalizer.alive:
                msg = f"this QdrantEdgeVectorStore on {self.path} is closed: open a new one"
                raise RuntimeError(msg)
            yield folder

    def _check_sparse_model(self) -> None:
        config = self.collection_config
        if config is None or self.sparse_model is None:
            return
        if not config.sparse:
            msg = (
                f"the collection in {self.path} has no sparse vectors, so a hybrid store "
                f"cannot use it: open it without sparse_model, or clear() it and re-ingest"
            )
            raise ValueError(msg)
        needed = "idf" if self.sparse_model.requires_idf else None
        if config.sparse_modifier != needed:
            msg = (
                f"the collection in {self.path} stores sparse vectors with "
                f"{_modifier(config.sparse_modifier)}, but {self.sparse_model.model_name} "
                f"needs {_modifier(needed)}, or its scores are wrong: re-ingest into a new "
                f"folder"
            )
            raise ValueError(msg)

    def _write_record(self, record: dict[str, Any]) -> None:
        folder = self._folder
        _write_json(folder.path / _RECORD, {**record, "format": _RECORD_FORMAT})
        folder.record = record

    def _create(self, size: int) -> None:
        """Create the collection's shard for dense vectors of ``size`` values."""
        qe = _engine()
        dense_name, sparse_name, doc_key = _names()
        folder = self._folder
        sparse = self.sparse_model is not None
        modifier = (
            "idf" if self.sparse_model is not None and self.sparse_model.requires_idf else None
        )
        self._write_record(
            {
                **folder.record,
                "dense_size": size,
                "sparse": sparse,
                "sparse_modifier": modifier,
                "payload_types": {},
            }
        )
        config = _engine_config(size, sparse, modifier, dense_name, sparse_name)
        # Made aside and renamed into place: a kill leaves no half-made shard.
        for leftover in folder.path.glob(f".{_SHARD}.*"):
            shutil.rmtree(leftover, ignore_errors=True)
        staging = folder.path / f".{_SHARD}.new-{uuid.uuid4().hex}"
        shard = qe.EdgeShard.create(str(staging), config)
        # QdrantVectorStore indexes the document id, which delete() filters on.
        shard.update(qe.UpdateOperation.create_field_index(doc_key, qe.PayloadSchemaType.Keyword))
        shard.close()
        os.replace(staging, folder.path / _SHARD)
        _fsync_dir(folder.path)
        folder.shard = _load_shard(folder.path, folder.path / _SHARD)

    def _note_payload_types(self, payloads: list[dict[str, Any]]) -> None:
        """Record the JSON types of the metadata values, before they are written.

        A key whose values gain a type loses its payload index (built by a filter), which
        would no longer give the results of no index.
        """
        folder = self._folder
        known: dict[str, list[str]] = folder.record.get("payload_types", {})
        seen: dict[str, set[str]] = {}
        for payload in payloads:
            for key, value in payload.items():
                if key not in _NODE_KEYS:
                    seen.setdefault(key, set()).add(_json_type(value))
        grown = {
            key: sorted(set(known.get(key, ())) | types)
            for key, types in seen.items()
            if not types <= set(known.get(key, ()))
        }
        if not grown:
            return
        qe = _engine()
        indexed = folder.shard.info().payload_schema
        for key in grown:
            if key in indexed and key in known:
                folder.shard.update(qe.UpdateOperation.delete_field_index(key))
        self._write_record({**folder.record, "payload_types": {**known, **grown}})

    def _index_filtered_keys(self, keys: set[str]) -> None:
        """Give each filtered key a payload index, where it gives the results of no index."""
        folder = self._folder
        if folder.shard is None or not keys:
            return
        qe = _engine()
        types: dict[str, list[str]] = folder.record.get("payload_types", {})
        indexed = folder.shard.info().payload_schema
        for key in sorted(keys - set(indexed)):
            schema = _INDEX_FOR_TYPES.get(frozenset(types.get(key, ())))
            if schema is not None:
                logger.info("Building a %s payload index on %r in %s", schema, key, self.path)
                folder.shard.update(
                    qe.UpdateOperation.create_field_index(
                        key, getattr(qe.PayloadSchemaType, schema)
                    )
                )

    def _filter(
        self,
        *,
        node_ids: list[str] | None = None,
        doc_ids: list[str] | None = None,
        filters: MetadataFilters | None = None,
    ) -> Any:  # noqa: ANN401 - qdrant_edge.Filter or None
        """Build the engine's filter, as QdrantVectorStore builds Qdrant's (None: no filter)."""
        qe = _engine()
        _, _, doc_key = _names()
        must: list[Any] = []
        if doc_ids:
            must.append(qe.FieldCondition(doc_key, match=_match_any(doc_key, list(doc_ids))))
        if node_ids is not None:
            must.append(qe.HasIdCondition({_point_id(i, "node id") for i in node_ids}))
        if filters is not None and filters.filters:
            keys: set[str] = set()
            must.append(_subfilter(filters, keys))
            self._index_filtered_keys(keys)
        return qe.Filter(must=must) if must else None


def _modifier(modifier: str | None) -> str:
    return "no modifier" if modifier is None else f"the {modifier.upper()} modifier"


def _engine_config(
    size: int, sparse: bool, modifier: str | None, dense_name: str, sparse_name: str
) -> Any:  # noqa: ANN401 - qdrant_edge.EdgeConfig
    qe = _engine()
    sparse_vectors = None
    if sparse:
        sparse_vectors = {
            sparse_name: qe.EdgeSparseVectorParams(
                modifier=qe.Modifier.Idf if modifier == "idf" else None
            )
        }
    return qe.EdgeConfig(
        vectors={dense_name: qe.EdgeVectorParams(size=size, distance=qe.Distance.Cosine)},
        sparse_vectors=sparse_vectors,
        optimizers=qe.EdgeOptimizersConfig(
            indexing_threshold=math.ceil(EXACT_BELOW * size * 4 / 1024)  # KB of float32
        ),
    )


def _prepared(nodes: list[BaseNode]) -> tuple[list[str], list[list[float]], list[dict[str, Any]]]:
    """Return the nodes' point ids, embeddings and payloads, checked."""
    ids, payloads = [], []
    for i, node in enumerate(nodes):
        if not isinstance(node, BaseNode):
            msg = f"nodes[{i}] is {shown(node)}, not a LlamaIndex node"
            raise TypeError(msg)
        ids.append(_point_id(node.node_id, f"nodes[{i}].node_id"))
        if node.embedding is None:
            msg = (
                f"node {node.node_id!r} has no embedding: add nodes through a VectorStoreIndex "
                f"(which embeds them), or set node.embedding"
            )
            raise ValueError(msg)
        payloads.append(node_to_metadata_dict(node, remove_text=False, flat_metadata=False))
    sizes = {len(node.embedding or ()) for node in nodes}
    if len(sizes) > 1:
        first = len(nodes[0].embedding or ())
        odd = next(n for n in nodes if len(n.embedding or ()) != first)
        msg = (
            f"node {odd.node_id!r} has an embedding of {len(odd.embedding or ())} values, but "
            f"node {nodes[0].node_id!r} one of {first}: embed every node with one model"
        )
        raise ValueError(msg)
    embeddings = [node.embedding or [] for node in nodes]
    # Checked as one array, at C speed; the lists themselves go to the engine, which reads
    # lists fastest.
    finite = np.isfinite(np.asarray(embeddings, dtype=np.float32)).all(axis=1)
    if not finite.all() or not embeddings[0]:
        bad = nodes[int(np.argmin(finite))].node_id
        msg = f"node {bad!r} has an embedding that is empty or not finite (NaN or infinity)"
        raise ValueError(msg)
    return ids, embeddings, payloads


def _search_params(params: object) -> Any:  # noqa: ANN401 - qdrant_edge.SearchParams or None
    if params is None:
        return None
    if hasattr(params, "model_dump"):  # qdrant_client's SearchParams
        params = params.model_dump(exclude_none=True)
    if not isinstance(params, Mapping) or set(params) - {"hnsw_ef", "exact"}:
        msg = f"search_params takes hnsw_ef and exact, e.g. {{'exact': True}}, got {shown(params)}"
        raise ValueError(msg)
    return _engine().SearchParams(hnsw_ef=params.get("hnsw_ef"), exact=bool(params.get("exact")))


def _result(points: list[Any]) -> VectorStoreQueryResult:
    nodes, similarities, ids = [], [], []
    for point in points:
        nodes.append(metadata_dict_to_node(point.payload))
        similarities.append(float(point.score))
        ids.append(str(point.id))
    return VectorStoreQueryResult(nodes=nodes, similarities=similarities, ids=ids)


def _subfilter(filters: MetadataFilters, keys: set[str]) -> Any:  # noqa: ANN401 - edge Filter
    """Map ``filters`` as QdrantVectorStore's ``_build_subfilter`` maps them to Qdrant's.

    ``keys`` collects the keys that a payload index would serve.
    """
    qe = _engine()
    conditions = []
    for item in filters.filters:
        if isinstance(item, MetadataFilters):
            if item.filters:
                conditions.append(_subfilter(item, keys))
            continue
        conditions.append(_condition(item, keys))
    if filters.condition == FilterCondition.OR:
        return qe.Filter(should=conditions)
    if filters.condition == FilterCondition.NOT:
        return qe.Filter(must_not=conditions)
    return qe.Filter(must=conditions)


def _condition(item: MetadataFilter, keys: set[str]) -> Any:  # noqa: ANN401 - edge condition
    qe = _engine()
    key, value, operator = item.key, item.value, item.operator or FilterOperator.EQ
    ranges = {
        FilterOperator.LT: "lt",
        FilterOperator.GT: "gt",
        FilterOperator.LTE: "lte",
        FilterOperator.GTE: "gte",
    }
    if operator == FilterOperator.IS_EMPTY:
        return qe.IsEmptyCondition(key)
    if operator in (FilterOperator.TEXT_MATCH, FilterOperator.TEXT_MATCH_INSENSITIVE):
        if not isinstance(value, str):
            msg = f"filter on {key!r}: {operator.value} needs a str, got {shown(value)}"
            raise ValueError(msg)
        return qe.FieldCondition(key, match=qe.MatchText(value))
    keys.add(key)
    if operator == FilterOperator.EQ and isinstance(value, float):
        return qe.FieldCondition(key, range=qe.RangeFloat(gte=value, lte=value))
    if operator == FilterOperator.EQ:
        return qe.FieldCondition(key, match=qe.MatchValue(_scalar(key, operator, value)))
    if operator in ranges:
        if not isinstance(value, int | float):
            msg = f"filter on {key!r}: {operator.value} needs a number, got {shown(value)}"
            raise ValueError(msg)
        return qe.FieldCondition(key, range=qe.RangeFloat(**{ranges[operator]: float(value)}))
    if operator == FilterOperator.NE:
        return qe.FieldCondition(key, match=qe.MatchExcept([_scalar(key, operator, value)]))
    if operator in (FilterOperator.IN, FilterOperator.NIN):
        values = value if isinstance(value, list) else str(value).split(",")
        if operator == FilterOperator.IN:
            return qe.FieldCondition(key, match=_match_any(key, values))
        return qe.FieldCondition(key, match=qe.MatchExcept(_same_kind(key, values)))
    msg = (
        f"filter on {key!r}: operator {operator.value!r} is not one QdrantVectorStore maps; "
        f"use EQ, NE, GT, GTE, LT, LTE, IN, NIN, TEXT_MATCH, TEXT_MATCH_INSENSITIVE or IS_EMPTY"
    )
    raise NotImplementedError(msg)


def _scalar(key: str, operator: FilterOperator, value: object) -> str | int:
    if isinstance(value, str | int) and not isinstance(value, bool):
        return value
    msg = (
        f"filter on {key!r}: {operator.value} compares with a str or an int (a float with EQ), "
        f"got {shown(value)}"
    )
    raise ValueError(msg)


def _same_kind(key: str, values: list[Any]) -> list[str] | list[int]:
    if all(isinstance(v, str) for v in values) or all(
        isinstance(v, int) and not isinstance(v, bool) for v in values
    ):
        return values
    msg = f"filter on {key!r}: IN and NIN take all str or all int values, got {shown(values)}"
    raise ValueError(msg)


def _match_any(key: str, values: list[Any]) -> Any:  # noqa: ANN401 - qdrant_edge.MatchAny
    return _engine().MatchAny(_same_kind(key, values))


# --- moving up to a server --------------------------------------------------------------------


def push_to_qdrant(
    source: str | os.PathLike[str] | QdrantEdgeVectorStore,
    client: QdrantClient,
    collection_name: str,
    *,
    batch_size: int = 256,
    progress: Callable[[int, int], None] | None = None,
) -> int:
    """Copy an edge collection's points into a Qdrant collection, resumably.

    The target is created, if missing, as ``QdrantVectorStore`` creates one: a cosine
    ``text-dense`` vector of the source's size, a ``text-sparse-new`` sparse vector with the
    source's IDF modifier if it has sparse vectors, and a keyword index on ``doc_id``; its
    collection metadata is the store's (``read_metadata()``). Points
    keep their ids, vectors and payloads, so ``QdrantVectorStore`` (or
    ``qdrant_hybrid_store``) on the target returns what the edge store returns. Points whose
    id the target already has are skipped: after a failure, running it again completes the
    copy, and nothing is duplicated. Re-push into a new collection if already-copied points
    have changed since.

    Args:
        source: The edge collection's folder, or an open ``QdrantEdgeVectorStore``.
        client: The target Qdrant: ``QdrantClient(url=..., api_key=...)``.
        collection_name: The target collection.
        batch_size: Points per request to the target.
        progress: Called with (points done, points in all) after each batch.

    Returns:
        How many points were copied (those skipped as already there are not counted).

    Raises:
        ValueError: The source has no collection, or the target exists with vectors that
            differ from the source's.
    """
    from qdrant_client import QdrantClient
    from qdrant_client.http import models

    if not isinstance(client, QdrantClient):
        msg = f"client must be a QdrantClient(...), got {shown(client)}"
        raise TypeError(msg)
    if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size < 1:
        msg = f"batch_size must be an int >= 1, got {shown(batch_size)}"
        raise ValueError(msg)
    if isinstance(source, QdrantEdgeVectorStore):
        return _push(source, client, collection_name, batch_size, progress, models)
    with QdrantEdgeVectorStore(source) as store:
        return _push(store, client, collection_name, batch_size, progress, models)


def _push(
    store: QdrantEdgeVectorStore,
    client: QdrantClient,
    collection_name: str,
    batch_size: int,
    progress: Callable[[int, int], None] | None,
    models: Any,  # noqa: ANN401 - qdrant_client.http.models, imported lazily
) -> int:
    config = store.collection_config
    if config is None:
        msg = f"{store.path} holds no collection yet: nothing to push"
        raise ValueError(msg)
    dense_name, sparse_name, doc_key = _names()
    modifier = models.Modifier.IDF if config.sparse_modifier == "idf" else None
    if client.collection_exists(collection_name):
        _check_target(client, collection_name, config, modifier, dense_name, sparse_name)
    else:
        client.create_collection(
            collection_name,
            vectors_config={
                dense_name: models.VectorParams(
                    size=config.dense_size, distance=models.Distance.COSINE
                )
            },
            sparse_vectors_config=(
                {
                    sparse_name: models.SparseVectorParams(
                        index=models.SparseIndexParams(), modifier=modifier
                    )
                }
                if config.sparse
                else None
            ),
            # What the store records of the collection (the command line: its models).
            metadata=store.read_metadata() or None,
        )
        with warnings.catch_warnings():
            # qdrant-client's local mode (a stand-in for a server) has no payload indexes and
            # warns so on every call; a server builds the index.
            warnings.filterwarnings("ignore", "Payload indexes have no effect in the local")
            client.create_payload_index(
                collection_name, field_name=doc_key, field_schema=models.PayloadSchemaType.KEYWORD
            )
    total = store.count()
    done = copied = 0
    batch: list[EdgePoint] = []

    def send(batch: list[EdgePoint]) -> int:
        there = {
            str(p.id)
            for p in client.retrieve(
                collection_name, [p.id for p in batch], with_payload=False, with_vectors=False
            )
        }
        points = []
        for p in batch:
            if p.id in there:
                continue
            vector: dict[str, Any] = {dense_name: p.dense}
            if p.sparse is not None:
                vector[sparse_name] = models.SparseVector(indices=p.sparse[0], values=p.sparse[1])
            points.append(models.PointStruct(id=p.id, vector=vector, payload=p.payload))
        if points:
            client.upsert(collection_name, points=points, wait=True)
        return len(points)

    for point in store.iter_points(batch_size, with_vectors=True):
        batch.append(point)
        if len(batch) == batch_size:
            copied += send(batch)
            done += len(batch)
            batch = []
            if progress is not None:
                progress(done, total)
    if batch:
        copied += send(batch)
        done += len(batch)
        if progress is not None:
            progress(done, total)
    return copied


def _check_target(
    client: QdrantClient,
    name: str,
    config: EdgeCollectionConfig,
    modifier: Any,  # noqa: ANN401 - qdrant_client's Modifier or None
    dense_name: str,
    sparse_name: str,
) -> None:
    params = client.get_collection(name).config.params
    vectors = params.vectors if isinstance(params.vectors, dict) else {}
    dense = vectors.get(dense_name)
    problem = None
    if dense is None or dense.size != config.dense_size or dense.distance.value != "Cosine":
        problem = f"no cosine {dense_name!r} vector of {config.dense_size} values"
    elif config.sparse:
        sparse = (params.sparse_vectors or {}).get(sparse_name)
        if sparse is None or sparse.modifier != modifier:
            problem = f"no {sparse_name!r} sparse vector with {_modifier(config.sparse_modifier)}"
    if problem is not None:
        msg = (
            f"Qdrant collection {name!r} exists with {problem}, as the edge collection needs: "
            f"push into a new collection name, or delete that one first"
        )
        raise ValueError(msg)
