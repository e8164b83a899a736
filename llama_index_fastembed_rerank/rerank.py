"""FastEmbedRerank: a LlamaIndex node postprocessor over fastembed's TextCrossEncoder."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from typing import Any, Literal

from fastembed.rerank.cross_encoder import TextCrossEncoder
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher  # type: ignore[attr-defined]
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle
from pydantic import Field, field_validator

from . import _fastembed
from .batching import DEFAULT_MAX_BATCH_TOKENS, run_batches, token_lengths
from .cls_pruning import use_pruned_graph
from .default_models import DEFAULT_RERANK_MODEL
from .inputs import checked_list, checked_text, shown, warn, warn_truncated
from .long_documents import DEFAULT_MAX_WINDOWS, cut_windows
from .options import MODEL_CONFIG, FastEmbedEngineOptions, document_options
from .quantization import use_cls_pruned_int8_graph, use_int8_graph

RETRIEVAL_SCORE_KEY = "retrieval_score"

dispatcher = get_dispatcher(__name__)


@document_options
class FastEmbedRerank(FastEmbedEngineOptions, BaseNodePostprocessor):
    """Rerank retrieved nodes with a local fastembed cross-encoder (ONNX, no PyTorch).

    Each node's text is scored against the query by ``TextCrossEncoder``; the nodes come back
    as new ``NodeWithScore`` objects, highest score first (ties keep their input order). A
    node with no text to score (an image node, an empty text) gets the score None and comes
    after every scored node. The caller's nodes, scores and metadata are never changed. The
    model loads on first use, once per process for each model and engine options.

    Example:
        ```python
        reranker = FastEmbedRerank(top_n=1)  # Xenova/ms-marco-MiniLM-L-6-v2
        nodes = [NodeWithScore(node=TextNode(text=t)) for t in
                 ["Berlin is in Germany.", "Paris is the capital of France.", "Cats purr."]]
        best = reranker.postprocess_nodes(nodes, query_str="capital of France")
        [n.node.get_content() for n in best]
        # ['Paris is the capital of France.']
        # n.score: raw logits, higher is more relevant; a clear match is positive and
        # an unrelated text negative (normalize=True maps them into (0, 1)).
        ```
    """

    model_config = MODEL_CONFIG

    _engine_class = TextCrossEncoder
    _model_field = "model"

    model: str = Field(
        default=DEFAULT_RERANK_MODEL,
        description="A cross-encoder from `TextCrossEncoder.list_supported_models()`.",
    )
    top_n: int | None = Field(
        default=2,
        description="How many nodes to return; `None` returns every node, re-sorted.",
    )
    batch_size: int = Field(default=64, ge=1, description="Most query-document pairs per ONNX run.")
    max_batch_tokens: int | None = Field(
        default=DEFAULT_MAX_BATCH_TOKENS,
        ge=1,
        description=(
            "Most tokens per ONNX run, padding included (pairs times the longest pair's tokens); a "
            "longer pair runs alone. `None` leaves batching to `batch_size`. Small runs are "
            "fastest on a CPU; on a GPU raise it or pass `None`."
        ),
    )
    long_documents: Literal["truncate", "max"] = Field(
        default="truncate",
        description=(
            "How a document too long to fit beside the query in the model's window is scored: "
            '`"truncate"` scores its beginning, as fastembed does; `"max"` cuts it into '
            "overlapping windows that each fit, scores every window as a pair of its own and "
            "gives the document its best window's score."
        ),
    )
    max_windows: int = Field(
        default=DEFAULT_MAX_WINDOWS,
        ge=1,
        description=(
            'Most windows scored per document under `long_documents="max"`; text after them '
            "is not scored, and a warning says so."
        ),
    )
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.EMBED,
        description="Which text of a node is scored: `node.get_content(metadata_mode)`.",
    )
    keep_retrieval_score: bool = Field(
        default=False,
        description=(
            'Keep the first-stage score as `metadata["retrieval_score"]` on a copy of the node, '
            "excluded from the LLM and embedding text."
        ),
    )
    score_threshold: float | None = Field(
        default=None,
        description=(
            "Drop nodes scoring below it; applied after `top_n`, on the returned scale (logits, "
            "or (0, 1) with `normalize`)."
        ),
    )
    normalize: bool = Field(
        default=False,
        description=(
            "Map scores to (0, 1) with a sigmoid; otherwise they are the model's raw logits, "
            "unbounded, higher is more relevant."
        ),
    )
    optimize_graph: bool = Field(
        default=True,
        description=(
            "Run the end of the last layer (output projection, feed-forward, norms) for the "
            "[CLS] token alone, the only one the score reads: the same scores for an eighth less "
            "work on MiniLM-L6. The rewritten graph is kept beside the model file, and used only "
            "if it returns the published graph's scores on a probe batch when the model loads; "
            "`False` runs the published ONNX graph as it is."
        ),
    )

    def __init__(self, model: str = DEFAULT_RERANK_MODEL, **data: Any) -> None:
        """Create the reranker; the model itself loads on first use (or ``warm_up()``)."""
        super().__init__(model=model, **data)

    @classmethod
    def class_name(cls) -> str:
        """Return the name LlamaIndex serializes this class under."""
        return "FastEmbedRerank"

    @field_validator("top_n")
    @classmethod
    def _positive_top_n(cls, value: int | None) -> int | None:
        if value is not None and value < 1:
            msg = f"top_n must be >= 1, or None to return every node re-sorted; got {value}"
            raise ValueError(msg)
        return value

    @field_validator("score_threshold")
    @classmethod
    def _comparable_threshold(cls, value: float | None) -> float | None:
        if value is not None and math.isnan(value):
            msg = (
                "score_threshold must be a number or None, got nan: no score is >= NaN, so "
                "every node would be dropped; pass None to keep every node"
            )
            raise ValueError(msg)
        return value

    def _prepare(self) -> Callable[[TextCrossEncoder], object] | None:
        if self.quantize:
            return use_cls_pruned_int8_graph if self.optimize_graph else use_int8_graph
        return use_pruned_graph if self.optimize_graph else None

    def _postprocess_nodes(
        self,
        nodes: list[NodeWithScore],
        query_bundle: QueryBundle | None = None,
    ) -> list[NodeWithScore]:
        if isinstance(query_bundle, str):  # postprocess_nodes(nodes, "query"), positionally
            query_bundle = QueryBundle(query_bundle)
        if query_bundle is not None and not isinstance(query_bundle, QueryBundle):
            msg = (
                f"query_bundle must be a QueryBundle, got {shown(query_bundle)}: call "
                f"postprocess_nodes(nodes, query_str=...)"
            )
            raise TypeError(msg)
        query = _query_text(None if query_bundle is None else query_bundle.query_str)
        nodes = checked_list(
            "nodes", nodes, NodeWithScore, "wrap each node as NodeWithScore(node=..., score=...)"
        )
        dispatcher.event(
            ReRankStartEvent(
                query=query_bundle,
                nodes=nodes,
                top_n=self.top_n or len(nodes),
                model_name=self.model,
            )
        )
        with self.callback_manager.event(
            CBEventType.RERANKING,
            payload={
                EventPayload.NODES: nodes,
                EventPayload.MODEL_NAME: self.model,
                EventPayload.QUERY_STR: query,
                EventPayload.TOP_K: self.top_n,
            },
        ) as event:
            reranked = self._rerank(query, nodes) if nodes else []
            event.on_end(payload={EventPayload.NODES: reranked})
        dispatcher.event(ReRankEndEvent(nodes=reranked))
        return reranked

    def _rerank(self, query: str, nodes: list[NodeWithScore]) -> list[NodeWithScore]:
        texts = [n.node.get_content(metadata_mode=self.metadata_mode) for n in nodes]
        # A node without text (an image, an empty chunk) cannot be judged by a text model: a
        # score for "" would be the model's guess, and could rank it first.
        unique = list(dict.fromkeys(t for t in texts if t.strip()))  # scored once each
        by_text: dict[str, float | None] = dict(zip(unique, self.score(query, unique), strict=True))
        rescored = [self._rescored(n, by_text.get(t)) for n, t in zip(nodes, texts, strict=True)]
        scored = [n for n in rescored if n.score is not None]
        # sorted() is stable with reverse=True: ties keep their input order.
        scored.sort(key=lambda n: n.score, reverse=True)  # type: ignore[arg-type, return-value]
        kept = [*scored, *(n for n in rescored if n.score is None)][: self.top_n]
        if self.score_threshold is not None:
            threshold = self.score_threshold
            kept = [n for n in kept if n.score is not None and n.score >= threshold]
        return kept

    def _rescored(self, old: NodeWithScore, score: float | None) -> NodeWithScore:
        node = old.node
        if self.keep_retrieval_score:
            # A copy, so the caller's node (often shared with a docstore) stays as it was; its
            # metadata deeply, since nested values edited later would be the caller's too.
            node = node.model_copy(
                update={
                    "metadata": {**copy.deepcopy(node.metadata), RETRIEVAL_SCORE_KEY: old.score},
                    "excluded_llm_metadata_keys": _with_key(node.excluded_llm_metadata_keys),
                    "excluded_embed_metadata_keys": _with_key(node.excluded_embed_metadata_keys),
                }
            )
        return NodeWithScore(node=node, score=score)

    def score(self, query: str, texts: Iterable[str]) -> list[float]:
        """Score each text against the query, in input order, on this reranker's scale.

        Pairs are ordered by length and batched within ``batch_size`` and
        ``max_batch_tokens``, so each ONNX run pads only to the longest pair of its own batch;
        the scores equal ``TextCrossEncoder.rerank``'s, an empty text's included. Under
        ``long_documents="max"`` a text too long for the model's window scores as its best
        window.

        Raises:
            ValueError: The query is empty.
            TypeError: The query is not a string, or ``texts`` is not a list of strings.
        """
        query = _query_text(query, call="score(query, texts)")
        texts = checked_list("texts", texts, str, "pass a list of strings, e.g. [text]")
        if not texts:
            return []
        logits = _score_pairs(
            self._model(),
            query,
            texts,
            self.batch_size,
            self.max_batch_tokens,
            self.long_documents,
            self.max_windows,
        )
        if self.normalize:
            return [_sigmoid(x) for x in logits]
        return logits


def _query_text(query: object, call: str = "postprocess_nodes(nodes, query_str=...)") -> str:
    """Return the query, if it is a string with some text in it."""
    if query is None or (isinstance(query, str) and not query.strip()):
        msg = f"FastEmbedRerank needs a non-empty query, got {query!r}: call {call}"
        raise ValueError(msg)
    return checked_text("the query", query)


def _with_key(keys: list[str]) -> list[str]:
    """Return a new list of ``keys`` that holds the retrieval score's key."""
    return [*keys] if RETRIEVAL_SCORE_KEY in keys else [*keys, RETRIEVAL_SCORE_KEY]


def _sigmoid(x: float) -> float:
    # Two branches so that exp never overflows for large |x|.
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


def _score_pairs(
    encoder: TextCrossEncoder,
    query: str,
    texts: list[str],
    batch_size: int,
    max_batch_tokens: int | None,
    long_documents: str,
    max_windows: int,
) -> list[float]:
    tokenizer = _fastembed.tokenizer(encoder)
    if tokenizer is None:  # the public-API fallback: fastembed's own loop
        if long_documents == "max":
            warn(
                f"long_documents='max' needs the tokenizer of {encoder.model_name}, which this "
                f"fastembed version does not expose where this package looks: long documents "
                f"were truncated as fastembed does"
            )
        return [float(s) for s in encoder.rerank(query, texts, batch_size=batch_size)]
    pair_texts = texts
    owners = list(range(len(texts)))  # the text each scored pair belongs to
    encodings = tokenizer.encode_batch([(query, text) for text in texts])
    long_rows = [i for i, e in enumerate(encodings) if e.overflowing]
    window = len(encodings[0].ids) if long_rows else 0  # pairs are padded to the longest
    windows = None
    if long_rows and long_documents == "max":
        windows = cut_windows(tokenizer, query, [texts[i] for i in long_rows], max_windows)
        if windows is None:
            warn(
                f"the query fills the {window}-token window of {encoder.model_name}, leaving "
                f"no room for a document beside it: {len(long_rows)} of {len(texts)} pairs "
                f"were truncated as fastembed does; shorten the query"
            )
        else:
            fits = [i for i, e in enumerate(encodings) if not e.overflowing]
            pair_texts = [texts[i] for i in fits] + windows.texts
            owners = fits + [long_rows[w] for w in windows.owners]
            # One tokenization of every pair scored, so that the session inputs pad alike.
            encodings = tokenizer.encode_batch([(query, text) for text in pair_texts])
            if windows.capped:
                warn(
                    f"{windows.capped} of {len(texts)} documents needed more than "
                    f"max_windows={max_windows} windows of {windows.room} tokens beside the "
                    f"query: their text after window {max_windows} was not scored; raise "
                    f"max_windows to score more of it"
                )
    elif long_rows:
        warn_truncated(
            encoder.model_name,
            encodings,
            "query-document pairs",
            "scored",
            fix=(
                "pass long_documents='max' to score long documents by their best window, "
                "or split them into smaller chunks"
            ),
        )
    lengths = token_lengths(encodings)
    run = _fastembed.session_runner(encoder, encodings, lengths) or (
        lambda rows: encoder.rerank(query, [pair_texts[r] for r in rows], batch_size=len(rows))
    )
    scores = [-math.inf] * len(texts)
    for row, score in run_batches(lengths, batch_size, max_batch_tokens, run):
        owner = owners[row]
        scores[owner] = max(scores[owner], float(score))
    return scores
