"""Rank fusion for hybrid retrieval, as Qdrant's Query API defines it.

Both functions fit ``QdrantVectorStore(hybrid_fusion_fn=...)``, which calls them with the dense
and the sparse candidate lists, ``alpha`` (the dense side's weight) and ``top_k``. At
``alpha=0.5`` they return what Qdrant's ``query_points`` returns for a ``FusionQuery`` over the
same two prefetches: the same points, order and scores. Other alphas weight the two sides:
each side's weight is ``2 * alpha`` and ``2 * (1 - alpha)``, so that 0.5 gives Qdrant's
default weight of 1 to each; for RRF this is Qdrant's weighted RRF (``Rrf(weights=...)``).
"""

from __future__ import annotations

import math
import numbers
from collections import Counter
from collections.abc import Callable, Sequence

from llama_index.core.schema import BaseNode
from llama_index.core.vector_stores.types import VectorStoreQueryResult

# Qdrant's default ranking constant for RRF (qdrant_client.hybrid.fusion, and the server).
DEFAULT_RRF_K = 2


def reciprocal_rank_fusion(
    dense_result: VectorStoreQueryResult,
    sparse_result: VectorStoreQueryResult,
    alpha: float = 0.5,
    top_k: int | None = None,
    *,
    k: int = DEFAULT_RRF_K,
) -> VectorStoreQueryResult:
    """Fuse two candidate lists by reciprocal rank, as Qdrant's RRF does.

    A point at 0-based rank ``r`` of a list with weight ``w`` scores
    ``1 / ((r + 1) / w + k - 1)`` (0 where ``w`` is 0); its fused score is the sum over the
    lists it is in. Only ranks count, so the two sides' score scales never meet.

    Args:
        dense_result: The dense side's candidates, best first.
        sparse_result: The sparse side's candidates, best first.
        alpha: The dense side's weight, from 0 (sparse only) to 1 (dense only); 0.5 weighs
            both sides equally, which is Qdrant's plain RRF.
        top_k: How many fused results to return; None returns all.
        k: Qdrant's ranking constant: larger values flatten the gap between ranks.

    Returns:
        The fused candidates, highest score first; ties keep dense-then-sparse order.
    """
    if not _is_int(k) or k < 1:
        msg = f"k must be an int >= 1 (Qdrant's default is {DEFAULT_RRF_K}), got {k!r}"
        raise ValueError(msg)
    k = int(k)

    def by_rank(scores: list[float], weight: float) -> list[float]:
        if weight <= 0:
            return [0.0] * len(scores)
        return [1 / ((rank + 1.0) / weight + k - 1.0) for rank in range(len(scores))]

    return _fuse(dense_result, sparse_result, alpha, top_k, by_rank)


def distribution_based_score_fusion(
    dense_result: VectorStoreQueryResult,
    sparse_result: VectorStoreQueryResult,
    alpha: float = 0.5,
    top_k: int | None = None,
) -> VectorStoreQueryResult:
    """Fuse two candidate lists by normalised score, as Qdrant's DBSF does.

    Each list's scores are mapped so that its mean minus three standard deviations is 0 and
    its mean plus three is 1 (a list of one, or of equal scores, gets 0.5), weighted, and
    summed per point. Unlike min-max fusion, a list's weakest hit does not drop to 0.

    Args:
        dense_result: The dense side's candidates, best first.
        sparse_result: The sparse side's candidates, best first.
        alpha: The dense side's weight, from 0 (sparse only) to 1 (dense only); 0.5 weighs
            both sides equally, which is Qdrant's DBSF (Qdrant itself has no DBSF weights).
        top_k: How many fused results to return; None returns all.

    Returns:
        The fused candidates, highest score first; ties keep dense-then-sparse order.
    """

    def by_distribution(scores: list[float], weight: float) -> list[float]:
        return [weight * s for s in _normalize(scores)]

    return _fuse(dense_result, sparse_result, alpha, top_k, by_distribution)


def _normalize(scores: list[float]) -> list[float]:
    # The order of operations follows Qdrant's, so that scores are equal, not just close.
    if len(scores) <= 1:
        return [0.5] * len(scores)
    mean = sum(scores) / len(scores)
    variance = sum((s - mean) ** 2 for s in scores) / (len(scores) - 1)
    if variance == 0:
        return [0.5] * len(scores)
    std_dev = variance**0.5
    low, high = mean - 3 * std_dev, mean + 3 * std_dev
    return [(s - low) / (high - low) for s in scores]


def _fuse(
    dense_result: VectorStoreQueryResult,
    sparse_result: VectorStoreQueryResult,
    alpha: float,
    top_k: int | None,
    side_scores: Callable[[list[float], float], list[float]],
) -> VectorStoreQueryResult:
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 <= alpha <= 1:
        msg = (
            f"alpha must be a number from 0 (sparse only) to 1 (dense only), got {alpha!r}; "
            f"0.5 weighs both sides equally"
        )
        raise ValueError(msg)
    if top_k is not None and (not _is_int(top_k) or top_k < 1):
        msg = f"top_k must be an int >= 1, or None for every fused result; got {top_k!r}"
        raise ValueError(msg)
    alpha, top_k = float(alpha), None if top_k is None else int(top_k)
    fused: dict[str, float] = {}
    nodes: dict[str, BaseNode] = {}
    for name, result, weight in (
        ("dense", dense_result, 2 * alpha),
        ("sparse", sparse_result, 2 * (1 - alpha)),
    ):
        ids, side_nodes, similarities = _candidates(name, result)
        for point_id, node, score in zip(
            ids, side_nodes, side_scores(similarities, weight), strict=True
        ):
            if point_id in fused:
                fused[point_id] += score
            else:
                fused[point_id] = score
                nodes[point_id] = node
    # sorted() is stable: equal scores keep dense-then-sparse order, as in Qdrant.
    ranked = sorted(fused.items(), key=lambda item: item[1], reverse=True)[:top_k]
    return VectorStoreQueryResult(
        nodes=[nodes[point_id] for point_id, _ in ranked],
        similarities=[float(score) for _, score in ranked],
        ids=[point_id for point_id, _ in ranked],
    )


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _candidates(
    side: str, result: VectorStoreQueryResult
) -> tuple[list[str], Sequence[BaseNode], list[float]]:
    if not isinstance(result, VectorStoreQueryResult):
        msg = (
            f"{side}_result must be a VectorStoreQueryResult (the vector store's answer), "
            f"got {type(result).__name__}"
        )
        raise TypeError(msg)
    nodes = result.nodes or []
    ids = list(result.ids) if result.ids else [node.node_id for node in nodes]
    similarities = list(result.similarities or [])
    if not (len(ids) == len(nodes) == len(similarities)):
        msg = (
            f"the {side} result has {len(nodes)} nodes, {len(ids)} ids and "
            f"{len(similarities)} similarities: a vector store result needs one id and one "
            f"similarity per node"
        )
        raise ValueError(msg)
    for i, s in enumerate(similarities):
        # NaN and infinities would make every fused score NaN or infinite (DBSF), or rank
        # points by a score that means nothing.
        if isinstance(s, bool) or not isinstance(s, numbers.Real) or not math.isfinite(s):
            msg = f"the {side} result's similarity {i} is {s!r}: similarities must be finite"
            raise ValueError(msg)
    if len(set(ids)) < len(ids):
        repeated = next(i for i, count in Counter(ids).items() if count > 1)
        msg = (
            f"the {side} result lists id {repeated!r} twice: each point may appear once per "
            f"side, or its score would count twice"
        )
        raise ValueError(msg)
    return ids, nodes, [float(s) for s in similarities]
