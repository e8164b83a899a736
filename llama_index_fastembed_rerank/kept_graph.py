"""Run a fastembed model on a rewritten copy of its ONNX graph, kept on disk beside the model.

A ``GraphRewrite`` (the [CLS] pruning in ``cls_pruning``) turns the published graph into
another one; this module loads the copy into a fastembed model (built with
``lazy_load=True``), under the options fastembed loads the published graph with. A copy is
used only after the rewrite has accepted its outputs on a probe batch against the published
graph's; any model whose graph does not fit keeps the published one.

The first load rewrites the graph and keeps the copy beside the published ONNX file, as
``<name>.<rewrite>-v<version>.onnx``. Its ONNX metadata holds its key, the published file's
SHA-256 (with the size and modification time it was hashed at), and the probe: its inputs and
the published graph's outputs (what of them the rewrite's ``fingerprint`` keeps). Later loads
run that file without loading the published graph, once the rewrite accepts its probe outputs
again, and rewrite it when it is stale (another published file or rewrite version),
unreadable, or fails the probe. It is staged and renamed
into place only after it passed the probe (``staging``), so a killed writer leaves nothing a
later load trusts. Where the folder is read-only the copy is rewritten in memory, on every load.
"""

from __future__ import annotations

import hashlib
import json
import logging
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from . import _fastembed, staging
from .cache_layout import add_file_to_digest

if TYPE_CHECKING:
    import onnx

logger = logging.getLogger(__name__)


class GraphRewrite(Protocol):
    """A rewrite of a model's ONNX graph, kept beside the model once it passed the probe."""

    @property
    def label(self) -> str:
        """The copy, in messages: ``[CLS]-pruned``."""

    @property
    def suffix(self) -> str:
        """The copy's file name part, with the rewrite's version: ``cls-pruned-v1``."""

    @property
    def version(self) -> int | str:
        """The rewrite's version (JSON): copies written by another version are not used."""

    @property
    def probe(self) -> Sequence[Any]:
        """What the probe batch is made of: query-document pairs, or texts."""

    def apply(self, model: onnx.ModelProto) -> str:
        """Rewrite ``model`` in place; say what changed, or return '' where nothing fits."""

    def fingerprint(self, outputs: Sequence[Any]) -> list[Any]:
        """Return what of the probe's outputs is kept with the copy and compared at each load.

        All of them, or a part of large ones (an embedder's per-token outputs): the key is
        read at every load.
        """

    def accept(self, published: Sequence[Any], rewritten: Sequence[Any]) -> str:
        """Say how the copy's probe outputs differ too much from the published graph's; ''.

        The same rule decides when the copy is written and at every load after.
        """


def kept_path(published: Path, rewrite: GraphRewrite) -> Path:
    """Return where the copy of the ONNX file ``published`` made by ``rewrite`` is kept."""
    return published.with_name(f"{published.stem}.{rewrite.suffix}.onnx")


def metadata_key(rewrite: GraphRewrite) -> str:
    """Return the ONNX metadata entry that holds a kept copy's key and probe."""
    return f"llama_index_fastembed_rerank.{rewrite.suffix.rsplit('-v', 1)[0].replace('-', '_')}"


def use_kept_graph(engine: Any, rewrite: GraphRewrite) -> bool:  # noqa: ANN401 - fastembed's
    """Load ``engine``'s ONNX session from the copy of its graph that ``rewrite`` makes.

    The copy comes from the disk beside the model or is rewritten now, and runs under the
    session options, providers and devices fastembed chose for the published graph.

    Returns:
        Whether the copy is now in use; on False the published graph is in use, or left to
        fastembed to load on first use where there is no ONNX Runtime model.
    """
    name = engine.model_name
    files = _fastembed.model_files(engine)
    if files is None:
        logger.info("%s: ONNX graph kept as published (no ONNX Runtime model to rewrite)", name)
        return False
    if len(files) > 1:
        logger.info("%s: ONNX graph kept as published (its weights are external)", name)
        _fastembed.load_session(engine)
        return False
    published = files[0]
    # Outside the fallback: a published graph that does not load is the load's error (which
    # names the file and the fix), not a rewrite failure to warn about and load again.
    if _load_kept(engine, published, rewrite):
        return True
    if _fastembed.session(engine) is None:
        _fastembed.load_session(engine)
    try:
        return _rewrite(engine, published, rewrite)
    except Exception as e:
        return _keep_published(engine, rewrite, e)


def _keep_published(engine: Any, rewrite: GraphRewrite, error: Exception) -> bool:  # noqa: ANN401
    """Any failure to rewrite leaves the published graph in use, which works."""
    logger.warning(
        "%s: could not make the %s ONNX graph (%s: %s); using the published graph",
        engine.model_name,
        rewrite.label,
        type(error).__name__,
        error,
    )
    _restore(engine)
    return False


def _load_kept(engine: Any, published: Path, rewrite: GraphRewrite) -> bool:  # noqa: ANN401
    """Load the copy kept beside ``published`` if it is current and passes the probe.

    Where the copy's session cannot be made, the published graph's is made in its place:
    if that fails too, the session options are at fault (a provider that is not installed),
    and its error is the load's; if not, the copy is, and it is rewritten. On False the
    published graph's session is loaded, or none.

    Raises:
        Exception: The published graph cannot be loaded either: fastembed's error.
    """
    kept = kept_path(published, rewrite)
    if not kept.is_file():
        return False
    try:
        _fastembed.load_session(engine, kept)
    except Exception as e:
        _fastembed.drop_session(engine)
        _fastembed.load_session(engine)  # raises where the options are at fault
        _warn_unusable(engine, rewrite, kept, f"{type(e).__name__}: {e}")
        return False
    try:
        session = _fastembed.session(engine)
        if session is None:
            msg = "fastembed loaded no ONNX Runtime session for it"
            raise RuntimeError(msg)
        meta = session.get_modelmeta().custom_metadata_map
        key = json.loads(meta.get(metadata_key(rewrite), "null"))
        stale = _stale(key, published, rewrite)
        if stale:
            logger.info("%s: rewriting %s (%s)", engine.model_name, kept, stale)
            _fastembed.drop_session(engine)
            return False
        inputs = {n: np.array(v, dtype=np.int64) for n, v in key["probe_inputs"].items()}
        problem = rewrite.accept(
            key["probe_outputs"], rewrite.fingerprint(session.run(None, inputs))
        )
    except Exception as e:  # a broken file is rewritten, like a stale one
        problem = f"{type(e).__name__}: {e}"
    if problem:
        _warn_unusable(engine, rewrite, kept, problem)
        _fastembed.drop_session(engine)
        return False
    logger.info("%s: loaded the %s ONNX graph from %s", engine.model_name, rewrite.label, kept)
    return True


def _warn_unusable(engine: Any, rewrite: GraphRewrite, kept: Path, problem: str) -> None:  # noqa: ANN401
    logger.warning(
        "%s: the %s graph at %s is not usable (%s); rewriting it",
        engine.model_name,
        rewrite.label,
        kept,
        problem,
    )


def _stale(key: Any, published: Path, rewrite: GraphRewrite) -> str:  # noqa: ANN401 - JSON
    """Return why a kept copy with this key does not belong to ``published``, or ''."""
    if not isinstance(key, dict) or key.get("rewrite_version") != rewrite.version:
        return "written by another version of the rewrite"
    stat = published.stat()
    if (stat.st_size, stat.st_mtime_ns) == (key["source_size"], key["source_mtime_ns"]):
        return ""  # hashed at this size and time: the same content
    if sha256(published) != key["source_sha256"]:
        return f"{published} has changed since"
    return ""


def _rewrite(engine: Any, published: Path, rewrite: GraphRewrite) -> bool:  # noqa: ANN401
    """Rewrite the published graph, probe the copy, and keep it beside ``published``."""
    import onnx

    name = engine.model_name
    session = _fastembed.session(engine)
    if session is None:
        logger.info("%s: ONNX graph kept as published (no ONNX Runtime session)", name)
        return False
    probe = _fastembed.onnx_inputs(engine, list(rewrite.probe))
    expected = rewrite.fingerprint(session.run(None, probe))
    # The published session goes first, so that the process never holds the weights more
    # than twice (the graph being rewritten and one session); _restore() reloads it.
    del session
    _fastembed.drop_session(engine)
    stat = published.stat()
    model = onnx.load(str(published))
    done = rewrite.apply(model)
    if not done:
        logger.info("%s: ONNX graph kept as published (no %s graph to make)", name, rewrite.label)
        _restore(engine)
        return False
    key = {
        "rewrite_version": rewrite.version,
        "source_sha256": sha256(published),
        "source_size": stat.st_size,
        "source_mtime_ns": stat.st_mtime_ns,
        "probe_inputs": {n: a.tolist() for n, a in probe.items()},
        "probe_outputs": [np.asarray(o).tolist() for o in expected],
    }
    onnx.helper.set_model_props(model, {metadata_key(rewrite): json.dumps(key)})
    data = model.SerializeToString()
    del model
    kept = kept_path(published, rewrite)
    staged = _stage(kept)
    try:
        with tempfile.TemporaryDirectory(prefix="llama-index-fastembed-rerank-") as tmp:
            # From a file: a session built from bytes kept ~100 MB more memory, for good.
            trial = staged or Path(tmp) / kept.name
            trial.write_bytes(data)
            del data
            _fastembed.load_session(engine, trial)
            candidate = _fastembed.session(engine)
            if candidate is None:
                msg = "fastembed loaded no ONNX Runtime session for it"
                raise RuntimeError(msg)
            refused = rewrite.accept(expected, rewrite.fingerprint(candidate.run(None, probe)))
        if refused:
            logger.warning(
                "%s: the %s ONNX graph scored differently on the probe (%s); using the "
                "published graph",
                name,
                rewrite.label,
                refused,
            )
            _restore(engine)
            return False
        if staged is not None:
            staging.commit(staged, kept)
            staged = None
            where = f"graph kept at {kept}"
        else:
            where = "graph rewritten in memory: the folder is read-only"
    finally:
        if staged is not None:
            staging.discard(staged)
    logger.info("%s: %s (%s)", name, done, where)
    return True


def _stage(kept: Path) -> Path | None:
    """Stage a file for ``kept`` beside it; None where the folder cannot be written."""
    try:
        return staging.stage(kept)
    except OSError as e:
        logger.info("%s is not writable (%s): the rewritten graph is not kept", kept.parent, e)
        return None


def _restore(engine: Any) -> None:  # noqa: ANN401 - fastembed's model
    """Put the published graph in use, whatever was loaded in its place."""
    _fastembed.drop_session(engine)
    _fastembed.load_session(engine)


def sha256(path: Path) -> str:
    """Return the SHA-256 of a file's content."""
    return add_file_to_digest(hashlib.sha256(), path).hexdigest()


def mismatch(expected: Iterable[Any], actual: Iterable[Any], tolerance: float) -> str:
    """Return how two sessions' outputs differ beyond ``tolerance``, or '' where they agree."""
    for i, (want, got) in enumerate(zip(expected, actual, strict=True)):
        want, got = np.asarray(want), np.asarray(got)
        if want.shape != got.shape:
            return f"output {i} has shape {got.shape}, not {want.shape}"
        if not np.allclose(got, want, rtol=tolerance, atol=tolerance):
            return f"output {i} differs by up to {float(np.max(np.abs(got - want))):.2e}"
    return ""
