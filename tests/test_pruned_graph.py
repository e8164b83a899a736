"""The [CLS]-pruned graph in use: swapped in, probed, and kept on disk beside the model.

Real weights: the stand-in cross-encoder, in a folder of each test's own (``standin_folder``,
links to the build) loaded through ``specific_model_path``, so that every test starts with
no pruned graph kept.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from fastembed.rerank.cross_encoder import TextCrossEncoder
from onnx import numpy_helper

import offline_models
from llama_index_fastembed_rerank import (
    FastEmbedRerank,
    _fastembed,
    cls_pruning,
    kept_graph,
    staging,
)
from llama_index_fastembed_rerank.cls_pruning import ClsPruning, prune_to_cls, use_pruned_graph

QUERY = "A story about a strong historically significant female figure."
TEXTS = [" ".join(["word"] * n) + " Jeanne d'Arc" for n in (1, 30, 120, 400, 700)]
TESTS = Path(__file__).parent


def lazy_encoder(folder: Path) -> TextCrossEncoder:
    """A TextCrossEncoder built as FastEmbedRerank builds one: files found, nothing loaded."""
    offline_models.register_standin()
    return TextCrossEncoder(
        offline_models.STANDIN_RERANK_MODEL, specific_model_path=str(folder), lazy_load=True
    )


def cached_path(published: Path) -> Path:
    return kept_graph.kept_path(published, ClsPruning())


METADATA_KEY = kept_graph.metadata_key(ClsPruning())


def published_file(folder: Path) -> Path:
    return folder / "onnx" / "model.onnx"


def kept_key(folder: Path) -> dict:
    model = onnx.load(str(cached_path(published_file(folder))), load_external_data=False)
    return json.loads({p.key: p.value for p in model.metadata_props}[METADATA_KEY])


def shift_bias(source: Path, dest: Path, by: float = 1.0) -> None:
    """Write ``source``'s graph to ``dest`` with its classifier bias moved ``by``."""
    model = onnx.load(str(source))
    bias = next(t for t in model.graph.initializer if t.name == "classifier.bias")
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + by, bias.name))
    onnx.save(model, str(dest))


@pytest.fixture(scope="module")
def published_scores(real_cross_encoder) -> list[float]:
    return list(real_cross_encoder.rerank(QUERY, TEXTS, batch_size=2))


def assert_pruned_scores(encoder: TextCrossEncoder, expected: list[float]) -> None:
    np.testing.assert_allclose(
        list(encoder.rerank(QUERY, TEXTS, batch_size=2)), expected, atol=1e-5
    )


# --- the swap and its probe -----------------------------------------------------------------


def test_real_first_load_rewrites_and_keeps_the_graph_beside_the_model(
    standin_folder, published_scores, caplog
):
    encoder = lazy_encoder(standin_folder)
    with caplog.at_level(logging.INFO, logger=kept_graph.__name__):
        assert use_pruned_graph(encoder)
    kept = cached_path(published_file(standin_folder))
    assert kept == standin_folder / "onnx" / "model.cls-pruned-v1.onnx"
    assert f"15 ONNX ops of the last layer now run on [CLS] only (graph kept at {kept})" in (
        caplog.text
    )
    assert_pruned_scores(encoder, published_scores)
    key = kept_key(standin_folder)
    assert key["rewrite_version"] == 1
    assert key["source_sha256"] == kept_graph.sha256(published_file(standin_folder))
    assert sorted(p.name for p in kept.parent.iterdir()) == [kept.name, "model.onnx"]
    # The kept graph is the pruned one: fewer nodes run on the full sequence.
    assert len(onnx.load(str(kept)).graph.node) > len(
        onnx.load(str(published_file(standin_folder))).graph.node
    )


def test_real_later_loads_run_the_kept_graph_without_the_published_one(
    standin_folder, published_scores, monkeypatch, caplog
):
    assert use_pruned_graph(lazy_encoder(standin_folder))
    kept = cached_path(published_file(standin_folder))
    written_at = kept.stat().st_mtime_ns
    loaded: list[Path | None] = []
    load_session = _fastembed.load_session

    def recording_load(engine, path=None):
        loaded.append(path)
        load_session(engine, path)

    def no_rewrite(model):
        pytest.fail("the graph was rewritten")

    monkeypatch.setattr(_fastembed, "load_session", recording_load)
    monkeypatch.setattr(cls_pruning, "prune_to_cls", no_rewrite)
    encoder = lazy_encoder(standin_folder)
    with caplog.at_level(logging.INFO, logger=kept_graph.__name__):
        assert use_pruned_graph(encoder)
    assert loaded == [kept]  # never the published graph
    assert f"loaded the [CLS]-pruned ONNX graph from {kept}" in caplog.text
    assert kept.stat().st_mtime_ns == written_at
    assert_pruned_scores(encoder, published_scores)


def test_real_graph_that_scores_differently_is_not_used(
    standin_folder, published_scores, monkeypatch, caplog
):
    def prune_wrongly(model: onnx.ModelProto) -> int:
        count = prune_to_cls(model)
        bias = next(t for t in model.graph.initializer if t.name == "classifier.bias")
        bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 1, bias.name))
        return count

    monkeypatch.setattr(cls_pruning, "prune_to_cls", prune_wrongly)
    encoder = lazy_encoder(standin_folder)
    with caplog.at_level(logging.WARNING, logger=kept_graph.__name__):
        assert not use_pruned_graph(encoder)
    assert "scored differently on the probe (output 0 differs by up to 1.00e+00)" in caplog.text
    # The published graph is in use: fastembed's own scores, not the shifted ones.
    assert_pruned_scores(encoder, published_scores)
    assert not cached_path(published_file(standin_folder)).exists()
    assert [p.name for p in (standin_folder / "onnx").iterdir()] == ["model.onnx"]


def test_real_reranker_options_choose_the_graph(standin_reranker, real_cross_encoder):
    texts = [" ".join(["word"] * n) for n in (3, 50, 300)]
    published = list(real_cross_encoder.rerank("a query", texts))
    pruned = standin_reranker.score("a query", texts)
    plain = standin_reranker.model_copy(update={"optimize_graph": False})
    # Different graphs are different shared models; both give fastembed's scores.
    assert plain._model() is not standin_reranker._model()
    np.testing.assert_allclose(pruned, published, atol=1e-5)
    np.testing.assert_allclose(plain.score("a query", texts), published, atol=1e-5)


def test_an_engine_without_fastembeds_internals_keeps_its_graph(fake_encoder, caplog):
    reranker = FastEmbedRerank(top_n=1)
    with caplog.at_level(logging.INFO, logger=kept_graph.__name__):
        reranker.warm_up()
    assert "ONNX graph kept as published (no ONNX Runtime model to rewrite)" in caplog.text
    assert fake_encoder.instances[0].kwargs["lazy_load"] is True


# --- the kept graph: keyed, checked, rewritten ----------------------------------------------


def test_real_kept_graph_is_rewritten_when_the_published_file_changes(
    standin_folder, published_scores, caplog
):
    assert use_pruned_graph(lazy_encoder(standin_folder))
    published = published_file(standin_folder)
    target = published.resolve()
    published.unlink()
    shift_bias(target, published, by=2.0)  # a new published file, in place of the link
    encoder = lazy_encoder(standin_folder)
    with caplog.at_level(logging.INFO, logger=kept_graph.__name__):
        assert use_pruned_graph(encoder)
    assert f"{published} has changed since" in caplog.text
    assert_pruned_scores(encoder, list(np.add(published_scores, 2.0)))
    assert kept_key(standin_folder)["source_sha256"] == kept_graph.sha256(published)


def test_real_kept_graph_survives_a_copy_of_the_same_content(standin_folder, monkeypatch):
    assert use_pruned_graph(lazy_encoder(standin_folder))
    published = published_file(standin_folder)
    target = published.resolve()
    published.unlink()
    shutil.copyfile(target, published)  # the same bytes, a new modification time
    monkeypatch.setattr(cls_pruning, "prune_to_cls", lambda model: pytest.fail("rewritten"))
    assert use_pruned_graph(lazy_encoder(standin_folder))


def test_real_kept_graph_of_another_rewrite_version_is_not_used(
    standin_folder, published_scores, monkeypatch
):
    assert use_pruned_graph(lazy_encoder(standin_folder))
    monkeypatch.setattr(cls_pruning, "REWRITE_VERSION", 2)
    encoder = lazy_encoder(standin_folder)
    assert use_pruned_graph(encoder)
    names = sorted(p.name for p in (standin_folder / "onnx").iterdir())
    assert names == ["model.cls-pruned-v1.onnx", "model.cls-pruned-v2.onnx", "model.onnx"]
    assert kept_key(standin_folder)["rewrite_version"] == 2
    assert_pruned_scores(encoder, published_scores)


@pytest.mark.parametrize("damage", ["scores", "truncated"])
def test_real_kept_graph_that_is_damaged_is_rewritten(
    standin_folder, published_scores, caplog, damage
):
    assert use_pruned_graph(lazy_encoder(standin_folder))
    kept = cached_path(published_file(standin_folder))
    if damage == "scores":  # a valid graph, with its key and probe, that scores otherwise
        shift_bias(kept, kept, by=0.5)
    else:
        kept.write_bytes(kept.read_bytes()[: kept.stat().st_size // 2])
    encoder = lazy_encoder(standin_folder)
    with caplog.at_level(logging.WARNING, logger=kept_graph.__name__):
        assert use_pruned_graph(encoder)
    assert f"the [CLS]-pruned graph at {kept} is not usable" in caplog.text
    if damage == "scores":
        assert "(output 0 differs by up to 5.00e-01)" in caplog.text
    assert_pruned_scores(encoder, published_scores)
    ort.InferenceSession(str(kept))  # rewritten whole


def test_real_provider_that_is_not_installed_is_the_loads_error_not_the_kept_graphs(
    standin_folder, published_scores, caplog
):
    assert use_pruned_graph(lazy_encoder(standin_folder))
    kept = cached_path(published_file(standin_folder))
    written = (kept.stat().st_mtime_ns, kept.read_bytes())
    missing = next(p for p in ("CUDAExecutionProvider", "TensorrtExecutionProvider")
                   if p not in ort.get_available_providers())  # fmt: skip
    reranker = FastEmbedRerank(
        offline_models.STANDIN_RERANK_MODEL,
        specific_model_path=str(standin_folder),
        providers=[missing],
    )
    with (
        caplog.at_level(logging.INFO, logger=kept_graph.__name__),
        pytest.raises(ValueError, match=missing),
    ):
        reranker.warm_up()
    assert "not usable" not in caplog.text
    assert "rewriting" not in caplog.text
    assert (kept.stat().st_mtime_ns, kept.read_bytes()) == written  # left as it was
    encoder = lazy_encoder(standin_folder)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger=kept_graph.__name__):
        assert use_pruned_graph(encoder)
    assert f"loaded the [CLS]-pruned ONNX graph from {kept}" in caplog.text
    assert_pruned_scores(encoder, published_scores)


def test_real_killed_writer_leaves_nothing_a_later_load_trusts(standin_folder, published_scores):
    # A process that dies (SIGKILL) after writing the graph and before renaming it into place.
    script = (
        "import os, signal\n"
        "import offline_models\n"
        "from llama_index_fastembed_rerank import FastEmbedRerank, staging\n"
        "offline_models.register_standin()\n"
        "staging.os.replace = lambda *a: os.kill(os.getpid(), signal.SIGKILL)\n"
        f"FastEmbedRerank({offline_models.STANDIN_RERANK_MODEL!r}, "
        f"specific_model_path={str(standin_folder)!r}).warm_up()\n"
    )
    env = {**os.environ, "PYTHONPATH": str(TESTS), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", script], env=env, timeout=120, check=False)
    assert done.returncode == -9
    kept = cached_path(published_file(standin_folder))
    (partial,) = (standin_folder / "onnx").glob(".*.partial-*")
    assert partial.stat().st_size > 1_000_000  # it was written, and is not trusted:
    assert not kept.exists()

    encoder = lazy_encoder(standin_folder)
    assert use_pruned_graph(encoder)
    assert_pruned_scores(encoder, published_scores)
    assert kept.is_file()
    assert not partial.exists()  # its writer is dead: the next writer removed it


def test_real_read_only_folder_rewrites_in_memory(
    standin_folder, published_scores, monkeypatch, caplog
):
    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied", str(standin_folder / "onnx"))

    # The tests run as root, which writes anywhere: the folder refuses new files here.
    monkeypatch.setattr(staging.tempfile, "mkstemp", read_only)
    encoder = lazy_encoder(standin_folder)
    with caplog.at_level(logging.INFO, logger=kept_graph.__name__):
        assert use_pruned_graph(encoder)
    assert f"{standin_folder / 'onnx'} is not writable" in caplog.text
    assert_pruned_scores(encoder, published_scores)
    assert [p.name for p in (standin_folder / "onnx").iterdir()] == ["model.onnx"]


def test_real_reranker_warm_up_keeps_the_graph_for_the_next_process(
    standin_folder, real_cross_encoder
):
    texts = TEXTS[:3]
    reranker = FastEmbedRerank(
        offline_models.STANDIN_RERANK_MODEL, specific_model_path=str(standin_folder)
    )
    np.testing.assert_allclose(
        reranker.score(QUERY, texts), list(real_cross_encoder.rerank(QUERY, texts)), atol=1e-5
    )
    assert cached_path(published_file(standin_folder)).is_file()
