"""Ingest files into a Qdrant collection so that running it again changes only what changed.

What the command line's ``ingest`` runs. Every chunk's point id is derived from its file's
path, its position and the text it embeds (with the chunk settings), and each point keeps its
file's path as ``doc_id`` (LlamaIndex's ``ref_doc_id``). So the collection itself is the
bookkeeping, the same on embedded Qdrant and on a server: a chunk already stored is not
embedded again, a changed file's old chunks are deleted once its new ones are written, and an
ingest killed at any point leaves points that the next run keeps, completes or deletes.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import logging
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index.core import SimpleDirectoryReader
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.readers.base import BaseReader
from llama_index.core.schema import BaseNode, Document, MetadataMode

from .qdrant import stored_chunk_ids

if TYPE_CHECKING:
    from llama_index.core.base.embeddings.base import BaseEmbedding
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient

logger = logging.getLogger(__name__)

# Read as text by SimpleDirectoryReader itself.
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst", ".json")
# Read by llama-index-readers-file: PDF pages with pypdf, HTML with BeautifulSoup, CSV rows.
FILE_READER_SUFFIXES = (".pdf", ".html", ".htm", ".csv")
SUFFIXES = TEXT_SUFFIXES + FILE_READER_SUFFIXES
INSTALL_HINT = "pip install 'llama-index-fastembed-rerank[cli]'"
# Chunks embedded and written per step: the unit that a kill can cut.
WRITE_BATCH = 256
# Chunk ids live in their own namespace, so no other uuid5 user can collide with them.
_CHUNK_NAMESPACE = uuid.UUID("0f4c8a3e-5d1b-5b8e-9a55-6c7e1d0b2f19")
# The metadata embedded (and reranked) with a chunk's text; the rest is payload only. Not the
# absolute path SimpleDirectoryReader embeds: vectors would depend on where a folder lives.
_KEEP_IN_TEXT = ("file_name", "page_label")


@dataclass
class IngestReport:
    """What an ingest did; files are counted once each."""

    files: int = 0
    unchanged: int = 0
    chunks_written: int = 0
    chunks_removed: int = 0
    files_pruned: int = 0
    skipped: list[tuple[Path, str]] = field(default_factory=list)


@dataclass
class _Plan:
    source: str
    new: list[BaseNode]
    stale: list[str]


def find_files(paths: Iterable[str | Path]) -> list[Path]:
    """Return the files to ingest under ``paths``, absolute and sorted.

    Folders are walked recursively by SimpleDirectoryReader, hidden files and folders left
    out; files of other types are ignored. A file named directly is taken whatever its type
    (an unsupported one is reported when read).

    Raises:
        ValueError: A path does not exist.
    """
    found: set[Path] = set()
    for given in paths:
        path = Path(given).expanduser()
        if not path.exists():
            msg = f"No such file or folder: {str(given)!r}"
            raise ValueError(msg)
        path = path.resolve()
        if not path.is_dir():
            found.add(path)
            continue
        try:
            listed = SimpleDirectoryReader(input_dir=str(path), recursive=True).input_files
        except ValueError:  # "No files found in ..."
            listed = []
        found.update(Path(f).resolve() for f in listed if Path(f).suffix.lower() in SUFFIXES)
    return sorted(found)


def ingest(
    paths: Iterable[str | Path],
    client: QdrantClient,
    collection: str,
    open_store: Callable[[], QdrantVectorStore],
    embed_model: BaseEmbedding,
    *,
    chunk_size: int,
    chunk_overlap: int,
    prune: bool = False,
    progress: Callable[[Iterable[Any], str, int], Iterator[Any]] | None = None,
) -> IngestReport:
    """Bring the collection in line with the files under ``paths``.

    Args:
        paths: Files and folders (walked recursively).
        client: The Qdrant client.
        collection: The collection; it need not exist yet.
        open_store: Returns the collection's store, creating the collection if need be;
            called only once there is something to write, after every file was read.
        embed_model: The dense embedding model; the store adds sparse vectors if hybrid.
        chunk_size: Tokens per chunk (SentenceSplitter's count).
        chunk_overlap: Tokens shared by neighbouring chunks.
        prune: Also delete the chunks of files under ``paths`` that no longer exist.
        progress: Wraps an iterable to show progress: ``progress(items, description, total)``.

    Returns:
        What was read, written, deleted and skipped.

    Raises:
        ValueError: A path does not exist, or the chunk settings are invalid.
    """
    wrap = progress or (lambda items, _description, _total: iter(items))
    roots = [Path(p).expanduser().resolve() for p in paths]
    files = find_files(roots)
    report = IngestReport(files=len(files))
    splitter = SentenceSplitter(chunk_size=chunk_size, chunk_overlap=chunk_overlap)
    stored = stored_chunk_ids(client, collection) if client.collection_exists(collection) else {}

    plans: list[_Plan] = []
    splitter_warnings: list[str] = []
    for path in wrap(files, "Reading", len(files)):
        source = str(path)
        try:
            documents = _read(path)
        except Exception as e:  # a reader's failure is the file's, not the run's
            # SimpleDirectoryReader wraps a reader's error as "Error loading file".
            cause = e.__cause__ if str(e) == "Error loading file" else None
            reason = str(cause or e) or type(e).__name__
            report.skipped.append((path, reason))
            continue
        nodes = _split(splitter, source, documents, chunk_size, chunk_overlap, splitter_warnings)
        have = stored.pop(source, set())
        new = [n for n in nodes if n.node_id not in have]
        stale = sorted(have - {n.node_id for n in nodes})
        if new or stale:
            plans.append(_Plan(source, new, stale))
        else:
            report.unchanged += 1
    if splitter_warnings:
        logger.warning(splitter_warnings[0])
    # Files that failed to read keep their chunks; only files gone from disk are pruned.
    skipped = {str(p) for p, _ in report.skipped}
    gone = {
        source: ids
        for source, ids in stored.items()
        if prune and source not in skipped and _under(source, roots) and not Path(source).exists()
    }

    if not plans and not gone:
        return report
    store = open_store()
    pipeline = IngestionPipeline(
        transformations=[embed_model], vector_store=store, disable_cache=True
    )
    pending = [n for plan in plans for n in plan.new]
    # A file's stale chunks go once its new ones are all written: a reader never sees it empty.
    last_write = {plan.source: 0 for plan in plans}
    for position, node in enumerate(pending, start=1):
        last_write[node.ref_doc_id or ""] = position
    written = 0
    deleted: set[str] = set()
    batches = range(0, len(pending), WRITE_BATCH)
    for start in wrap(batches, "Embedding", len(batches)):
        batch = pending[start : start + WRITE_BATCH]
        pipeline.run(nodes=batch)
        written += len(batch)
        report.chunks_written += len(batch)
        report.chunks_removed += _delete_done(store, plans, last_write, written, deleted)
    report.chunks_removed += _delete_done(store, plans, last_write, written, deleted)
    for ids in gone.values():
        _delete(store, sorted(ids))
        report.chunks_removed += len(ids)
    report.files_pruned = len(gone)
    return report


def chunk_id(source: str, document_index: int, embedded_text: str, settings: str, i: int) -> str:
    """Return the point id of chunk ``i`` of a document: the same input, the same id."""
    key = json.dumps([source, document_index, embedded_text, settings], ensure_ascii=False)
    digest = hashlib.sha256(key.encode()).hexdigest()
    return str(uuid.uuid5(_CHUNK_NAMESPACE, f"{digest}:{i}"))


def _read(path: Path) -> list[Document]:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        msg = f"{suffix or 'no suffix'} is not a supported type ({', '.join(SUFFIXES)})"
        raise ValueError(msg)
    extractors: dict[str, BaseReader] = {}
    if suffix in FILE_READER_SUFFIXES:
        extractors = _file_readers(suffix)
    # errors="strict": a file that is not UTF-8 text is reported, not read as mojibake.
    reader = SimpleDirectoryReader(
        input_files=[str(path)], file_extractor=extractors, errors="strict", raise_on_error=True
    )
    documents = reader.load_data()
    for document in documents:
        document.id_ = str(path)  # ref_doc_id: VectorStoreIndex.delete_ref_doc(path) works
        hidden = [k for k in document.metadata if k not in _KEEP_IN_TEXT]
        document.excluded_embed_metadata_keys = hidden
        document.excluded_llm_metadata_keys = hidden
    return documents


def _file_readers(suffix: str) -> dict[str, BaseReader]:
    try:
        from llama_index.readers.file import HTMLTagReader, PagedCSVReader, PDFReader
    except ImportError as e:
        msg = f"reading {suffix} files needs llama-index-readers-file: {INSTALL_HINT}"
        raise ImportError(msg) from e
    readers: dict[str, BaseReader] = {
        ".pdf": PDFReader(),  # one document per page, with its page_label
        ".html": HTMLTagReader(tag="body"),
        ".htm": HTMLTagReader(tag="body"),
        ".csv": PagedCSVReader(),  # one document per row, "column: value" lines
    }
    return {suffix: readers[suffix]}


def _split(
    splitter: SentenceSplitter,
    source: str,
    documents: list[Document],
    chunk_size: int,
    chunk_overlap: int,
    warnings: list[str],
) -> list[BaseNode]:
    settings = f"SentenceSplitter({chunk_size},{chunk_overlap})"
    nodes: list[BaseNode] = []
    for index, document in enumerate(documents):
        text = document.get_content(metadata_mode=MetadataMode.EMBED)
        splitter.id_func = lambda i, _doc, index=index, text=text: chunk_id(
            source, index, text, settings, i
        )
        # SentenceSplitter prints a warning (metadata close to the chunk size) for every
        # document, on stdout; the caller logs it once.
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            nodes.extend(splitter.get_nodes_from_documents([document]))
        warnings.extend(printed.getvalue().splitlines())
    return [n for n in nodes if n.get_content(metadata_mode=MetadataMode.NONE).strip()]


def _delete_done(
    store: QdrantVectorStore,
    plans: list[_Plan],
    last_write: dict[str, int],
    written: int,
    deleted: set[str],
) -> int:
    removed = 0
    for plan in plans:
        if plan.source not in deleted and last_write[plan.source] <= written:
            _delete(store, plan.stale)
            deleted.add(plan.source)
            removed += len(plan.stale)
    return removed


def _delete(store: QdrantVectorStore, ids: list[str]) -> None:
    for start in range(0, len(ids), WRITE_BATCH):
        store.delete_nodes(node_ids=ids[start : start + WRITE_BATCH])


def _under(source: str, roots: list[Path]) -> bool:
    path = Path(source)
    return any(path == root or path.is_relative_to(root) for root in roots)
