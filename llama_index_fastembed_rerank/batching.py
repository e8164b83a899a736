"""The batching loop of every ONNX model here.

Length-ordered batches within a count and a padded-token budget, each run once, the results
put back in input order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from tokenizers import Encoding

T = TypeVar("T")

# Swept on 2 CPU cores: the cross-encoder and all-MiniLM-L6-v2 both ran fastest at 512 padded
# tokens a run (the README's Performance section has the figures).
DEFAULT_MAX_BATCH_TOKENS = 512


def length_batches(
    lengths: list[int], batch_size: int, max_tokens: int | None
) -> Iterator[list[int]]:
    """Yield row indices shortest first, in batches within both limits (at least one row).

    ``lengths`` are token counts; a batch of n rows whose longest has L tokens runs n x L
    padded tokens, which stays within ``max_tokens`` (None: no limit) unless one row alone
    exceeds it.
    """
    # fastembed pads every batch to its longest text. Ordering the texts by token length makes
    # each batch hold texts of about one length, so little of the work is padding. Capping
    # the padded tokens keeps long texts in small runs: a run's attention scores grow with
    # rows x length^2 (800 MB a layer for 64 pairs of 512 tokens), and on a CPU such big
    # runs measured slower per text, not faster.
    batch: list[int] = []
    for row in sorted(range(len(lengths)), key=lengths.__getitem__):
        # Rows come shortest first: this one would be the longest, padding all of them to it.
        too_many_tokens = max_tokens is not None and (len(batch) + 1) * lengths[row] > max_tokens
        if batch and (len(batch) == batch_size or too_many_tokens):
            yield batch
            batch = []
        batch.append(row)
    if batch:
        yield batch


def token_lengths(encodings: Sequence[Encoding]) -> list[int]:
    """Return each encoding's token count without its padding."""
    return [sum(e.attention_mask) for e in encodings]


def run_batches(
    lengths: list[int],
    batch_size: int,
    max_tokens: int | None,
    run: Callable[[list[int]], Iterable[T]],
) -> Iterator[tuple[int, T]]:
    """Run ``run`` on each batch of ``length_batches``; yield (row, result) for every row.

    ``run(rows)`` returns one result per row, in the order of ``rows``.
    """
    for rows in length_batches(lengths, batch_size, max_tokens):
        yield from zip(rows, run(rows), strict=True)
