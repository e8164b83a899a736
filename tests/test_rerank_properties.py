"""Properties of FastEmbedRerank on real weights (the stand-in cross-encoder), over random input.

Hypothesis draws node lists (text and image nodes, with metadata), texts (empty, whitespace,
very long, CJK, emoji, control characters, real descriptions), first-stage scores (negative,
tied, NaN, infinite, None), top_n, score_threshold and the other options. Whatever it draws,
the output is sorted, a subset of the input of the promised length, the caller's objects are
untouched, and every score is fastembed's. The examples are few and derandomized, so the run
is quick and the same every time.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from llama_index.core.schema import ImageNode, MetadataMode, NodeWithScore, TextNode

from llama_index_fastembed_rerank.rerank import RETRIEVAL_SCORE_KEY

MOVIES = json.loads((Path(__file__).parents[1] / "examples" / "data" / "movies.json").read_text())
PROPERTIES = settings(
    max_examples=25,
    derandomize=True,  # the same examples on every run
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Scores of the same text, ours and fastembed's, may differ by float rounding in other batches.
ATOL = 1e-5

texts = st.one_of(
    st.just(""),
    st.text(alphabet=" \t\n\r\u3000\u00a0", max_size=4),  # whitespace only
    st.text(max_size=30),  # any code point, control characters included
    st.text(alphabet=st.characters(categories=["Cc", "Cf", "Zs"]), min_size=1, max_size=8),
    st.text(alphabet=st.characters(min_codepoint=0x4E00, max_codepoint=0x9FFF), min_size=1),
    st.lists(st.sampled_from(["😀", "🎬", "🇫🇷", "👩‍🔬", "🏳️‍🌈", " "]), min_size=1, max_size=12).map(
        "".join
    ),
    st.sampled_from(MOVIES["descriptions"]),
)
# Past the 512-token window: truncated as fastembed truncates. Drawn rarely, as it is slow.
LONG_TEXT = " ".join(MOVIES["descriptions"][:10])
first_stage_scores = st.one_of(
    st.none(),
    st.sampled_from([0.5, -1.0, 0.0]),  # ties
    st.floats(allow_nan=True, allow_infinity=True),
)
metadata = st.dictionaries(
    st.text(alphabet="abcdefgh_", min_size=1, max_size=6),
    st.one_of(st.text(max_size=12), st.integers(-5, 5), st.floats(allow_nan=False)),
    max_size=3,
)


@st.composite
def node_lists(draw: st.DrawFn) -> list[NodeWithScore]:
    nodes = []
    for i in range(draw(st.integers(0, 6))):
        kind = draw(st.integers(0, 19))
        if kind == 0:
            node = ImageNode(image="aGVsbG8=", id_=f"n{i}", metadata=draw(metadata))
        else:
            text = LONG_TEXT if kind == 1 else draw(texts)
            node = TextNode(text=text, id_=f"n{i}", metadata=draw(metadata))
        nodes.append(NodeWithScore(node=node, score=draw(first_stage_scores)))
    # Some texts twice: the same text must get the same score.
    if nodes and draw(st.booleans()):
        twin = draw(st.sampled_from(nodes))
        nodes.append(NodeWithScore(node=twin.node.model_copy(update={"id_": "twin"})))
    return nodes


options = st.fixed_dictionaries(
    {
        "top_n": st.one_of(st.none(), st.integers(1, 9)),
        "normalize": st.booleans(),
        "keep_retrieval_score": st.booleans(),
        "metadata_mode": st.sampled_from([MetadataMode.EMBED, MetadataMode.NONE]),
        "batch_size": st.integers(1, 8),
        "max_batch_tokens": st.one_of(st.none(), st.integers(16, 1024)),
    }
)
thresholds = st.one_of(st.floats(-4, 4), st.just(-math.inf), st.just(0.5))
queries = st.sampled_from(
    [
        MOVIES["query"],
        "Jeanne d'Arc",
        "圣女贞德的审判",
        "🎬 trial",
        "a\x00b",
        " ".join(["why"] * 40),
    ]
)


def dumped(nodes: list[NodeWithScore]) -> list[str]:
    """The nodes as they are now, NaN included (NaN != NaN would hide nothing in json)."""
    return [json.dumps(n.model_dump(), sort_keys=True, default=repr) for n in nodes]


def fastembed_scores(encoder, query: str, texts: list[str], normalize: bool) -> dict[str, float]:
    """fastembed's score of each text, each pair run alone (padded to no other pair)."""
    scores = {t: float(next(iter(encoder.rerank(query, [t])))) for t in dict.fromkeys(texts)}
    if normalize:
        return {
            t: 1 / (1 + math.exp(-s)) if s >= 0 else math.exp(s) / (1 + math.exp(s))
            for t, s in scores.items()
        }
    return scores


@pytest.mark.filterwarnings("ignore:.*were longer than the:UserWarning")
@PROPERTIES
@given(nodes=node_lists(), query=queries, config=options, threshold=thresholds)
def test_rerank_properties_hold_for_any_input(
    standin_reranker, real_cross_encoder, nodes, query, config, threshold
):
    before = dumped(nodes)
    originals = [n.node for n in nodes]
    reranker = standin_reranker.model_copy(update=config)
    out = reranker.postprocess_nodes(nodes, query_str=query)

    # The caller's list, nodes, scores and metadata are as they were.
    assert dumped(nodes) == before
    assert [n.node for n in nodes] == originals

    # A subset of the input, each node once, of the promised length.
    position = {n.node.node_id: i for i, n in enumerate(nodes)}
    ids = [n.node.node_id for n in out]
    assert len(set(ids)) == len(ids)
    assert set(ids) <= set(position)
    assert len(out) == min(config["top_n"] or len(nodes), len(nodes))

    # Scores are fastembed's (None where there is no text to score), as Python floats.
    contents = {
        n.node.node_id: n.node.get_content(metadata_mode=config["metadata_mode"]) for n in nodes
    }
    scorable = [t for t in contents.values() if t.strip()]
    expected = fastembed_scores(real_cross_encoder, query, scorable, config["normalize"])
    for n in out:
        text = contents[n.node.node_id]
        if text.strip():
            assert type(n.score) is float
            assert n.score == pytest.approx(expected[text], abs=ATOL)
        else:
            assert n.score is None

    # Sorted: highest first, ties in input order, unscored nodes last in input order.
    keys = [(-math.inf if n.score is None else n.score, -position[n.node.node_id]) for n in out]
    assert keys == sorted(keys, reverse=True)
    # Nothing left out scores above what was kept (up to float rounding at the cut).
    kept_scores = [n.score for n in out if n.score is not None]
    if len(out) < len(nodes) and kept_scores and all(n.score is not None for n in out):
        left_out = [expected[contents[i]] for i in position if i not in ids and contents[i].strip()]
        assert max(left_out, default=-math.inf) <= min(kept_scores) + ATOL

    # The first-stage score travels only where asked, on a copy of the node.
    for n in out:
        source = nodes[position[n.node.node_id]]
        if config["keep_retrieval_score"]:
            assert n.node is not source.node
            kept = n.node.metadata[RETRIEVAL_SCORE_KEY]
            assert json.dumps(kept) == json.dumps(source.score)
        else:
            assert n.node is source.node

    # The threshold applies after top_n, to exactly these scores.
    thresholded = reranker.model_copy(update={"score_threshold": threshold})
    assert [
        (n.node.node_id, n.score) for n in thresholded.postprocess_nodes(nodes, query_str=query)
    ] == [(n.node.node_id, n.score) for n in out if n.score is not None and n.score >= threshold]
    assert dumped(nodes) == before


@pytest.mark.filterwarnings("ignore:.*were longer than the:UserWarning")
@settings(PROPERTIES, max_examples=15)
@given(
    texts=st.lists(st.one_of(texts, st.just(LONG_TEXT)), max_size=6),
    query=queries,
    batch_size=st.integers(1, 8),
    max_batch_tokens=st.one_of(st.none(), st.integers(1, 1024)),
)
def test_score_equals_fastembed_for_any_texts_and_batching(
    standin_reranker, real_cross_encoder, texts, query, batch_size, max_batch_tokens
):
    reranker = standin_reranker.model_copy(
        update={"batch_size": batch_size, "max_batch_tokens": max_batch_tokens}
    )
    before = list(texts)
    scores = reranker.score(query, texts)
    assert texts == before
    by_text = fastembed_scores(real_cross_encoder, query, texts, normalize=False)
    expected = [by_text[t] for t in texts]
    assert all(type(s) is float for s in scores)
    np.testing.assert_allclose(scores, expected, atol=ATOL, rtol=0)
