"""Long documents under long_documents="max": their windows, and their scores on real weights."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from llama_index_fastembed_rerank import _fastembed
from llama_index_fastembed_rerank.long_documents import _spans, cut_windows

MOVIES = json.loads((Path(__file__).parents[1] / "examples" / "data" / "movies.json").read_text())
QUERY = MOVIES["query"]
DESCRIPTIONS = MOVIES["descriptions"]
JEANNE = next(d for d in DESCRIPTIONS if "Jeanne d'Arc" in d)
# Past one 512-token window: about 600 tokens, and about 3,200 (nine windows).
PREFIX = " ".join(d for d in DESCRIPTIONS if d != JEANNE)
LONG = " ".join(DESCRIPTIONS * 5)
SHORT = [DESCRIPTIONS[0], "", "A story.", " ".join(DESCRIPTIONS[:5])]


# --- where windows start and end ------------------------------------------------------------


def check_spans(n, starts, room, overlap, max_windows, words_fit=True):
    spans, capped = _spans(n, starts, room, overlap, max_windows)
    assert spans[0][0] == 0
    assert len(spans) <= max_windows
    assert capped == (spans[-1][1] < n)
    for start, end in spans:
        assert 0 < end - start <= room
    for (start, end), (following, _) in itertools.pairwise(spans):
        # Progress, no gap, and (where every word fits in a window) at least the overlap.
        assert start < following <= (end - overlap if words_fit else end)
    return spans


@pytest.mark.parametrize(
    ("n", "word_length", "room", "max_windows"),
    [(100, 1, 40, 8), (101, 3, 40, 8), (1000, 2, 37, 8), (41, 1, 40, 8), (1000, 1, 40, 3)],
    ids=["one-token-words", "three-token-words", "uneven", "one-over", "capped"],
)
def test_windows_cover_the_document_and_overlap(n, word_length, room, max_windows):
    starts = list(range(0, n, word_length))
    spans = check_spans(n, starts, room, room // 4, max_windows)
    for start, end in spans:
        assert start in starts
        assert end in starts or end == n
    if spans[-1][1] == n:
        # Every window is as long as whole words allow: the last one too.
        assert all(end - start > room - word_length for start, end in spans)


def test_a_word_longer_than_the_window_is_cut_inside():
    starts = [0, 5, 200, 203]  # a word of 195 tokens
    spans = check_spans(210, starts, 40, 10, 20, words_fit=False)
    assert spans[:2] == [(0, 5), (5, 45)]
    assert spans[-1][1] == 210


def test_a_document_that_fits_is_one_window():
    assert _spans(30, [0, 10, 20], 40, 10, 8) == ([(0, 30)], False)


# --- real weights -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tokenizer(real_cross_encoder):
    return _fastembed.tokenizer(real_cross_encoder)


@pytest.fixture(scope="module")
def maximum(standin_reranker):
    return standin_reranker.model_copy(update={"long_documents": "max"})


def test_real_windows_are_the_documents_tokens_and_fit_beside_the_query(tokenizer):
    windows = cut_windows(tokenizer, QUERY, [LONG], max_windows=50)
    whole = type(tokenizer).from_str(tokenizer.to_str())
    whole.no_truncation()
    whole.no_padding()
    ids = whole.encode(LONG, add_special_tokens=False).ids
    beside = sum(tokenizer.encode_batch([(QUERY, "")])[0].attention_mask)
    assert windows.room == 512 - beside
    spans = []
    for text in windows.texts:
        (pair,) = tokenizer.encode_batch([(QUERY, text)])
        assert not pair.overflowing
        own = whole.encode(text, add_special_tokens=False).ids
        assert sum(pair.attention_mask) == beside + len(own) <= 512
        # A window is a run of the document's own tokens: its text tokenizes to them again.
        start = next(
            k
            for k in range(spans[-1][0] + 1 if spans else 0, len(ids))
            if ids[k : k + len(own)] == own
        )
        spans.append((start, start + len(own)))
    assert len(spans) >= 5
    assert spans[0][0] == 0
    assert spans[-1][1] == len(ids)
    for (_, end), (following, _) in itertools.pairwise(spans):
        assert end - following >= windows.room // 4
    assert all(end - start > windows.room - 10 for start, end in spans)  # full windows


def test_real_max_scores_each_document_as_its_best_window(maximum, real_cross_encoder, tokenizer):
    documents = [LONG, PREFIX + " " + JEANNE, *SHORT]
    windows = cut_windows(tokenizer, QUERY, documents[:2], max_windows=8)
    window_scores = list(real_cross_encoder.rerank(QUERY, windows.texts))
    expected = [
        max(s for s, owner in zip(window_scores, windows.owners, strict=True) if owner == doc)
        for doc in (0, 1)
    ] + list(real_cross_encoder.rerank(QUERY, SHORT))
    assert windows.owners.count(0) == 8
    assert windows.owners.count(1) == 2
    with pytest.warns(UserWarning, match=r"^1 of 6 documents needed more than max_windows=8"):
        scores = maximum.score(QUERY, documents)
    np.testing.assert_allclose(scores, expected, atol=1e-5, rtol=0)


def test_real_documents_that_differ_after_the_first_window(standin_reranker, maximum):
    # Past the first window, one ends with the description the stand-in scores highest and
    # the other with the one it scores lowest (its head is untrained: a seeded choice).
    filler = " ".join(["The weather was mild and nothing happened that day."] * 60)
    documents = [f"{filler} {DESCRIPTIONS[14]}", f"{filler} {DESCRIPTIONS[13]}"]
    with pytest.warns(UserWarning, match="long_documents='max'"):
        truncated = standin_reranker.score(QUERY, documents)
    assert truncated[0] == truncated[1]  # fastembed never reads past the first window
    best = maximum.score(QUERY, documents)
    assert abs(best[0] - best[1]) > 1e-3
    assert max(best) > truncated[0]


def test_real_documents_that_fit_score_exactly_as_before(standin_reranker, maximum):
    texts = [*SHORT, *DESCRIPTIONS]
    assert maximum.score(QUERY, texts) == standin_reranker.score(QUERY, texts)


def test_real_max_windows_bounds_the_windows_scored(maximum, real_cross_encoder, tokenizer):
    windows = cut_windows(tokenizer, QUERY, [LONG], max_windows=2)
    assert len(windows.texts) == 2
    assert windows.capped == 1
    capped = maximum.model_copy(update={"max_windows": 2})
    with pytest.warns(UserWarning, match="raise max_windows to score more of it"):
        (score,) = capped.score(QUERY, [LONG])
    assert score == pytest.approx(max(real_cross_encoder.rerank(QUERY, windows.texts)), abs=1e-5)
