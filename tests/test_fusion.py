"""Rank fusion on hand-made candidate lists, checked against qdrant-client's own fusion code."""

from __future__ import annotations

import copy
import random

import pytest
from llama_index.core.schema import TextNode
from llama_index.core.vector_stores.types import VectorStoreQueryResult
from qdrant_client.http import models
from qdrant_client.hybrid import fusion as qdrant_fusion

from llama_index_fastembed_rerank import distribution_based_score_fusion, reciprocal_rank_fusion

FUSIONS = pytest.mark.parametrize(
    "fuse",
    [reciprocal_rank_fusion, distribution_based_score_fusion],
    ids=["rrf", "dbsf"],
)


def result(*scored: tuple[str, float]) -> VectorStoreQueryResult:
    return VectorStoreQueryResult(
        nodes=[TextNode(id_=i, text=i) for i, _ in scored],
        similarities=[s for _, s in scored],
        ids=[i for i, _ in scored],
    )


def fused(res: VectorStoreQueryResult) -> list[tuple[str, float]]:
    return list(zip(res.ids, res.similarities, strict=True))


def test_rrf_scores_are_qdrants_formula():
    dense = result(("a", 0.9), ("b", 0.8), ("c", 0.1))
    sparse = result(("c", 12.0), ("d", 3.0))
    out = fused(reciprocal_rank_fusion(dense, sparse))
    # k=2: rank r scores 1 / (r + 2); "c" is 3rd dense and 1st sparse.
    assert out == [("c", 0.25 + 0.5), ("a", 0.5), ("b", 1 / 3), ("d", 1 / 3)]
    assert [n.node_id for n in reciprocal_rank_fusion(dense, sparse).nodes] == ["c", "a", "b", "d"]


def test_rrf_k_flattens_ranks():
    dense = result(("a", 0.9), ("b", 0.8))
    out = fused(reciprocal_rank_fusion(dense, result(), k=60))
    assert out == [("a", 1 / 60), ("b", 1 / 61)]  # 1 / (rank + k), rank from 0


def test_dbsf_normalises_each_side_by_mean_and_three_deviations():
    dense = result(("a", 0.9), ("b", 0.7), ("c", 0.5))  # mean 0.7, sample std 0.2
    sparse = result(("b", 5.0))  # a list of one scores 0.5
    out = dict(fused(distribution_based_score_fusion(dense, sparse)))
    assert out["a"] == pytest.approx((0.9 - 0.1) / 1.2)
    assert out["b"] == pytest.approx(0.5 + 0.5)
    assert out["c"] == pytest.approx((0.5 - 0.1) / 1.2)


def test_dbsf_equal_scores_all_get_a_half():
    out = fused(distribution_based_score_fusion(result(("a", 2.0), ("b", 2.0)), result()))
    assert out == [("a", 0.5), ("b", 0.5)]


@FUSIONS
def test_fusion_alpha_zero_puts_every_sparse_hit_above_every_dense_only_hit(fuse):
    # Min-max fusion gives the weakest sparse hit 0, tied with documents sparse never found.
    dense = result(("x", 0.9), ("y", 0.8), ("z", 0.7))
    sparse = result(("s1", 3.2), ("s2", 1.2), ("s3", 1.1))
    out = fuse(dense, sparse, alpha=0.0)
    assert out.ids[:3] == ["s1", "s2", "s3"]
    assert min(out.similarities[:3]) > max(out.similarities[3:])


@FUSIONS
def test_fusion_alpha_one_is_dense_order(fuse):
    dense = result(("x", 0.9), ("y", 0.8), ("z", 0.7))
    sparse = result(("z", 9.0), ("s", 1.0))
    assert fuse(dense, sparse, alpha=1.0).ids[:3] == ["x", "y", "z"]


@FUSIONS
def test_fusion_top_k_cuts_and_none_keeps_all(fuse):
    dense = result(("a", 0.9), ("b", 0.8))
    sparse = result(("c", 2.0), ("d", 1.0))
    assert len(fuse(dense, sparse, top_k=3).ids) == 3
    assert len(fuse(dense, sparse).ids) == 4


@FUSIONS
def test_fusion_of_empty_sides(fuse):
    empty = VectorStoreQueryResult(nodes=None, similarities=None, ids=None)
    assert fused(fuse(empty, empty)) == []
    assert fuse(result(("a", 0.5)), empty).ids == ["a"]
    assert fuse(empty, result(("a", 0.5))).ids == ["a"]


@FUSIONS
def test_fusion_leaves_the_inputs_alone_and_returns_floats(fuse):
    dense = result(("a", 0.9), ("b", 0.8))
    sparse = result(("b", 2.0), ("c", 1.0))
    before = (copy.deepcopy(dense), copy.deepcopy(sparse))
    out = fuse(dense, sparse)
    assert (dense, sparse) == before
    assert all(type(s) is float for s in out.similarities)
    assert {n.node_id for n in out.nodes} == {"a", "b", "c"}


@FUSIONS
def test_fusion_uses_node_ids_when_the_result_has_no_ids(fuse):
    dense = result(("a", 0.9), ("b", 0.8))
    dense.ids = None
    assert fuse(dense, result(("b", 1.0))).ids[0] == "b"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"alpha": 1.5}, r"alpha must be a number from 0 .* got 1\.5"),
        ({"alpha": float("nan")}, "got nan"),
        ({"alpha": True}, "got True"),
        ({"top_k": 0}, "top_k must be an int >= 1, or None .* got 0"),
    ],
    ids=["alpha-above-1", "alpha-nan", "alpha-bool", "top-k-0"],
)
@FUSIONS
def test_fusion_rejects_bad_arguments(fuse, kwargs, message):
    with pytest.raises(ValueError, match=message):
        fuse(result(("a", 1.0)), result(), **kwargs)


@pytest.mark.parametrize("k", [0, -1, 2.5, True], ids=["0", "negative", "float", "bool"])
def test_rrf_rejects_bad_k(k):
    with pytest.raises(ValueError, match=r"k must be an int >= 1 \(Qdrant's default is 2\)"):
        reciprocal_rank_fusion(result(("a", 1.0)), result(), k=k)


def test_fusion_rejects_results_with_mismatched_lengths():
    broken = result(("a", 1.0), ("b", 0.5))
    broken.similarities = [1.0]
    with pytest.raises(ValueError, match="the sparse result has 2 nodes, 2 ids and 1 similar"):
        reciprocal_rank_fusion(result(), broken)


# --- against qdrant-client's fusion, on random lists ------------------------------------------


def _random_side(rng: random.Random, pool: list[str], scale: float) -> list[tuple[str, float]]:
    ids = rng.sample(pool, rng.randint(0, len(pool)))
    scores = sorted((round(rng.uniform(0, scale), rng.choice([1, 6])) for _ in ids), reverse=True)
    return list(zip(ids, scores, strict=True))


def _points(side: list[tuple[str, float]]) -> list[models.ScoredPoint]:
    return [models.ScoredPoint(id=i, version=0, score=s) for i, s in side]


@pytest.mark.parametrize("seed", range(40))
def test_fusion_equals_qdrant_clients_own(seed):
    rng = random.Random(seed)
    pool = [f"00000000-0000-0000-0000-{n:012d}" for n in range(12)]
    dense, sparse = _random_side(rng, pool, 1.0), _random_side(rng, pool, 20.0)
    alpha = rng.choice([0.0, 0.2, 0.5, 0.5, 0.7, 1.0])
    k = rng.choice([1, 2, 2, 60])
    limit = rng.randint(1, 12)

    ours = reciprocal_rank_fusion(result(*dense), result(*sparse), alpha=alpha, top_k=limit, k=k)
    theirs = qdrant_fusion.reciprocal_rank_fusion(
        [_points(dense), _points(sparse)],
        limit=limit,
        ranking_constant_k=k,
        weights=[2 * alpha, 2 * (1 - alpha)],
    )
    assert fused(ours) == [(str(p.id), p.score) for p in theirs]

    ours = distribution_based_score_fusion(result(*dense), result(*sparse), top_k=limit)
    theirs = qdrant_fusion.distribution_based_score_fusion(
        [_points(dense), _points(sparse)], limit=limit
    )
    assert fused(ours) == [(str(p.id), p.score) for p in theirs]
