"""Long documents cut into overlapping windows that each fit beside the query.

A cross-encoder reads a query and a document together, within its window (512 tokens for the
ms-marco MiniLM rerankers); fastembed truncates a longer pair, so the end of a long document
never counts. Under ``long_documents="max"`` such a document is cut into windows instead:
each as long as fits beside the query, counted in the model's own tokens, cut between words
(so that a window's text tokenizes to the same tokens again), and overlapping the previous
window by at least a quarter, so that a passage of up to that length lies whole in some
window. The last window ends at the document's end. Each window is scored as a pair of its
own, and the document gets its best window's score.
"""

from __future__ import annotations

import bisect
import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tokenizers import Tokenizer

# Windows overlap by at least 1 / OVERLAP_DIVISOR of their length.
OVERLAP_DIVISOR = 4
# About six windows' worth of text (on a 512-token model, some 3,000 tokens): a chunk from a
# usual LlamaIndex splitter fits with room to spare, and the cost stays bounded.
DEFAULT_MAX_WINDOWS = 8

# fastembed's tokenizer truncates and pads; windows are found on a copy that does neither.
_UNTRUNCATED: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()


@dataclass
class Windows:
    """The windows of some documents, in order, and what was left out."""

    room: int
    """Most tokens of a document per window: the model's window less the query's pair."""
    texts: list[str] = field(default_factory=list)
    """Every window's text."""
    owners: list[int] = field(default_factory=list)
    """For each window, the position of its document in the documents cut."""
    capped: int = 0
    """How many documents had text left after ``max_windows`` windows (not scored)."""


def cut_windows(
    tokenizer: Tokenizer, query: str, documents: list[str], max_windows: int
) -> Windows | None:
    """Cut each document into windows that fit beside ``query`` in the model's window.

    ``tokenizer`` is the model's own, truncating pairs to the model's window. A document
    that fits already comes back as one window of its whole text.

    Returns:
        The windows; None where the query leaves no room for a document beside it.
    """
    window = (tokenizer.truncation or {}).get("max_length")
    (bare,) = tokenizer.encode_batch([(query, "")])
    if window is None or bare.overflowing:
        return None
    room = window - sum(bare.attention_mask)
    if room < 1:
        return None
    windows = Windows(room=room)
    for owner, encoding in enumerate(
        _untruncated(tokenizer).encode_batch(documents, add_special_tokens=False)
    ):
        text = documents[owner]
        offsets = encoding.offsets
        word_ids = encoding.word_ids
        # Token positions where a word starts: windows begin and end there.
        starts = [
            i
            for i in range(len(offsets))
            if i == 0 or word_ids[i] is None or word_ids[i] != word_ids[i - 1]
        ]
        spans, capped = _spans(len(offsets), starts, room, room // OVERLAP_DIVISOR, max_windows)
        windows.capped += capped
        for start, end in spans:
            windows.texts.append(
                text[offsets[start][0] : offsets[end - 1][1]] if end > start else ""
            )
            windows.owners.append(owner)
    return windows


def _spans(
    n: int, starts: list[int], room: int, overlap: int, max_windows: int
) -> tuple[list[tuple[int, int]], bool]:
    """Return token spans [start, end) covering ``n`` tokens, and whether some were left out.

    Each span holds at most ``room`` tokens, begins and ends at word starts (unless one word
    is longer than ``room``), and begins at least ``overlap`` tokens before the previous one
    ends. The last span ends at ``n``, unless ``max_windows`` spans end earlier.
    """

    def back(i: int) -> int:  # the last word start at or before i, else 0
        k = bisect.bisect_right(starts, i) - 1
        return starts[k] if k >= 0 else 0

    def forward(i: int) -> int:  # the first word start at or after i, else n
        k = bisect.bisect_left(starts, i)
        return starts[k] if k < len(starts) else n

    spans: list[tuple[int, int]] = []
    start = 0
    while n - start > room:
        end = back(start + room)
        if end <= start:  # one word longer than a window: cut inside it
            end = start + room
        spans.append((start, end))
        if len(spans) == max_windows:
            return spans, True
        following = back(end - overlap)
        if following <= start:
            following = min(forward(start + 1), end)
        if n - following < room:
            # The last window ends at the document's end and starts as early as fits beside
            # the query, which only adds to its overlap.
            following = min(forward(n - room), following)
        start = following
    spans.append((start, n))
    return spans, False


def _untruncated(tokenizer: Tokenizer) -> Tokenizer:
    copy = _UNTRUNCATED.get(tokenizer)
    if copy is None:
        copy = type(tokenizer).from_str(tokenizer.to_str())
        copy.no_truncation()
        copy.no_padding()
        _UNTRUNCATED[tokenizer] = copy
    return copy
