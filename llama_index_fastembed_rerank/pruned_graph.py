"""Run a cross-encoder on the [CLS]-pruned copy of its graph, checked on a probe batch.

``pruning.prune_to_cls`` rewrites the graph; this module swaps the copy into a loaded
fastembed ``TextCrossEncoder``, under the options fastembed loads the published graph with.
The copy is used only after it has returned the published graph's scores on a probe batch;
any model whose graph does not fit keeps the published one.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from fastembed.rerank.cross_encoder import TextCrossEncoder

from . import _fastembed
from .pruning import prune_to_cls

logger = logging.getLogger(__name__)

# The pruned graph must return the published graph's scores within this (the benchmark's bound).
TOLERANCE = 1e-4
_PROBE_QUERY = "Which city is the capital of France?"
_PROBE_DOCUMENTS = (
    "Paris.",
    "Paris is the capital and most populous city of France, on the Seine.",
    "Lyon lies at the confluence of the Rhone and the Saone. Marseille is a port on the "
    "Mediterranean coast, and Bordeaux is known for its wine; none of them is the capital, "
    "which has been Paris for most of the history of the French state.",
)


def use_pruned_graph(encoder: TextCrossEncoder) -> bool:
    """Swap ``encoder``'s ONNX session for one on a [CLS]-pruned copy of its graph.

    The copy runs under the session options, providers and devices fastembed chose for the
    published graph. It is kept only if it returns the published graph's scores on a probe
    batch of three pairs of different lengths.

    Returns:
        Whether the pruned graph is now in use; False leaves the published graph in use.
    """
    name = encoder.model_name
    files = _fastembed.model_files(encoder)
    published = _fastembed.session(encoder)
    if files is None or published is None:
        logger.info("%s: ONNX graph kept as published (no ONNX Runtime session)", name)
        return False
    if len(files) > 1:
        logger.info("%s: ONNX graph kept as published (its weights are external)", name)
        return False
    mismatch = ""
    try:
        probe = _fastembed.onnx_inputs(encoder, [(_PROBE_QUERY, d) for d in _PROBE_DOCUMENTS])
        expected = published.run(None, probe)
        # The published session goes first, so that the process never holds the weights more
        # than twice (the graph being rewritten and one session); _restore() reloads it.
        _fastembed.drop_session(encoder)
        published = None
        model = onnx.load(str(files[0]))
        pruned_ops = prune_to_cls(model)
        if not pruned_ops:
            logger.info("%s: ONNX graph kept as published (no [CLS] read to prune to)", name)
            _restore(encoder)
            return False
        with tempfile.TemporaryDirectory(prefix="llama-index-fastembed-rerank-") as tmp:
            # From a file: a session built from bytes kept ~100 MB more memory, for good.
            path = Path(tmp) / "model.onnx"
            onnx.save(model, str(path))
            del model
            _fastembed.load_session(encoder, path)
        pruned = _fastembed.session(encoder)
        if pruned is None:
            msg = "fastembed loaded no ONNX Runtime session for it"
            raise RuntimeError(msg)
        mismatch = _mismatch(expected, pruned.run(None, probe))
    except Exception as e:  # any failure leaves the published graph, which works
        logger.warning(
            "%s: could not prune the ONNX graph to [CLS] (%s: %s); using the published graph",
            name,
            type(e).__name__,
            e,
        )
        _restore(encoder)
        return False
    if mismatch:
        logger.warning(
            "%s: the [CLS]-pruned ONNX graph scored differently on the probe (%s); using the "
            "published graph",
            name,
            mismatch,
        )
        _restore(encoder)
        return False
    logger.info("%s: %d ONNX ops of the last layer now run on [CLS] only", name, pruned_ops)
    return True


def _restore(encoder: TextCrossEncoder) -> None:
    """Put the published graph back in use, whatever was loaded in its place."""
    _fastembed.drop_session(encoder)
    _fastembed.load_session(encoder)


def _mismatch(expected: Iterable[Any], actual: Iterable[Any]) -> str:
    """Return how two sessions' outputs differ beyond TOLERANCE, or '' where they agree."""
    for i, (want, got) in enumerate(zip(expected, actual, strict=True)):
        want, got = np.asarray(want), np.asarray(got)
        if want.shape != got.shape:
            return f"output {i} has shape {got.shape}, not {want.shape}"
        if not np.allclose(got, want, rtol=TOLERANCE, atol=TOLERANCE):
            return f"output {i} differs by up to {float(np.max(np.abs(got - want))):.2e}"
    return ""
