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
import errno
import hashlib
import io
import json
import logging
import os
import re
import stat
import uuid
from collections.abc import Callable, Iterable, Iterator, Sized
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index.core import SimpleDirectoryReader
from llama_index.core.ingestion import IngestionPipeline
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.node_parser.text.utils import split_by_sentence_tokenizer_internal
from llama_index.core.readers.base import BaseReader
from llama_index.core.schema import BaseNode, Document, MetadataMode
from llama_index.core.utils import get_tokenizer
from nltk.tokenize.punkt import PunktLanguageVars, PunktSentenceTokenizer, PunktToken

try:  # nltk 3.10 runs every regular expression under a wall-clock limit
    from nltk import redos
except ImportError:  # pragma: no cover - earlier nltk: plain `re`, no limit to lift
    redos = None


if TYPE_CHECKING:
    from llama_index.core.base.embeddings.base import BaseEmbedding

    from .embedding import FastEmbedEmbedding
    from .qdrant import Collection
    from .sparse import FastEmbedSparseEmbedding

logger = logging.getLogger(__name__)

# Read as text by SimpleDirectoryReader itself.
TEXT_SUFFIXES = (".txt", ".md", ".markdown", ".rst", ".json")
# Read with the [cli] extra: PDF pages with pypdf and CSV rows (llama-index-readers-file), the
# main content of HTML pages with trafilatura.
FILE_READER_SUFFIXES = (".pdf", ".html", ".htm", ".csv")
SUFFIXES = TEXT_SUFFIXES + FILE_READER_SUFFIXES
INSTALL_HINT = "pip install 'llama-index-fastembed-rerank[cli]'"
# Chunks embedded and written per step: the unit that a kill can cut.
WRITE_BATCH = 256
# Texts up to this many characters are chunked by SentenceSplitter as they are; a longer one
# in sections of at most this length, cut at paragraph breaks, so that no step of the splitter
# ever sees more (its work and memory per call grow with the text it is given).
SECTION_CHARS = 1 << 20
# Chunk ids live in their own namespace, so no other uuid5 user can collide with them.
_CHUNK_NAMESPACE = uuid.UUID("0f4c8a3e-5d1b-5b8e-9a55-6c7e1d0b2f19")
# Characters of a chunk id's key hashed per step, so that a long text is never copied whole.
_DIGEST_STEP = 1 << 16
# The least metadata a chunk embeds: its file's name, of one character.
_LEAST_METADATA = "file_name: x"
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
    """Each file or folder entry that was not read, with the reason and what to do."""
    ignored: int = 0
    """Entries of the folders walked that are hidden or of no supported type."""


@dataclass
class FoundFiles:
    """What a walk of the given paths found."""

    files: list[Path] = field(default_factory=list)
    """The files to read, absolute, symbolic links resolved, sorted."""
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    """Entries that cannot be read, each with the reason and what to do."""
    ignored: int = 0
    """Entries left out by design: hidden ones, and files of no supported type."""


@dataclass(frozen=True)
class ModelTokens:
    """An embedding model's own tokenizer, so that chunks are counted in the model's tokens."""

    model_name: str
    window: int
    """Most tokens the model reads; fastembed truncates a longer text to it."""
    special: int
    """Tokens the model's tokenizer adds to every text (``[CLS]`` and ``[SEP]`` for BERT)."""
    tokens: Callable[[str], Sized]
    """Return a text's tokens, without the special ones."""

    @property
    def room(self) -> int:
        """Most tokens of a chunk (its embedded metadata included) that the model reads."""
        return self.window - self.special


def model_tokens(embed_model: BaseEmbedding) -> ModelTokens | None:
    """Return the tokenizer and window of a ``FastEmbedEmbedding``'s model, loading it.

    None for another embedding class, or a model whose tokenizer does not truncate.
    """
    from . import _fastembed
    from .embedding import FastEmbedEmbedding

    if not isinstance(embed_model, FastEmbedEmbedding):
        return None
    tokenizer = _fastembed.tokenizer(embed_model._model())
    window = (getattr(tokenizer, "truncation", None) or {}).get("max_length")
    if tokenizer is None or not window:
        return None
    # fastembed's tokenizer truncates and pads; chunks are counted on a copy that does neither.
    untruncated = type(tokenizer).from_str(tokenizer.to_str())
    untruncated.no_truncation()
    untruncated.no_padding()
    return ModelTokens(
        model_name=embed_model.model_name,
        window=int(window),
        special=len(untruncated.encode("").ids),
        tokens=lambda text: untruncated.encode(text, add_special_tokens=False).ids,
    )


@dataclass
class IngestProgress:
    """Where an ingest stands: what ``ingest``'s ``progress`` callback is given, as it goes."""

    files: int = 0
    """Files to read."""
    files_read: int = 0
    chunks_found: int = 0
    """New chunks found so far in the files read, to be embedded."""
    chunks_written: int = 0


def check_paths(paths: Iterable[str | Path]) -> None:
    """Fail at once where a path given to ingest does not exist; walk nothing.

    Raises:
        ValueError: A path does not exist (a broken symbolic link counts as one).
    """
    for given in paths:
        path = Path(given).expanduser()
        try:
            path.stat()
        except OSError as e:
            if e.errno not in (errno.ENOENT, errno.ENOTDIR):
                continue  # there, but not readable: find_files reports it
            link = f" (a symbolic link to {os.readlink(path)!r})" if os.path.islink(path) else ""
            msg = f"No such file or folder: {str(given)!r}{link}"
            raise ValueError(msg) from None


def find_files(paths: Iterable[str | Path]) -> FoundFiles:
    """Walk ``paths``: the files to ingest, and the entries that cannot be read.

    Folders are walked recursively, following symbolic links, each folder once. In a folder,
    hidden entries (``.name``) are left out, and so are entries whose name ends in no
    supported suffix (``SUFFIXES``); every other entry is a file to read or is reported:
    a folder or file that cannot be listed or opened, a broken symbolic link or a loop, a
    named pipe, socket or device, a name that is not UTF-8. A path named directly is taken
    whatever its name (an unsupported type is reported when read).

    Raises:
        ValueError: A path does not exist.
    """
    paths = list(paths)
    check_paths(paths)
    walk = _Walk()
    for given in paths:
        path = Path(os.path.abspath(Path(given).expanduser()))
        walk.visit(Path(os.path.realpath(path)) if os.path.isdir(path) else path, named=True)
    walk.found.files = sorted(walk.files)
    return walk.found


class _Walk:
    def __init__(self) -> None:
        self.found = FoundFiles()
        self.files: set[Path] = set()
        self.folders: set[tuple[int, int]] = set()

    def skip(self, path: Path, reason: str) -> None:
        self.found.skipped.append((path, reason))

    def visit(self, path: Path, *, named: bool = False) -> None:
        wanted = named or path.suffix.lower() in SUFFIXES
        try:
            info = path.stat()
        except OSError as e:
            if e.errno == errno.EACCES and not named:
                raise  # the folder's, reported once by walk()
            # What a link points to is unknown: it is reported if its name could be a
            # folder's (no suffix) or a file's of a supported type.
            if wanted or not path.suffix:
                self.skip(path, _unreachable(path, e))
            else:
                self.found.ignored += 1
            return
        if stat.S_ISDIR(info.st_mode):
            self.walk(path, (info.st_dev, info.st_ino))
        elif not wanted:
            self.found.ignored += 1
        elif not stat.S_ISREG(info.st_mode):
            self.skip(path, f"{_kind(info.st_mode)}, not a regular file: only files are read")
        elif not _utf8(path):
            self.skip(path, f"its name is not UTF-8: {_RENAME}")
        else:
            self.files.add(Path(os.path.realpath(path)))

    def walk(self, folder: Path, key: tuple[int, int]) -> None:
        if key in self.folders:  # a link to a folder walked already, or to its own parent
            return
        self.folders.add(key)
        if not _utf8(folder):
            self.skip(folder, f"the folder's name is not UTF-8: {_RENAME}")
            return
        try:
            with os.scandir(folder) as entries:
                names = sorted(entry.name for entry in entries)
        except OSError as e:
            self.skip(folder, f"cannot list this folder: {_reason(e)}")
            return
        for name in names:
            if name.startswith("."):
                self.found.ignored += 1
                continue
            try:
                self.visit(folder / name)
            except PermissionError as e:  # the folder can be listed, not entered
                self.skip(folder, f"cannot open the entries of this folder: {_reason(e)}")
                return


_RENAME = "rename it (convmv converts names from another encoding)"


def _utf8(path: Path) -> bool:
    try:
        str(path).encode()
    except UnicodeEncodeError:  # undecodable bytes, kept as surrogates by os.fsdecode
        return False
    return True


def _kind(mode: int) -> str:
    for test, kind in (
        (stat.S_ISFIFO, "a named pipe (FIFO)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def _unreachable(path: Path, error: OSError) -> str:
    if os.path.islink(path):
        try:
            target = os.readlink(path)
        except OSError:
            return _reason(error)
        if error.errno == errno.ELOOP:
            return f"a symbolic link loop ({target!r}): fix or remove the link"
        if error.errno in (errno.ENOENT, errno.ENOTDIR):
            return f"a symbolic link to {target!r}, which does not exist: fix or remove the link"
    if error.errno in (errno.ENOENT, errno.ENOTDIR):
        return "it was removed during the ingest: ingest again to take it, or its removal"
    return _reason(error)


def _reason(error: BaseException) -> str:
    """Say what went wrong with a file, and what to do, without repeating its path."""
    if isinstance(error, OSError) and error.strerror:
        fix = {
            errno.EACCES: "give this user read permission, or run as a user who has it",
            errno.EPERM: "give this user read permission, or run as a user who has it",
            errno.ENOENT: "it was removed during the ingest: ingest again to take it, or "
            "its removal",
            errno.EIO: "the disk or file system failed to read it: check it (dmesg)",
        }.get(error.errno or 0)
        return f"{error.strerror}: {fix}" if fix else error.strerror
    if isinstance(error, UnicodeDecodeError):
        return (
            f"not UTF-8 text ({error}): convert it to UTF-8 (iconv -f ENCODING -t UTF-8) or "
            f"leave it out"
        )
    if isinstance(error, MemoryError):
        return "not enough memory to read and chunk it: split it into smaller files"
    return str(error) or type(error).__name__


def ingest(
    paths: Iterable[str | Path],
    collection: Collection,
    embed_model: FastEmbedEmbedding,
    sparse_model: FastEmbedSparseEmbedding | None = None,
    *,
    chunk_size: int,
    chunk_overlap: int,
    prune: bool = False,
    progress: Callable[[IngestProgress], object] | None = None,
    tokenizer: ModelTokens | None = None,
) -> IngestReport:
    """Bring the collection in line with the files under ``paths``.

    Files are read one at a time; their new chunks are embedded and written in batches of
    ``WRITE_BATCH`` as they come, so memory holds one file's chunks and one batch. The
    collection is made (with its record of the models) when the first chunk is written.

    Args:
        paths: Files and folders (walked recursively).
        collection: Where the chunks go: a folder of Qdrant Edge or a server's collection; it
            need not exist yet.
        embed_model: The dense embedding model.
        sparse_model: The sparse model, for a hybrid collection.
        chunk_size: Most tokens per chunk, its embedded metadata (the file's name) included;
            ``tokenizer.room`` fits the model's window.
        chunk_overlap: Tokens shared by neighbouring chunks.
        prune: Also delete the chunks of files under ``paths`` that no longer exist.
        progress: Called with where the ingest stands after each file read and each batch
            written.
        tokenizer: Count tokens as the embedding model does (``model_tokens(embed_model)``);
            None counts with tiktoken's ``cl100k_base``, as SentenceSplitter does by default.

    Returns:
        What was read, written, deleted and skipped.

    Raises:
        ValueError: A path does not exist, or the chunk settings are invalid.
    """
    roots = [Path(os.path.realpath(Path(p).expanduser())) for p in paths]
    found = find_files(roots)
    report = IngestReport(
        files=len(found.files), skipped=list(found.skipped), ignored=found.ignored
    )
    count = tokenizer.tokens if tokenizer is not None else get_tokenizer()
    chunker = splitter(chunk_size, chunk_overlap, count)
    settings = f"SentenceSplitter({chunk_size},{chunk_overlap})"
    if tokenizer is not None:  # other counts, other chunks: other ids
        settings = f"SentenceSplitter({chunk_size},{chunk_overlap},{tokenizer.model_name})"
    least = len(count(_LEAST_METADATA))
    if chunk_size <= least:
        msg = (
            f"chunk size {chunk_size} leaves no room for text beside the file name that each "
            f"chunk embeds ({_LEAST_METADATA!r} alone is {least} tokens): use a larger chunk size"
        )
        raise ValueError(msg)
    stored = collection.stored_chunk_ids()
    writer = _Writer(collection, embed_model, sparse_model, report)
    status = IngestProgress(files=len(found.files))

    def told() -> None:
        status.chunks_written = report.chunks_written
        if progress is not None:
            progress(status)

    splitter_warnings: list[str] = []
    for path in found.files:
        source = str(path)
        try:
            documents = _read(path)
            nodes = _split(chunker, source, documents, settings, splitter_warnings)
        except Exception as e:  # a file's failure is the file's, not the run's
            # SimpleDirectoryReader wraps a reader's error as "Error loading file".
            cause = e.__cause__ if str(e) == "Error loading file" else None
            report.skipped.append((path, _reason(cause or e)))
            nodes = None
        status.files_read += 1
        if nodes is not None:
            have = stored.pop(source, set())
            new = [n for n in nodes if n.node_id not in have]
            stale = sorted(have - {n.node_id for n in nodes})
            if new or stale:
                status.chunks_found += len(new)
                writer.replace(source, new, stale, told)
            else:
                report.unchanged += 1
        told()
    writer.flush(told)
    if splitter_warnings:
        logger.warning(splitter_warnings[0])
    # Entries that failed to read keep their chunks; only files gone from disk are pruned.
    kept = [p for p, _ in report.skipped]
    gone = {
        source: ids
        for source, ids in stored.items()
        if prune and _under(source, roots) and not _under(source, kept) and _gone(source)
    }
    for ids in gone.values():
        writer.delete(sorted(ids))
    report.files_pruned = len(gone)
    return report


class _Writer:
    """Embeds and writes new chunks in batches; deletes a file's old chunks after its new ones.

    A file's stale chunks go only once all its new ones are written, so a reader never finds
    it empty, and an ingest killed at any point leaves points that the next run keeps,
    completes or deletes.
    """

    def __init__(
        self,
        collection: Collection,
        embed_model: FastEmbedEmbedding,
        sparse_model: FastEmbedSparseEmbedding | None,
        report: IngestReport,
    ) -> None:
        self.collection = collection
        self.embed_model = embed_model
        self.sparse_model = sparse_model
        self.report = report
        self.pending: list[BaseNode] = []
        # Per file whose new chunks are not all written: how many are left, and its stale ids.
        self.waiting: dict[str, tuple[int, list[str]]] = {}
        self._pipeline: IngestionPipeline | None = None

    def pipeline(self) -> IngestionPipeline:
        """Return the pipeline to the collection's store, making the collection if need be."""
        if self._pipeline is None:
            if not self.collection.exists():
                self.collection.create(self.embed_model, self.sparse_model)
            store = self.collection.store(self.sparse_model)
            self._pipeline = IngestionPipeline(
                transformations=[self.embed_model], vector_store=store, disable_cache=True
            )
        return self._pipeline

    def replace(
        self, source: str, new: list[BaseNode], stale: list[str], written: Callable[[], object]
    ) -> None:
        """Write ``source``'s new chunks (in full batches, as they fill), then drop ``stale``."""
        if not new:
            self.delete(stale)
            return
        self.waiting[source] = (len(new), stale)
        self.pending.extend(new)
        while len(self.pending) >= WRITE_BATCH:
            self._write(self.pending[:WRITE_BATCH], written)

    def flush(self, written: Callable[[], object]) -> None:
        """Write what is pending."""
        while self.pending:
            self._write(self.pending[:WRITE_BATCH], written)

    def delete(self, ids: list[str]) -> None:
        """Delete the points ``ids`` from the collection."""
        if not ids:
            return
        store = self.pipeline().vector_store
        assert store is not None  # set above
        for start in range(0, len(ids), WRITE_BATCH):
            store.delete_nodes(node_ids=ids[start : start + WRITE_BATCH])
        self.report.chunks_removed += len(ids)

    def _write(self, batch: list[BaseNode], written: Callable[[], object]) -> None:
        self.pipeline().run(nodes=batch)
        del self.pending[: len(batch)]
        self.report.chunks_written += len(batch)
        for node in batch:
            source = node.ref_doc_id or ""
            left, stale = self.waiting[source]
            if left > 1:
                self.waiting[source] = (left - 1, stale)
            else:
                del self.waiting[source]
                self.delete(stale)
        written()


def chunk_id(source: str, document_index: int, embedded_text: str, settings: str, i: int) -> str:
    """Return the point id of chunk ``i`` of a document: the same input, the same id.

    The id hashes ``json.dumps([source, document_index, embedded_text, settings])``; the
    document's part is hashed once for all of its chunks.
    """
    return _chunk_uuid(_digest(source, document_index, embedded_text, settings), i)


def _digest(source: str, document_index: int, embedded_text: str, settings: str) -> str:
    """Return the sha256 of the JSON list ``[source, document_index, embedded_text, settings]``.

    JSON escapes a string character by character, so the text is encoded a slice at a time.
    """
    head = json.dumps([source, document_index], ensure_ascii=False)
    digest = hashlib.sha256(f'{head[:-1]}, "'.encode())
    for start in range(0, len(embedded_text), _DIGEST_STEP):
        piece = embedded_text[start : start + _DIGEST_STEP]
        digest.update(json.dumps(piece, ensure_ascii=False)[1:-1].encode())
    digest.update(f'", {json.dumps(settings, ensure_ascii=False)}]'.encode())
    return digest.hexdigest()


def _chunk_uuid(digest: str, i: int) -> str:
    return str(uuid.uuid5(_CHUNK_NAMESPACE, f"{digest}:{i}"))


def _read(path: Path) -> list[Document]:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        msg = (
            f"{suffix or 'no suffix'} is not a supported type ({', '.join(SUFFIXES)}): "
            f"rename it if it is one of them, or leave it out"
        )
        raise ValueError(msg)
    extractors: dict[str, BaseReader] = {}
    if suffix in FILE_READER_SUFFIXES:
        extractors = _file_readers(suffix)
    before = path.stat()
    # errors="strict": a file that is not UTF-8 text is reported, not read as mojibake.
    reader = SimpleDirectoryReader(
        input_files=[str(path)], file_extractor=extractors, errors="strict", raise_on_error=True
    )
    documents = reader.load_data()
    after = path.stat()
    if (before.st_size, before.st_mtime_ns) != (after.st_size, after.st_mtime_ns):
        msg = "it changed while it was read: ingest again once it is written"
        raise ValueError(msg)
    for document in documents:
        if suffix in TEXT_SUFFIXES and "\x00" in document.text:
            msg = (
                "it holds NUL bytes, so it is not UTF-8 text (UTF-16? convert it: iconv -f "
                "UTF-16 -t UTF-8), or leave it out"
            )
            raise ValueError(msg)
        document.id_ = str(path)  # ref_doc_id: VectorStoreIndex.delete_ref_doc(path) works
        hidden = [k for k in document.metadata if k not in _KEEP_IN_TEXT]
        document.excluded_embed_metadata_keys = hidden
        document.excluded_llm_metadata_keys = hidden
    return documents


def _file_readers(suffix: str) -> dict[str, BaseReader]:
    if suffix in (".html", ".htm"):
        try:
            import trafilatura  # noqa: F401
        except ImportError as e:
            msg = f"reading {suffix} files needs trafilatura: {INSTALL_HINT}"
            raise ImportError(msg) from e
        return {suffix: _MainContentReader()}
    try:
        from llama_index.readers.file import PagedCSVReader, PDFReader
    except ImportError as e:
        msg = f"reading {suffix} files needs llama-index-readers-file: {INSTALL_HINT}"
        raise ImportError(msg) from e
    readers: dict[str, BaseReader] = {
        ".pdf": PDFReader(),  # one document per page, with its page_label
        ".csv": PagedCSVReader(),  # one document per row, "column: value" lines
    }
    return {suffix: readers[suffix]}


class _MainContentReader(BaseReader):
    """An HTML page's main content, found by trafilatura: no navigation, headers or footers.

    The page's bytes go to trafilatura, which takes the encoding the page declares.
    """

    def load_data(self, file: Path, extra_info: dict[str, Any] | None = None) -> list[Document]:
        """Return the page's main content as one document (empty where it has none)."""
        import trafilatura

        text = trafilatura.extract(Path(file).read_bytes(), include_tables=True) or ""
        return [Document(text=text, metadata=extra_info or {})]


def splitter(
    chunk_size: int, chunk_overlap: int, tokens: Callable[[str], Sized] | None = None
) -> SentenceSplitter:
    """Return the SentenceSplitter that ingest chunks with: any text, at any length, in time.

    It is LlamaIndex's, with the same chunks as ``SentenceSplitter(chunk_size, chunk_overlap,
    tokenizer=tokens)`` for texts of up to ``SECTION_CHARS`` characters, and three changes:
    its sentences come from the same Punkt tokenizer without NLTK's wall-clock limit on each
    regular expression (a long paragraph on a busy machine tripped it); a text of more than
    ``SECTION_CHARS`` characters is chunked in sections of at most that length, cut at
    paragraph breaks; and a piece far longer than a chunk has only as many of its tokens
    counted as it takes to know that it is longer.

    Args:
        chunk_size: Most tokens per chunk, the embedded metadata included.
        chunk_overlap: Tokens shared by neighbouring chunks.
        tokens: Returns the tokens of a text (their number is what counts); default tiktoken's
            ``cl100k_base``, SentenceSplitter's own.

    Raises:
        ValueError: ``chunk_overlap`` is larger than ``chunk_size``.
    """
    return _SectionedSplitter(
        chunk_size=chunk_size,
        chunk_overlap=chunk_overlap,
        tokenizer=_BoundedCount(tokens or get_tokenizer(), chunk_size),
        chunking_tokenizer_fn=_sentences,
    )


class _UntimedLanguageVars(PunktLanguageVars):  # type: ignore[misc]
    """Punkt's English rules, with no wall-clock limit on its regular expressions.

    NLTK 3.10 runs them through ``nltk.redos`` with a 5 s limit per call; Punkt finds the
    sentence ends of a whole paragraph in one call, so a paragraph of a few megabytes fails
    with "regular-expression match exceeded its 5.0s time limit" (sooner on a busy machine).
    The patterns are Punkt's own, linear in the text.
    """

    def __init__(self) -> None:
        super().__init__()
        self.re_boundary_realignment = _untimed(PunktLanguageVars.re_boundary_realignment)

    def period_context_re(self) -> Any:  # noqa: ANN401 - a compiled pattern, NLTK's type
        """Return Punkt's pattern for possible sentence ends, with no time limit."""
        return _untimed(super().period_context_re())

    def _word_tokenizer_re(self) -> Any:  # noqa: ANN401 - a compiled pattern, NLTK's type
        return _untimed(super()._word_tokenizer_re())


def _untimed(pattern: Any) -> Any:  # noqa: ANN401 - a compiled pattern, NLTK's type
    return pattern if redos is None else redos.compile(pattern, timeout=None)


class _UntimedToken(PunktToken):  # type: ignore[misc]
    """Punkt's token, with no wall-clock limit on the patterns that classify it."""

    _RE_ELLIPSIS = _untimed(PunktToken._RE_ELLIPSIS)
    _RE_NUMERIC = _untimed(PunktToken._RE_NUMERIC)
    _RE_INITIAL = _untimed(PunktToken._RE_INITIAL)
    _RE_ALPHA = _untimed(PunktToken._RE_ALPHA)
    _RE_NON_PUNCT = _untimed(re.compile(r"[^\W\d]", re.UNICODE))

    @property
    def is_non_punct(self) -> Any:  # noqa: ANN401 - a match, as Punkt's own
        """Whether the token is a number or alphabetic (Punkt's test)."""
        return self._RE_NON_PUNCT.search(self.type)


# LlamaIndex's default sentence tokenizer is an untrained PunktSentenceTokenizer too.
_PUNKT = PunktSentenceTokenizer(lang_vars=_UntimedLanguageVars(), token_cls=_UntimedToken)


def _sentences(text: str) -> list[str]:
    return split_by_sentence_tokenizer_internal(text, _PUNKT)


class _BoundedCount:
    """Count a text's tokens; for a long text, stop once its head is far longer than a chunk.

    SentenceSplitter only asks whether a piece fits in a chunk, and splits it further when it
    does not, so a piece longer than the chunk needs no exact count: its first tokens tell.
    The head ends before a space, where tokenizers start a new word, so the head's tokens are
    no more than the whole text's. Counting whole pieces made a long text cost its length
    times the depth of the splitter's recursion, and its memory a list of all its tokens.
    """

    def __init__(self, tokens: Callable[[str], Sized], chunk_size: int) -> None:
        self.tokens = tokens
        self.enough = 2 * chunk_size
        self.head = 16 * chunk_size  # characters: about four chunks of English text

    def __call__(self, text: str) -> Sized:
        if len(text) > self.head:
            cut = text.rfind(" ", 0, self.head)
            if cut > 0:
                head = self.tokens(text[:cut])
                if len(head) > self.enough:
                    return head
        return self.tokens(text)


class _SectionedSplitter(SentenceSplitter):
    def split_text_metadata_aware(self, text: str, metadata_str: str) -> list[str]:
        """Split ``text`` into chunks, a section at a time where it is longer than a section."""
        if len(text) <= SECTION_CHARS:
            return super().split_text_metadata_aware(text, metadata_str)
        chunks: list[str] = []
        for section in sections(text, SECTION_CHARS):
            chunks.extend(super().split_text_metadata_aware(section, metadata_str))
        return chunks


def sections(text: str, size: int) -> Iterator[str]:
    """Yield ``text`` in consecutive pieces of at most ``size`` characters.

    Each piece ends before the last paragraph break (a blank line, else a line break, else a
    space) in its second half, or at ``size`` characters where there is none.
    """
    start = 0
    while len(text) - start > size:
        end = start + size
        cut = -1
        for separator in ("\n\n\n", "\n\n", "\n", " "):
            cut = text.rfind(separator, start + size // 2, end)
            if cut > start:
                break
        if cut <= start:
            cut = end
        yield text[start:cut]
        start = cut
    yield text[start:]


def _split(
    splitter: SentenceSplitter,
    source: str,
    documents: list[Document],
    settings: str,
    warnings: list[str],
) -> list[BaseNode]:
    nodes: list[BaseNode] = []
    for index, document in enumerate(documents):
        text = document.get_content(metadata_mode=MetadataMode.EMBED)
        # Chunks cut in sections are not the chunks of the whole text: other ids.
        marked = settings
        if len(document.text) > SECTION_CHARS:
            marked = f"{settings},sections({SECTION_CHARS})"
        digest = _digest(source, index, text, marked)
        splitter.id_func = lambda i, _doc, digest=digest: _chunk_uuid(digest, i)
        # SentenceSplitter prints a warning (metadata close to the chunk size) for every
        # document, on stdout; the caller logs it once.
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            try:
                nodes.extend(splitter.get_nodes_from_documents([document]))
            except ValueError as e:
                if not str(e).startswith("Metadata length"):
                    raise
                embedded = document.get_metadata_str(MetadataMode.EMBED)
                msg = (
                    f"the name it embeds in every chunk ({embedded!r}) "
                    f"leaves no room for text in chunks of {splitter.chunk_size} tokens: "
                    f"rename it shorter, or use a larger chunk size"
                )
                raise ValueError(msg) from e
        warnings.extend(printed.getvalue().splitlines())
    return [n for n in nodes if n.get_content(metadata_mode=MetadataMode.NONE).strip()]


def _under(source: str, roots: list[Path]) -> bool:
    path = Path(source)
    return any(path == root or path.is_relative_to(root) for root in roots)


def _gone(source: str) -> bool:
    """Whether a file is known to be gone: not one that merely cannot be seen just now."""
    try:
        os.stat(source)
    except OSError as e:
        return e.errno in (errno.ENOENT, errno.ENOTDIR)
    return False
