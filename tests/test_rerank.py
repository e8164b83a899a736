"""FastEmbedRerank's behaviour, on a fake engine with chosen scores."""

from __future__ import annotations

import asyncio
import copy
import gc
import json
import math
import pickle
import threading
import weakref
from unittest import mock

import pytest
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload
from llama_index.core.callbacks.base_handler import BaseCallbackHandler
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode

from conftest import ROUND_TRIPS, make_nodes
from llama_index_fastembed_rerank import FastEmbedEmbedding, FastEmbedRerank

QUERY = "what is it"


def scores_of(nodes: list[NodeWithScore]) -> list[float | None]:
    return [n.score for n in nodes]


def texts_of(nodes: list[NodeWithScore]) -> list[str]:
    return [n.node.get_content() for n in nodes]


# --- construction, options, serialization ---------------------------------------------------


def test_rerank_defaults_follow_llamaindex():
    reranker = FastEmbedRerank()
    assert reranker.model == "Xenova/ms-marco-MiniLM-L-6-v2"
    assert reranker.top_n == 2
    assert reranker.metadata_mode == MetadataMode.EMBED
    assert FastEmbedRerank.class_name() == "FastEmbedRerank"


def test_rerank_construction_and_serialization_never_load(fake_encoder):
    reranker = FastEmbedRerank(top_n=3)
    FastEmbedRerank.from_dict(reranker.to_dict())
    pickle.loads(pickle.dumps(reranker))
    assert fake_encoder.instances == []


def test_rerank_warm_up_forwards_engine_options(fake_encoder):
    reranker = FastEmbedRerank(
        cache_dir="/models",
        threads=2,
        providers=["CPUExecutionProvider"],
        cuda=False,
        device_ids=[0],
        local_files_only=True,
        model_kwargs={"enable_cpu_mem_arena": False},
    )
    reranker.warm_up()
    (encoder,) = fake_encoder.instances
    assert encoder.model_name == "Xenova/ms-marco-MiniLM-L-6-v2"
    assert encoder.kwargs == {
        "cache_dir": "/models",
        "threads": 2,
        "providers": ["CPUExecutionProvider"],
        "cuda": False,
        "device_ids": [0],
        "local_files_only": True,
        "specific_model_path": None,
        "enable_cpu_mem_arena": False,
        "lazy_load": True,  # the [CLS]-pruned graph is loaded in place of the published one
    }


NON_DEFAULTS = {
    "model": "BAAI/bge-reranker-base",
    "top_n": None,
    "batch_size": 7,
    "max_batch_tokens": 300,
    "long_documents": "max",
    "max_windows": 3,
    "metadata_mode": MetadataMode.LLM,
    "keep_retrieval_score": True,
    "score_threshold": -1.5,
    "normalize": True,
    "optimize_graph": False,
    "cache_dir": "/models",
    "threads": 3,
    "providers": [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"],
    "cuda": False,
    "device_ids": [1, 2],
    "local_files_only": True,
    "specific_model_path": "/models/bge",
    "model_kwargs": {"enable_cpu_mem_arena": False},
    "quantize": "int8",
}


@ROUND_TRIPS
def test_rerank_round_trip_keeps_every_option(round_trip):
    assert set(FastEmbedRerank.model_fields) - set(NON_DEFAULTS) == {"callback_manager"}
    reranker = FastEmbedRerank(**NON_DEFAULTS)
    again = round_trip(reranker)
    assert isinstance(again, FastEmbedRerank)
    for name, value in NON_DEFAULTS.items():
        assert json.dumps(getattr(again, name), default=str) == json.dumps(value, default=str), name


def test_rerank_pickle_after_load_drops_the_session_and_reloads(fake_encoder, caplog):
    reranker = FastEmbedRerank(top_n=None)
    nodes = make_nodes(["a b", "a"])
    first = reranker.postprocess_nodes(nodes, query_str=QUERY)
    again = pickle.loads(pickle.dumps(reranker))
    assert "unpickleable" not in caplog.text  # the engine slot pickles empty, quietly
    assert scores_of(again.postprocess_nodes(nodes, query_str=QUERY)) == scores_of(first)


def test_rerank_to_dict_excludes_engine(fake_encoder):
    reranker = FastEmbedRerank()
    reranker.warm_up()
    data = reranker.to_dict()
    assert data["class_name"] == "FastEmbedRerank"
    assert not any("engine" in key for key in data)
    json.dumps(data, default=str)


@pytest.mark.parametrize("top_n", [0, -3], ids=["zero", "negative"])
def test_rerank_rejects_top_n_below_one(top_n):
    with pytest.raises(ValueError, match=rf"top_n must be >= 1, or None .*got {top_n}"):
        FastEmbedRerank(top_n=top_n)
    reranker = FastEmbedRerank()
    with pytest.raises(ValueError, match="top_n must be >= 1"):
        reranker.top_n = top_n
    assert reranker.top_n == 2


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"max_batch_tokens": 0}, "max_batch_tokens"),
        ({"long_documents": "mean"}, r"long_documents\n  Input should be 'truncate' or 'max'"),
        ({"max_windows": 0}, "max_windows"),
        ({"threads": 0}, "threads"),
        ({"model": "Xenova/ms-marco-MiniLM-L-6"}, "Did you mean 'Xenova/ms-marco-MiniLM-L-6-v2'"),
        ({"model_kwargs": {"threads": 2}}, r"pass threads=\.\.\. directly"),
        ({"model_kwargs": {"lazy_load": True}}, "lazy_load"),
        ({"top_k": 3}, "top_k"),
    ],
    ids=[
        "batch_size",
        "max_batch_tokens",
        "long_documents",
        "max_windows",
        "threads",
        "unknown-model",
        "duplicate-option",
        "reserved",
        "typo",
    ],
)
def test_rerank_rejects_bad_options(options, message):
    with pytest.raises(ValueError, match=message):
        FastEmbedRerank(**options)


def test_rerank_accepts_model_positionally():
    assert FastEmbedRerank("BAAI/bge-reranker-base").model == "BAAI/bge-reranker-base"


# --- ordering, top_n, thresholds ------------------------------------------------------------


def test_rerank_orders_negative_and_zero_logits_with_stable_ties(fake_encoder):
    fake_encoder.scores = {"a": -2.0, "b": 0.0, "c": 3.5, "d": 0.0, "e": -0.5, "f": 3.5}
    nodes = make_nodes("abcdef", scores=[0.9, 0.8, 0.7, 0.6, 0.5, 0.4])
    out = FastEmbedRerank(top_n=None).postprocess_nodes(nodes, query_str=QUERY)
    assert texts_of(out) == ["c", "f", "b", "d", "e", "a"]
    assert scores_of(out) == [3.5, 3.5, 0.0, 0.0, -0.5, -2.0]
    assert all(type(s) is float for s in scores_of(out))


@pytest.mark.parametrize(
    ("top_n", "expected"),
    [(None, "cbda"), (1, "c"), (4, "cbda"), (10, "cbda")],
    ids=["none", "one", "len", "more-than-len"],
)
def test_rerank_top_n(fake_encoder, top_n, expected):
    fake_encoder.scores = {"a": -1.0, "b": 2.0, "c": 5.0, "d": 1.0}
    out = FastEmbedRerank(top_n=top_n).postprocess_nodes(make_nodes("abcd"), query_str=QUERY)
    assert "".join(texts_of(out)) == expected


def test_rerank_threshold_applies_after_top_n(fake_encoder):
    fake_encoder.scores = {"a": -1.0, "b": 2.0, "c": 5.0, "d": 1.0}
    reranker = FastEmbedRerank(top_n=3, score_threshold=1.5)
    out = reranker.postprocess_nodes(make_nodes("abcd"), query_str=QUERY)
    assert texts_of(out) == ["c", "b"]
    reranker.score_threshold = 5.0  # a node scoring exactly the threshold is kept
    assert texts_of(reranker.postprocess_nodes(make_nodes("abcd"), query_str=QUERY)) == ["c"]


def test_rerank_normalize_maps_logits_through_a_sigmoid(fake_encoder):
    fake_encoder.scores = {"a": -800.0, "b": 0.0, "c": 2.0, "d": 800.0}
    reranker = FastEmbedRerank(top_n=None, normalize=True, score_threshold=0.5)
    out = reranker.postprocess_nodes(make_nodes("abcd"), query_str=QUERY)
    assert texts_of(out) == ["d", "c", "b"]  # the threshold is on the (0, 1) scale
    assert scores_of(out) == pytest.approx([1.0, 1 / (1 + math.exp(-2.0)), 0.5])


def test_rerank_returns_new_nodes_and_leaves_the_callers_untouched(fake_encoder):
    fake_encoder.scores = {"a": 1.0, "b": 2.0}
    nodes = make_nodes("ab", scores=[0.25, 0.75])
    nodes[0].node.metadata["source"] = "x"
    before = copy.deepcopy(nodes)
    out = FastEmbedRerank(top_n=None, keep_retrieval_score=True).postprocess_nodes(
        nodes, query_str=QUERY
    )
    assert [n.model_dump() for n in nodes] == [n.model_dump() for n in before]
    assert not any(o is n for o in out for n in nodes)
    assert not any(o.node is n.node for o in out for n in nodes)
    json.loads(out[0].model_dump_json())  # Python floats serialize


def test_rerank_keeps_retrieval_score_out_of_llm_and_embed_text(fake_encoder):
    fake_encoder.scores = {"b": 2.0, "a": 1.0}
    nodes = make_nodes("ab", scores=[0.25, None])
    nodes[0].node.metadata["title"] = "T"
    out = FastEmbedRerank(top_n=None, keep_retrieval_score=True).postprocess_nodes(
        nodes, query_str=QUERY
    )
    by_text = {n.node.get_content(): n for n in out}
    assert by_text["a"].node.metadata == {"title": "T", "retrieval_score": 0.25}
    assert by_text["b"].node.metadata == {"retrieval_score": None}
    for mode in (MetadataMode.LLM, MetadataMode.EMBED):
        text = by_text["a"].node.get_content(metadata_mode=mode)
        assert "retrieval_score" not in text
        assert "title: T" in text
    assert "retrieval_score" in by_text["a"].node.get_content(metadata_mode=MetadataMode.ALL)


def test_rerank_scores_the_metadata_mode_text(fake_encoder):
    node = TextNode(text="body", metadata={"title": "Heading", "secret": "s"})
    node.excluded_embed_metadata_keys = ["secret"]
    nodes = [NodeWithScore(node=node)]
    FastEmbedRerank().postprocess_nodes(nodes, query_str=QUERY)
    FastEmbedRerank(metadata_mode=MetadataMode.NONE).postprocess_nodes(nodes, query_str=QUERY)
    embed_call, none_call = fake_encoder.instances[0].calls
    assert embed_call[1] == [node.get_content(metadata_mode=MetadataMode.EMBED)]
    assert "title: Heading" in embed_call[1][0]
    assert "secret" not in embed_call[1][0]
    assert none_call[1] == ["body"]


def test_rerank_scores_identical_texts_once(fake_encoder):
    nodes = make_nodes(["same text", "other", "same text", "same text"])
    out = FastEmbedRerank(top_n=None).postprocess_nodes(nodes, query_str=QUERY)
    scored = [d for call in fake_encoder.instances[0].calls for d in call[1]]
    assert sorted(scored) == ["other", "same text"]
    assert [n.node.node_id for n in out] == ["node-0", "node-2", "node-3", "node-1"]


def test_rerank_batches_pairs_by_length(fake_encoder):
    texts = ["w " * n for n in (9, 1, 5, 2, 8, 3, 7)]
    reranker = FastEmbedRerank(top_n=None, batch_size=3)
    out = reranker.postprocess_nodes(make_nodes(texts), query_str=QUERY)
    calls = fake_encoder.instances[0].calls
    assert [[len(d.split()) for d in docs] for _, docs, _ in calls] == [[1, 2, 3], [5, 7, 8], [9]]
    assert all(size == len(docs) for _, docs, size in calls)
    assert scores_of(out) == [9.0, 8.0, 7.0, 5.0, 3.0, 2.0, 1.0]


@pytest.mark.parametrize(
    ("max_batch_tokens", "batches"),
    [
        # Pairs are 6 + n tokens long (3 specials, 3 query words): 7, 8, 9 | 11, 13 | 14, 15.
        (30, [[1, 2, 3], [5, 7], [8, 9]]),
        (5, [[1], [2], [3], [5], [7], [8], [9]]),  # a pair over the budget runs alone
        (None, [[1, 2, 3, 5], [7, 8, 9]]),  # batch_size alone
    ],
    ids=["budget", "over-budget", "none"],
)
def test_rerank_caps_padded_tokens_per_batch(fake_encoder, max_batch_tokens, batches):
    texts = ["w " * n for n in (9, 1, 5, 2, 8, 3, 7)]
    reranker = FastEmbedRerank(top_n=None, batch_size=4, max_batch_tokens=max_batch_tokens)
    out = reranker.postprocess_nodes(make_nodes(texts), query_str=QUERY)
    calls = fake_encoder.instances[0].calls
    assert [[len(d.split()) for d in docs] for _, docs, _ in calls] == batches
    assert scores_of(out) == [9.0, 8.0, 7.0, 5.0, 3.0, 2.0, 1.0]


def test_rerank_warns_how_many_pairs_were_truncated(fake_encoder, monkeypatch):
    monkeypatch.setattr(fake_encoder, "window", 8)
    nodes = make_nodes(["one two", "a b c d e f", "a b c d e f g h"])  # +3 specials +3 query words
    with pytest.warns(UserWarning, match=r"^2 of 3 query-document pairs .* 8-token window") as w:
        FastEmbedRerank(top_n=None).postprocess_nodes(nodes, query_str=QUERY)
    assert w[0].filename == __file__  # points at the caller, not at the package


# --- query, empty input, events ---------------------------------------------------------------


@pytest.mark.parametrize("query", [None, "", "   "], ids=["none", "empty", "blank"])
def test_rerank_without_query_says_how_to_pass_one(fake_encoder, events, query):
    bundle = None if query is None else QueryBundle(query)
    with pytest.raises(ValueError, match=r"postprocess_nodes\(nodes, query_str=\.\.\.\)"):
        FastEmbedRerank().postprocess_nodes(make_nodes("ab"), query_bundle=bundle)
    assert not [e for e in events if isinstance(e, ReRankStartEvent | ReRankEndEvent)]


def test_rerank_empty_nodes_return_empty_without_loading(fake_encoder, events):
    assert FastEmbedRerank().postprocess_nodes([], query_str=QUERY) == []
    assert fake_encoder.instances == []
    kinds = [type(e) for e in events if isinstance(e, ReRankStartEvent | ReRankEndEvent)]
    assert kinds == [ReRankStartEvent, ReRankEndEvent]


def test_rerank_emits_balanced_events_with_model_query_and_top_n(fake_encoder, events):
    fake_encoder.scores = {"a": 1.0, "b": 2.0, "c": 0.0}
    reranker = FastEmbedRerank(model="BAAI/bge-reranker-base", top_n=None)
    out = reranker.postprocess_nodes(make_nodes("abc"), query_str=QUERY)
    start, end = (e for e in events if isinstance(e, ReRankStartEvent | ReRankEndEvent))
    assert isinstance(start, ReRankStartEvent)
    assert start.model_name == "BAAI/bge-reranker-base"
    assert start.query.query_str == QUERY
    assert start.top_n == 3  # top_n=None reports every node
    assert isinstance(end, ReRankEndEvent)
    assert [n.node.node_id for n in end.nodes] == [n.node.node_id for n in out]


class _CallbackRecorder(BaseCallbackHandler):
    def __init__(self) -> None:
        super().__init__([], [])
        self.seen: list[tuple[str, CBEventType, dict]] = []

    def on_event_start(self, event_type, payload=None, event_id="", parent_id="", **kwargs):
        self.seen.append(("start", event_type, payload or {}))
        return event_id

    def on_event_end(self, event_type, payload=None, event_id="", **kwargs):
        self.seen.append(("end", event_type, payload or {}))

    def start_trace(self, trace_id=None):
        pass

    def end_trace(self, trace_id=None, trace_map=None):
        pass


def test_rerank_reports_to_the_callback_manager(fake_encoder):
    recorder = _CallbackRecorder()
    reranker = FastEmbedRerank(top_n=1, callback_manager=CallbackManager([recorder]))
    out = reranker.postprocess_nodes(make_nodes(["a b", "a"]), query_str=QUERY)
    (start, end) = recorder.seen
    assert start[:2] == ("start", CBEventType.RERANKING)
    assert start[2][EventPayload.MODEL_NAME] == reranker.model
    assert start[2][EventPayload.QUERY_STR] == QUERY
    assert start[2][EventPayload.TOP_K] == 1
    assert end[:2] == ("end", CBEventType.RERANKING)
    assert end[2][EventPayload.NODES] == out


# --- async, sharing, threads, loading ---------------------------------------------------------


def test_rerank_async_matches_sync_without_blocking_the_loop(fake_encoder, monkeypatch):
    fake_encoder.scores = {"a": 1.0, "b": 3.0, "c": 2.0}
    reranker = FastEmbedRerank(top_n=2)
    nodes = make_nodes("abc")
    sync = reranker.postprocess_nodes(nodes, query_str=QUERY)

    rerank = fake_encoder.rerank
    loop_ran = threading.Event()

    def rerank_once_the_loop_ran(self, *args, **kwargs):
        # The model works until the event loop has run meanwhile: a blocked loop never could.
        assert loop_ran.wait(60), "the event loop did not run while the model worked"
        yield from rerank(self, *args, **kwargs)

    monkeypatch.setattr(fake_encoder, "rerank", rerank_once_the_loop_ran)

    async def main():
        async def ticker():
            for _ in range(3):
                await asyncio.sleep(0)
            loop_ran.set()

        task = asyncio.create_task(ticker())
        result = await reranker.apostprocess_nodes(nodes, query_str=QUERY)
        await task
        return result

    result = asyncio.run(main())
    assert [(n.node.node_id, n.score) for n in result] == [(n.node.node_id, n.score) for n in sync]
    assert loop_ran.is_set()


def test_rerank_instances_with_the_same_options_share_one_model(fake_encoder):
    first, second = FastEmbedRerank(threads=1), FastEmbedRerank(threads=1, top_n=5)
    other = FastEmbedRerank(threads=2)
    for reranker in (first, second, other):
        reranker.postprocess_nodes(make_nodes("ab"), query_str=QUERY)
    assert [e.kwargs["threads"] for e in fake_encoder.instances] == [1, 2]


def test_rerank_per_request_instances_load_the_model_once(fake_encoder):
    fake_encoder.keep_instances = False
    for _ in range(10):
        reranker = FastEmbedRerank(top_n=1)
        reranker.postprocess_nodes(make_nodes(["a b", "a"]), query_str=QUERY)
        del reranker
        gc.collect()
    assert len(fake_encoder.loads) == 1


def test_rerank_keeps_the_three_models_last_handed_out(fake_encoder):
    fake_encoder.keep_instances = False
    for threads in (1, 2, 3, 4, 1, 4):
        FastEmbedRerank(threads=threads).warm_up()
        gc.collect()
    # 1 was let go when 4 came: it loads again; 4 was still kept.
    assert [kwargs["threads"] for kwargs in fake_encoder.loads] == [1, 2, 3, 4, 1]


def test_rerank_release_models_frees_the_models_no_instance_holds(fake_encoder):
    fake_encoder.keep_instances = False
    held = FastEmbedRerank(threads=1)
    models = [weakref.ref(held._model()), weakref.ref(FastEmbedRerank(threads=2)._model())]
    FastEmbedEmbedding.release_models()  # another class's: the reranker models stay
    gc.collect()
    assert all(m() is not None for m in models)
    FastEmbedRerank.release_models()
    gc.collect()
    assert models[0]() is not None  # an instance still holds it
    assert models[1]() is None
    FastEmbedRerank(threads=2).warm_up()
    assert [kwargs["threads"] for kwargs in fake_encoder.loads] == [1, 2, 2]


def test_rerank_reloads_after_an_engine_option_changes(fake_encoder):
    reranker = FastEmbedRerank(threads=1)
    reranker.warm_up()
    reranker.threads = 2
    reranker.warm_up()
    assert [e.kwargs["threads"] for e in fake_encoder.instances] == [1, 2]


def test_rerank_loads_once_when_threads_race(fake_encoder, monkeypatch):
    monkeypatch.setattr(fake_encoder, "load_seconds", 0.2)
    rerankers = [FastEmbedRerank(top_n=None) for _ in range(6)]
    results: list[list[str]] = []

    def work(reranker):
        out = reranker.postprocess_nodes(make_nodes(["x", "x y z", "x y"]), query_str=QUERY)
        results.append(texts_of(out))

    threads = [threading.Thread(target=work, args=(r,)) for r in rerankers]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(fake_encoder.instances) == 1
    assert results == [["x y z", "x y", "x"]] * 6


def test_rerank_a_slow_load_holds_up_no_other_model(fake_encoder, monkeypatch):
    started, may_finish = threading.Event(), threading.Event()
    original = fake_encoder.__init__

    def slow_with_one_thread(self, model_name, **kwargs):
        if kwargs["threads"] == 1:  # this configuration loads slowly, as a download does
            started.set()
            assert may_finish.wait(60)
        original(self, model_name, **kwargs)

    monkeypatch.setattr(fake_encoder, "__init__", slow_with_one_thread)
    slow = threading.Thread(target=FastEmbedRerank(threads=1).warm_up)
    slow.start()
    try:
        # Bounds, not timings: each wait ends as soon as its event comes.
        assert started.wait(60)
        other = threading.Thread(target=FastEmbedRerank(threads=2).warm_up)
        other.start()
        other.join(60)
        assert not other.is_alive()  # it loaded while the slow one was still loading
    finally:
        may_finish.set()
        slow.join()
    assert [kwargs["threads"] for kwargs in fake_encoder.loads] == [2, 1]


def test_rerank_load_failure_names_model_place_and_fixes(fake_encoder, monkeypatch, tmp_path):
    def cannot_load(self, model_name, **kwargs):
        msg = f"Could not load model {model_name} from any source."
        raise ValueError(msg)

    monkeypatch.setattr(fake_encoder, "__init__", cannot_load)
    reranker = FastEmbedRerank(cache_dir=str(tmp_path))
    with pytest.raises(ValueError, match="Xenova/ms-marco-MiniLM-L-6-v2") as error:
        reranker.postprocess_nodes(make_nodes("ab"), query_str=QUERY)
    message = str(error.value)
    assert str(tmp_path / "models--Xenova--ms-marco-MiniLM-L-6-v2") in message
    for fix in ("internet", "cache_dir=", "specific_model_path=", "models import"):
        assert fix in message
    assert "from any source" in str(error.value.__cause__)


def test_rerank_other_engine_errors_pass_through(fake_encoder, monkeypatch):
    def no_provider(self, model_name, **kwargs):
        msg = "Provider CUDAExecutionProvider is not available."
        raise ValueError(msg)

    monkeypatch.setattr(fake_encoder, "__init__", no_provider)
    with pytest.raises(ValueError, match=r"^Provider CUDAExecutionProvider is not available"):
        FastEmbedRerank(providers=["CUDAExecutionProvider"]).warm_up()


def test_rerank_specific_model_path_without_the_model_file(tmp_path):
    reranker = FastEmbedRerank(specific_model_path=str(tmp_path))
    with pytest.raises(ValueError, match=r"has no onnx/model\.onnx") as error:
        reranker.warm_up()
    assert str(tmp_path / "onnx" / "model.onnx") in str(error.value)


# --- long documents ---------------------------------------------------------------------------

WORDS = [f"w{i}" for i in range(20)]
LONG = " ".join(WORDS)
# With a 12-token window and the one-word query "q" ([CLS] q [SEP] ... [SEP]), 8 words fit
# beside the query; windows overlap by at least a quarter of that, 2 words.
WINDOWS = [" ".join(WORDS[0:8]), " ".join(WORDS[6:14]), " ".join(WORDS[12:20])]


@pytest.fixture
def small_window(fake_encoder, monkeypatch):
    monkeypatch.setattr(fake_encoder, "window", 12)
    return fake_encoder


def test_rerank_max_scores_a_long_document_by_its_best_window(small_window):
    small_window.scores = {WINDOWS[0]: 1.0, WINDOWS[1]: 5.0, WINDOWS[2]: -2.0, LONG: 0.5}
    reranker = FastEmbedRerank(top_n=None, long_documents="max", max_batch_tokens=None)
    out = reranker.postprocess_nodes(make_nodes([LONG, "a b"]), query_str="q")
    assert [(n.node.node_id, n.score) for n in out] == [("node-0", 5.0), ("node-1", 2.0)]
    (call,) = small_window.instances[0].calls
    assert call[1] == ["a b", *WINDOWS]  # in one length-sorted batch with the other pairs


def test_rerank_truncate_scores_the_whole_text_as_fastembed_does(small_window):
    small_window.scores = {WINDOWS[1]: 5.0, LONG: 0.5}
    with pytest.warns(UserWarning, match=r"pass long_documents='max' to score long documents"):
        scores = FastEmbedRerank(top_n=None).score("q", [LONG, "a b"])
    assert scores == [0.5, 2.0]
    assert small_window.instances[0].calls[0][1] == ["a b", LONG]


def test_rerank_documents_that_fit_score_alike_under_every_setting(small_window):
    texts = ["a b c", "a", "a b c d e f g h"]  # the longest fills the window exactly
    truncate = FastEmbedRerank(top_n=None).score("q", texts)
    longest = FastEmbedRerank(top_n=None, long_documents="max").score("q", texts)
    assert truncate == longest == [3.0, 1.0, 8.0]
    first, second = small_window.instances[0].calls
    assert first[1] == second[1]


def test_rerank_max_windows_caps_the_windows_and_says_so(small_window):
    small_window.scores = {WINDOWS[0]: 1.0, WINDOWS[1]: -1.0, WINDOWS[2]: 9.0}
    reranker = FastEmbedRerank(top_n=None, long_documents="max", max_windows=2)
    with pytest.warns(
        UserWarning,
        match=r"^1 of 2 documents needed more than max_windows=2 windows of 8 tokens beside the "
        r"query: their text after window 2 was not scored; raise max_windows",
    ) as caught:
        scores = reranker.score("q", [LONG, "a"])
    assert scores == [1.0, 1.0]
    assert caught[0].filename == __file__
    scored = [d for call in small_window.instances[0].calls for d in call[1]]
    assert WINDOWS[2] not in scored


def test_rerank_max_with_a_query_that_fills_the_window(small_window):
    query = " ".join(["q"] * 12)
    with pytest.warns(UserWarning, match="the query fills the 12-token window"):
        scores = FastEmbedRerank(top_n=None, long_documents="max").score(query, [LONG])
    assert scores == [20.0]  # the whole text went to fastembed, as under "truncate"


def test_rerank_runs_on_a_magicmock_a_test_patches_in():
    # The haystack pattern in a user's own unit tests: fastembed's class replaced by a mock.
    with mock.patch("llama_index_fastembed_rerank.rerank.TextCrossEncoder") as encoder_class:
        encoder_class.return_value.rerank.return_value = iter([0.5, 2.0])
        reranker = FastEmbedRerank(top_n=None)
        reranker.warm_up()
        out = reranker.postprocess_nodes(make_nodes(["a", "b"]), query_str=QUERY)
    assert texts_of(out) == ["b", "a"]
    assert scores_of(out) == [2.0, 0.5]
    encoder_class.return_value.rerank.assert_called_once_with(QUERY, ["a", "b"], batch_size=64)


def test_rerank_one_folder_however_spelt_is_one_model(fake_encoder, tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    model = tmp_path / "model"
    (model / "onnx").mkdir(parents=True)
    (model / "onnx" / "model.onnx").touch()  # the fake reads nothing; load() looks for it
    (tmp_path / "link").symlink_to(cache, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    for spelt in (str(cache), f"{cache}/", "cache", "./cache/", f"{model}/../cache", "link"):
        FastEmbedRerank(cache_dir=spelt).warm_up()
    for spelt in (str(model), f"{model}/", "model", "./model/"):
        FastEmbedRerank(specific_model_path=spelt).warm_up()
    assert len(fake_encoder.loads) == 2


def test_rerank_keep_retrieval_score_shares_nothing_the_caller_can_see_change(fake_encoder):
    node = TextNode(text="a", metadata={"tags": ["x"], "source": {"page": 1}})
    node.excluded_llm_metadata_keys = ["retrieval_score"]
    out = FastEmbedRerank(keep_retrieval_score=True).postprocess_nodes(
        [NodeWithScore(node=node, score=0.5)], query_str=QUERY
    )
    copied = out[0].node
    copied.metadata["tags"].append("y")
    copied.metadata["source"]["page"] = 2
    copied.excluded_llm_metadata_keys.append("tags")
    assert node.metadata == {"tags": ["x"], "source": {"page": 1}}
    assert node.excluded_llm_metadata_keys == ["retrieval_score"]


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"top_n": -1}, "top_n must be >= 1"),
        ({"top_n": 0}, "top_n must be >= 1"),
        ({"batch_size": 0}, "batch_size"),
        ({"score_threshold": math.nan}, "score_threshold"),
        ({"tpo_n": 3}, "tpo_n"),
    ],
    ids=["negative", "zero", "batch_size", "nan", "misspelt"],
)
def test_rerank_model_copy_checks_its_update(update, message):
    reranker = FastEmbedRerank(top_n=3)
    with pytest.raises(ValueError, match=message):
        reranker.model_copy(update=update)
    assert reranker.top_n == 3


def test_rerank_model_copy_has_its_own_engine_slot(fake_encoder):
    reranker = FastEmbedRerank(top_n=None)
    reranker.warm_up()
    for copied in (reranker.model_copy(), reranker.model_copy(update={"top_n": 1}, deep=True)):
        assert copied._engine is not reranker._engine
        assert copied._engine.loaded is None
        out = copied.postprocess_nodes(make_nodes(["a b", "a"]), query_str=QUERY)
        assert texts_of(out) == (["a b", "a"] if copied.top_n is None else ["a b"])
    assert len(fake_encoder.instances) == 1  # the copies share the process's model
