"""What the command line prints: results, tables, progress, and its one-line warnings."""

from __future__ import annotations

import logging
import sys
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from llama_index.core.schema import NodeWithScore


def one_line(error: object) -> str:
    """Return ``error``'s message on one line (its type's name where it has none)."""
    return " ".join(str(error).split()) or type(error).__name__


def say(line: str) -> None:
    """Print one of the command's own lines on stderr (``error: ...``, ``warning: ...``)."""
    print(line, file=sys.stderr)  # noqa: T201


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


def progress(items: Iterable[Any], description: str, total: int) -> Iterator[Any]:
    """Show progress over ``items`` on stderr where it is a terminal."""
    from tqdm import tqdm

    # disable=None: shown on a terminal, silent in pipes, logs and tests.
    yield from tqdm(items, desc=description, total=total, disable=None, file=sys.stderr)


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
        say(f"warning: {one_line(message)}")

    warnings.showwarning = show
