"""Run a cross-encoder on the [CLS]-pruned copy of its graph, kept on disk beside the model.

``pruning.prune_to_cls`` rewrites the graph; this module loads the copy into a fastembed
``TextCrossEncoder`` (built with ``lazy_load=True``), under the options fastembed loads the
published graph with. A copy is used only after it has returned the published graph's
scores on a probe batch; any model whose graph does not fit keeps the published one.

The first load rewrites the graph and writes the copy beside the published ONNX file, as
``<name>.cls-pruned-v<REWRITE_VERSION>.onnx``. Its ONNX metadata holds its key, the
published file's SHA-256 (with the size and modification time it was hashed at), and the
probe: its inputs and the published graph's outputs. Later loads run that file without
loading the published graph, after the same probe, and rewrite it when it is stale (another
published file or rewrite version), unreadable, or fails the probe. It is written under a
temporary name and renamed into place only after it passed the probe, so a killed writer
leaves nothing a later load trusts. Where the folder is read-only the copy is rewritten in
memory, on every load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from fastembed.rerank.cross_encoder import TextCrossEncoder

from . import _fastembed
from .pruning import REWRITE_VERSION, prune_to_cls

logger = logging.getLogger(__name__)

# The pruned graph must return the published graph's scores within this (the benchmark's bound).
TOLERANCE = 1e-4
# Three pairs of different lengths (so two are padded), short: every load runs them.
_PROBE_QUERY = "capital of France"
_PROBE_DOCUMENTS = ("Yes", "Paris.", "Paris, in France.")
# The ONNX metadata entry that holds a pruned copy's key and probe.
METADATA_KEY = "llama_index_fastembed_rerank.cls_pruned"
# A temporary file older than this is a killed writer's: the next writer removes it.
_ABANDONED_AFTER_S = 3600


def cached_path(published: Path) -> Path:
    """Return where the pruned copy of the ONNX file ``published`` is kept."""
    return published.with_name(f"{published.stem}.cls-pruned-v{REWRITE_VERSION}.onnx")


def use_pruned_graph(encoder: TextCrossEncoder) -> bool:
    """Load ``encoder``'s ONNX session from a [CLS]-pruned copy of its graph.

    The copy comes from the disk cache beside the model or is rewritten now, and runs under
    the session options, providers and devices fastembed chose for the published graph.

    Returns:
        Whether the pruned graph is now in use; on False the published graph is in use, or
        left to fastembed to load on first use where there is no ONNX Runtime model.
    """
    name = encoder.model_name
    files = _fastembed.model_files(encoder)
    if files is None:
        logger.info("%s: ONNX graph kept as published (no ONNX Runtime model to rewrite)", name)
        return False
    if len(files) > 1:
        logger.info("%s: ONNX graph kept as published (its weights are external)", name)
        _fastembed.load_session(encoder)
        return False
    published = files[0]
    try:
        if _load_cached(encoder, published):
            return True
    except Exception as e:
        return _keep_published(encoder, e)
    # Outside the fallback: a published graph that does not load is the load's error (which
    # names the file and the fix), not a pruning failure to warn about and load again.
    _fastembed.load_session(encoder)
    try:
        return _rewrite(encoder, published)
    except Exception as e:
        return _keep_published(encoder, e)


def _keep_published(encoder: TextCrossEncoder, error: Exception) -> bool:
    """Any failure to prune leaves the published graph in use, which works."""
    logger.warning(
        "%s: could not prune the ONNX graph to [CLS] (%s: %s); using the published graph",
        encoder.model_name,
        type(error).__name__,
        error,
    )
    _restore(encoder)
    return False


def _load_cached(encoder: TextCrossEncoder, published: Path) -> bool:
    """Load the pruned copy kept beside ``published`` if it is current and passes the probe."""
    cached = cached_path(published)
    if not cached.is_file():
        return False
    try:
        _fastembed.load_session(encoder, cached)
        session = _fastembed.session(encoder)
        if session is None:
            msg = "fastembed loaded no ONNX Runtime session for it"
            raise RuntimeError(msg)
        key = json.loads(session.get_modelmeta().custom_metadata_map.get(METADATA_KEY, "null"))
        stale = _stale(key, published)
        if stale:
            logger.info("%s: rewriting %s (%s)", encoder.model_name, cached, stale)
            _fastembed.drop_session(encoder)
            return False
        inputs = {n: np.array(v, dtype=np.int64) for n, v in key["probe_inputs"].items()}
        problem = _mismatch(key["probe_outputs"], session.run(None, inputs))
    except Exception as e:  # a broken file is rewritten, like a stale one
        problem = f"{type(e).__name__}: {e}"
    if problem:
        logger.warning(
            "%s: the [CLS]-pruned graph at %s is not usable (%s); rewriting it",
            encoder.model_name,
            cached,
            problem,
        )
        _fastembed.drop_session(encoder)
        return False
    logger.info("%s: loaded the [CLS]-pruned ONNX graph from %s", encoder.model_name, cached)
    return True


def _stale(key: Any, published: Path) -> str:  # noqa: ANN401 - parsed JSON
    """Return why a pruned copy with this key does not belong to ``published``, or ''."""
    if not isinstance(key, dict) or key.get("rewrite_version") != REWRITE_VERSION:
        return "written by another version of the rewrite"
    stat = published.stat()
    if (stat.st_size, stat.st_mtime_ns) == (key["source_size"], key["source_mtime_ns"]):
        return ""  # hashed at this size and time: the same content
    if _sha256(published) != key["source_sha256"]:
        return f"{published} has changed since"
    return ""


def _rewrite(encoder: TextCrossEncoder, published: Path) -> bool:
    """Prune the published graph, probe the copy, and keep it beside ``published``."""
    name = encoder.model_name
    session = _fastembed.session(encoder)
    if session is None:
        logger.info("%s: ONNX graph kept as published (no ONNX Runtime session)", name)
        return False
    probe = _fastembed.onnx_inputs(encoder, [(_PROBE_QUERY, d) for d in _PROBE_DOCUMENTS])
    expected = session.run(None, probe)
    # The published session goes first, so that the process never holds the weights more
    # than twice (the graph being rewritten and one session); _restore() reloads it.
    del session
    _fastembed.drop_session(encoder)
    stat = published.stat()
    model = onnx.load(str(published))
    pruned_ops = prune_to_cls(model)
    if not pruned_ops:
        logger.info("%s: ONNX graph kept as published (no [CLS] read to prune to)", name)
        _restore(encoder)
        return False
    key = {
        "rewrite_version": REWRITE_VERSION,
        "source_sha256": _sha256(published),
        "source_size": stat.st_size,
        "source_mtime_ns": stat.st_mtime_ns,
        "probe_inputs": {n: a.tolist() for n, a in probe.items()},
        "probe_outputs": [np.asarray(o).tolist() for o in expected],
    }
    onnx.helper.set_model_props(model, {METADATA_KEY: json.dumps(key)})
    data = model.SerializeToString()
    del model
    cached = cached_path(published)
    written = _write_beside(data, cached)
    try:
        if written is not None:
            del data
            _fastembed.load_session(encoder, written)
        else:  # a read-only cache: rewritten in memory, on every load
            with tempfile.TemporaryDirectory(prefix="llama-index-fastembed-rerank-") as tmp:
                # From a file: a session built from bytes kept ~100 MB more memory, for good.
                path = Path(tmp) / cached.name
                path.write_bytes(data)
                del data
                _fastembed.load_session(encoder, path)
        pruned = _fastembed.session(encoder)
        if pruned is None:
            msg = "fastembed loaded no ONNX Runtime session for it"
            raise RuntimeError(msg)
        mismatch = _mismatch(expected, pruned.run(None, probe))
        if mismatch:
            logger.warning(
                "%s: the [CLS]-pruned ONNX graph scored differently on the probe (%s); using "
                "the published graph",
                name,
                mismatch,
            )
            _restore(encoder)
            return False
        if written is not None:
            os.replace(written, cached)
            written = None
    finally:
        if written is not None:
            written.unlink(missing_ok=True)
    logger.info(
        "%s: %d ONNX ops of the last layer now run on [CLS] only (graph kept at %s)",
        name,
        pruned_ops,
        cached,
    )
    return True


def _write_beside(data: bytes, cached: Path) -> Path | None:
    """Write ``data`` to a temporary file beside ``cached``; None where that cannot be done."""
    folder = cached.parent
    try:
        fd, name = tempfile.mkstemp(prefix=f".{cached.name}.", suffix=".partial", dir=folder)
    except OSError as e:
        logger.info("%s is not writable (%s): the [CLS]-pruned graph is not kept", folder, e)
        return None
    path = Path(name)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        path.chmod(0o644)  # mkstemp makes it private; the cache may be shared
    except OSError as e:
        path.unlink(missing_ok=True)
        logger.info("Could not write to %s (%s): the [CLS]-pruned graph is not kept", folder, e)
        return None
    for old in folder.glob(f".{cached.name}.*.partial"):
        try:
            if time.time() - old.stat().st_mtime > _ABANDONED_AFTER_S:
                old.unlink()
        except OSError:
            pass  # another process removed it first
    return path


def _restore(encoder: TextCrossEncoder) -> None:
    """Put the published graph in use, whatever was loaded in its place."""
    _fastembed.drop_session(encoder)
    _fastembed.load_session(encoder)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _mismatch(expected: Iterable[Any], actual: Iterable[Any]) -> str:
    """Return how two sessions' outputs differ beyond TOLERANCE, or '' where they agree."""
    for i, (want, got) in enumerate(zip(expected, actual, strict=True)):
        want, got = np.asarray(want), np.asarray(got)
        if want.shape != got.shape:
            return f"output {i} has shape {got.shape}, not {want.shape}"
        if not np.allclose(got, want, rtol=TOLERANCE, atol=TOLERANCE):
            return f"output {i} differs by up to {float(np.max(np.abs(got - want))):.2e}"
    return ""
