"""The ``llama-index-fastembed-rerank`` command: ingest files, query them, move models around.

Every failure it can foresee ends in one ``error:`` line on stderr and exit status 2, before
anything is written. Exit status 1 means an ingest skipped files it could not read (each
reported) and ingested the rest; 130 an interrupt (run the same command again to finish).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TextIO
from urllib.parse import urlsplit, urlunsplit

from fastembed import SparseTextEmbedding, TextEmbedding
from fastembed.rerank.cross_encoder import TextCrossEncoder

from .embedding import DEFAULT_EMBED_MODEL, FastEmbedEmbedding
from .engine import find_model
from .ingest import INSTALL_HINT, check_paths, ingest, model_tokens
from .offline import KINDS, cached_files, export_model, import_model
from .rerank import DEFAULT_RERANK_MODEL, FastEmbedRerank
from .sparse import DEFAULT_SPARSE_MODEL, FastEmbedSparseEmbedding

if TYPE_CHECKING:
    from llama_index.core.schema import NodeWithScore
    from llama_index.vector_stores.qdrant import QdrantVectorStore
    from qdrant_client import QdrantClient

PROG = "llama-index-fastembed-rerank"
# The collection's own record of what its vectors are, in Qdrant's collection metadata.
RECORD_KEY = "llama_index_fastembed_rerank"
DENSE_VECTOR = "text-dense"  # QdrantVectorStore's name for the dense vector
# Chunk size where the embedding model's window is unknown (a model with no tokenizer).
DEFAULT_CHUNK_SIZE = 256


class CommandError(Exception):
    """A failure the command foresaw: printed as one ``error:`` line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one ``error:`` line like every other failure."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    _quiet_libraries()
    try:
        return int(args.run(args))
    except BrokenPipeError:  # the reader went away (| head): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except (CommandError, ValueError, OSError, ImportError) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)  # noqa: T201
        return 2
    except Exception as e:
        # A Qdrant server's refusal (ApiException: a 403 for a read-only key, a 409 from a
        # concurrent create, a timeout) is a failure to report, not a bug to trace.
        if not type(e).__module__.startswith("qdrant_client"):
            raise
        print(f"error: Qdrant: {_one_line(e)}", file=sys.stderr)  # noqa: T201
        return 2
    except KeyboardInterrupt:
        print("interrupted: run the same command again to finish", file=sys.stderr)  # noqa: T201
        return 130


# --- commands -------------------------------------------------------------------------------


def _ingest(args: argparse.Namespace) -> int:
    if args.chunk_size is not None:
        _check_overlap(args.chunk_size, args.chunk_overlap, "--chunk-size")
    check_paths(args.paths)  # a missing path fails here, before anything is written
    client, where = _client(args)
    with closing(client):
        record = _record(client, args.collection)
        embed_name, sparse_name = _models(args, record, creating=True)
        embed_model = _embed_model(embed_name, args)
        if record is not None or client.collection_exists(args.collection):
            _check_vector_size(client, args.collection, embed_model)
        sparse_model = _sparse_model(sparse_name, args) if sparse_name else None
        embed_model.warm_up()  # a missing model fails here, before the collection is made
        if sparse_model is not None:
            sparse_model.warm_up()
        tokens = model_tokens(embed_model)
        chunk_size = args.chunk_size or (tokens.room if tokens else DEFAULT_CHUNK_SIZE)
        if args.chunk_size is None:
            _check_overlap(chunk_size, args.chunk_overlap, f"{embed_name}'s chunk size")
        elif tokens is not None and args.chunk_size > tokens.room:
            print(  # noqa: T201
                f"warning: --chunk-size {args.chunk_size} is more than the {tokens.room} tokens "
                f"{embed_name} reads (its {tokens.window}-token window less {tokens.special} "
                f"special tokens): longer chunks lose their ends when embedded; leave "
                f"--chunk-size out to fit the model",
                file=sys.stderr,
            )

        def open_store() -> QdrantVectorStore:
            if not client.collection_exists(args.collection):
                _create_collection(client, args.collection, embed_model, sparse_model)
            return _store(client, args.collection, sparse_model)

        report = ingest(
            args.paths,
            client,
            args.collection,
            open_store,
            embed_model,
            chunk_size=chunk_size,
            chunk_overlap=args.chunk_overlap,
            prune=args.prune,
            progress=_progress,
            tokenizer=tokens,
        )
        exists = client.collection_exists(args.collection)
        total = client.count(args.collection, exact=True).count if exists else 0
    for path, reason in report.skipped:
        # A name that is not UTF-8 is shown with its bytes escaped (\\xe9).
        shown = os.fsencode(path).decode(errors="backslashreplace")
        print(f"error: skipped {shown}: {_one_line(reason)}", file=sys.stderr)  # noqa: T201
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
        f"{args.collection}: {', '.join(parts)}; {total} chunks in the collection ({where})"
    )
    return 1 if report.skipped else 0


def _check_overlap(chunk_size: int, overlap: int, size_name: str) -> None:
    if overlap >= chunk_size:
        msg = f"--chunk-overlap {overlap} must be smaller than {size_name} {chunk_size}"
        raise CommandError(msg)


def _query(args: argparse.Namespace) -> int:
    from llama_index.core import VectorStoreIndex

    client, _ = _client(args)
    with closing(client):
        record = _record(client, args.collection)
        if record is None and not client.collection_exists(args.collection):
            names = sorted(c.name for c in client.get_collections().collections)
            msg = (
                f"No collection {args.collection!r} here (collections: "
                f"{', '.join(names) or 'none'}): ingest into it first"
            )
            raise CommandError(msg)
        embed_name, sparse_name = _models(args, record, creating=False)
        embed_model = _embed_model(embed_name, args)
        _check_vector_size(client, args.collection, embed_model)
        sparse_model = _sparse_model(sparse_name, args) if args.hybrid and sparse_name else None
        reranker = None
        if not args.no_rerank:
            reranker = FastEmbedRerank(
                args.rerank_model, top_n=args.top_n, keep_retrieval_score=True, **_engine(args)
            )
        for model in (embed_model, sparse_model, reranker):
            if model is not None:
                model.warm_up()
        store = _store(client, args.collection, sparse_model)
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
    rows = [_result(n, retrieval_score) for n, retrieval_score in results]
    if args.json:
        json.dump(rows, sys.stdout, indent=2, ensure_ascii=False)
        print()  # noqa: T201
    else:
        _print_results(rows, sys.stdout, reranked=reranker is not None)
    return 0


def _models_list(args: argparse.Namespace) -> int:
    cache = Path(args.cache_dir) if args.cache_dir else None
    from .engine import default_cache_dir

    cache = cache or default_cache_dir()
    rows = []
    for engine in (TextEmbedding, SparseTextEmbedding, TextCrossEncoder):
        for description in engine.list_supported_models():
            hf_repo = description["sources"].get("hf")
            cached = bool(hf_repo) and cached_files(cache, hf_repo, description) is not None
            rows.append(
                (
                    KINDS[engine],
                    description["model"],
                    f"{description.get('size_in_GB', 0):.2f}",
                    description.get("license") or "-",
                    "yes" if cached else "-",
                )
            )
    _print_table(("kind", "model", "GB", "license", "cached"), rows, sys.stdout)
    print(f"\ncache: {cache}")  # noqa: T201
    return 0


def _models_import(args: argparse.Namespace) -> int:
    snapshot = import_model(args.source, args.model_name, cache_dir=args.cache_dir)
    print(f"Imported {args.model_name} into {snapshot}")  # noqa: T201
    return 0


def _models_export(args: argparse.Namespace) -> int:
    folder = export_model(args.model_name, args.to, cache_dir=args.cache_dir)
    print(  # noqa: T201
        f"Exported {args.model_name} to {folder}; on the other machine: "
        f"{PROG} models import {folder} {args.model_name}"
    )
    return 0


# --- Qdrant -----------------------------------------------------------------------------------


def _client(args: argparse.Namespace) -> tuple[QdrantClient, str]:
    """Connect to Qdrant; return the client and where it is, with no credentials in it."""
    try:
        from llama_index.vector_stores.qdrant import QdrantVectorStore  # noqa: F401
        from qdrant_client import QdrantClient
    except ImportError as e:
        msg = f"ingest and query need the Qdrant vector store: {INSTALL_HINT}"
        raise CommandError(msg) from e
    url = args.qdrant_url or os.environ.get("QDRANT_URL")
    if url and args.qdrant_path:
        msg = "pass --qdrant-url (or QDRANT_URL) or --qdrant-path, not both"
        raise CommandError(msg)
    if url:
        where = _without_credentials(url)
        # The key only ever travels to the server: never printed, logged or stored.
        client = QdrantClient(url=url, api_key=os.environ.get("QDRANT_API_KEY") or None)
        try:
            client.get_collections()
        except Exception as e:  # qdrant-client raises several kinds for an unreachable server
            client.close()
            msg = f"cannot reach Qdrant at {where}: {type(e).__name__}: {e}"
            raise CommandError(msg) from e
        return client, f"Qdrant at {where}"
    path = Path(args.qdrant_path or _default_qdrant_path()).expanduser().absolute()
    if path.exists() and not path.is_dir():
        msg = f"--qdrant-path {str(path)!r} is a file: pass a folder"
        raise CommandError(msg)
    try:
        client = QdrantClient(path=str(path))
    except RuntimeError as e:  # the folder is locked by another process
        msg = (
            f"embedded Qdrant at {path} is in use by another process: wait for it, or run a "
            f"Qdrant server and pass --qdrant-url"
        )
        raise CommandError(msg) from e
    return client, f"embedded Qdrant at {path}"


def _default_qdrant_path() -> Path:
    import platformdirs

    return Path(platformdirs.user_data_dir(PROG, appauthor=False)) / "qdrant"


def _without_credentials(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


def _record(client: QdrantClient, collection: str) -> dict[str, Any] | None:
    """Return what the collection records about its models; None if absent or not ours."""
    if not client.collection_exists(collection):
        return None
    metadata = getattr(client.get_collection(collection).config, "metadata", None) or {}
    record = metadata.get(RECORD_KEY)
    return record if isinstance(record, dict) else None


def _models(
    args: argparse.Namespace, record: dict[str, Any] | None, *, creating: bool
) -> tuple[str, str | None]:
    """Return the dense and sparse model names, checked against the collection's record."""
    if args.sparse_model and not args.hybrid:
        msg = f"--sparse-model {args.sparse_model} is for --hybrid: add --hybrid"
        raise CommandError(msg)
    wants_hybrid = bool(args.hybrid)
    if record is None:
        sparse = (args.sparse_model or DEFAULT_SPARSE_MODEL) if wants_hybrid else None
        embed = args.embed_model or DEFAULT_EMBED_MODEL
    else:
        embed = record["embed_model"]
        sparse = record.get("sparse_model")
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
    return embed, sparse


def _check_vector_size(client: QdrantClient, collection: str, embed: FastEmbedEmbedding) -> None:
    vectors = client.get_collection(collection).config.params.vectors
    params = (
        (vectors.get(DENSE_VECTOR) or vectors.get("")) if isinstance(vectors, dict) else vectors
    )
    if params is None:
        msg = f"collection {collection!r} has no dense vector {DENSE_VECTOR!r} to search"
        raise CommandError(msg)
    if params.size != embed.embedding_size:
        msg = (
            f"collection {collection!r} holds vectors of {params.size} numbers, but "
            f"{embed.model_name} makes {embed.embedding_size}: pass the --embed-model it was "
            f"ingested with, or use another collection"
        )
        raise CommandError(msg)


def _create_collection(
    client: QdrantClient,
    collection: str,
    embed: FastEmbedEmbedding,
    sparse: FastEmbedSparseEmbedding | None,
) -> None:
    from qdrant_client.http import models

    from .qdrant import sparse_vector_params

    record = {"embed_model": embed.model_name, "sparse_model": sparse and sparse.model_name}
    client.create_collection(
        collection,
        vectors_config={
            DENSE_VECTOR: models.VectorParams(
                size=embed.embedding_size, distance=models.Distance.COSINE
            )
        },
        sparse_vectors_config=(
            {"text-sparse-new": sparse_vector_params(sparse)} if sparse is not None else None
        ),
        metadata={RECORD_KEY: record},
    )
    # Each file's chunks are found by doc_id; a server needs the index for that to be fast.
    client.create_payload_index(collection, "doc_id", models.PayloadSchemaType.KEYWORD)


def _store(
    client: QdrantClient, collection: str, sparse: FastEmbedSparseEmbedding | None
) -> QdrantVectorStore:
    from llama_index.vector_stores.qdrant import QdrantVectorStore

    from .qdrant import qdrant_hybrid_store

    if sparse is not None:
        return qdrant_hybrid_store(collection, client=client, sparse_model=sparse)
    return QdrantVectorStore(collection_name=collection, client=client)


# --- models -----------------------------------------------------------------------------------


def _engine(args: argparse.Namespace) -> dict[str, Any]:
    return {"cache_dir": args.cache_dir} if args.cache_dir else {}


def _embed_model(name: str, args: argparse.Namespace) -> FastEmbedEmbedding:
    return FastEmbedEmbedding(name, **_engine(args))


def _sparse_model(name: str, args: argparse.Namespace) -> FastEmbedSparseEmbedding:
    return FastEmbedSparseEmbedding(name, **_engine(args))


# --- output -----------------------------------------------------------------------------------


def _result(node: NodeWithScore, retrieval_score: Any) -> dict[str, Any]:  # noqa: ANN401
    from llama_index.core.schema import MetadataMode

    metadata = node.node.metadata
    return {
        "text": node.node.get_content(metadata_mode=MetadataMode.NONE),
        "score": node.score,
        "retrieval_score": retrieval_score,
        "source": metadata.get("file_path"),
        "page": metadata.get("page_label"),
        "id": node.node.node_id,
    }


def _print_results(rows: list[dict[str, Any]], out: TextIO, *, reranked: bool) -> None:
    if not rows:
        print("no results", file=out)
    for rank, row in enumerate(rows, start=1):
        first = row["retrieval_score"]
        retrieval = f"  (retrieval {first:.4f})" if first is not None and reranked else ""
        page = row["page"]
        source = f"{row['source']} (page {page})" if page else str(row["source"])
        text = " ".join(row["text"].split())
        preview = text if len(text) <= 200 else text[:197] + "..."
        print(f"{rank:>2}. {row['score']:8.4f}{retrieval}  {source}", file=out)
        print(f"    {preview}", file=out)


def _print_table(header: tuple[str, ...], rows: Sequence[tuple[Any, ...]], out: TextIO) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        line = "  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=True))
        print(line.rstrip(), file=out)


def _progress(items: Iterable[Any], description: str, total: int) -> Iterator[Any]:
    from tqdm import tqdm

    # disable=None: shown on a terminal, silent in pipes, logs and tests.
    yield from tqdm(items, desc=description, total=total, disable=None, file=sys.stderr)


def _one_line(error: object) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _quiet_libraries() -> None:
    """Leave stderr to this command's own lines: error:, warning: and progress."""
    logging.basicConfig(level=logging.WARNING, format="warning: %(message)s")
    # fastembed logs through loguru; its load errors are repeated in this command's message.
    try:
        from loguru import logger
    except ImportError:  # pragma: no cover - fastembed depends on it
        pass
    else:
        logger.disable("fastembed")
    # SimpleDirectoryReader warns for every file when llama-index-readers-file is missing;
    # the files that need it are reported as skipped, with the fix.
    logging.getLogger("llama_index.core.readers.file.base").setLevel(logging.ERROR)
    # QdrantVectorStore asks embedded Qdrant for payload indexes, which only a server uses.
    warnings.filterwarnings("ignore", message="Payload indexes have no effect in the local")

    def show(
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        print(f"warning: {_one_line(message)}", file=sys.stderr)  # noqa: T201

    warnings.showwarning = show


# --- arguments --------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = _Parser(
        prog=PROG,
        description=(
            "Ingest your files into Qdrant and query them with local fastembed models: "
            "retrieve, then rerank with a cross-encoder."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    cache = _Parser(add_help=False)
    cache.add_argument(
        "--cache-dir",
        help="fastembed's model cache (default: $FASTEMBED_CACHE_PATH, else "
        "<tempdir>/fastembed_cache)",
    )
    qdrant = _Parser(add_help=False)
    qdrant.add_argument("--collection", required=True, help="the Qdrant collection")
    qdrant.add_argument(
        "--qdrant-path",
        help=f"folder of embedded Qdrant (default: {_default_qdrant_path()})",
    )
    qdrant.add_argument(
        "--qdrant-url",
        help="a Qdrant server or cluster instead (default: $QDRANT_URL); the API key is read "
        "from $QDRANT_API_KEY only",
    )
    models = _Parser(add_help=False)
    models.add_argument(
        "--embed-model",
        help=f"dense embedding model (default: the collection's, else {DEFAULT_EMBED_MODEL})",
    )
    models.add_argument(
        "--sparse-model",
        help=f"sparse model for --hybrid (default: the collection's, else {DEFAULT_SPARSE_MODEL})",
    )

    ingest = commands.add_parser(
        "ingest",
        parents=[qdrant, models, cache],
        help="split, embed and store files and folders; again, only what changed",
        description=(
            "Split files (folders recursively: .txt .md .markdown .rst .json; .pdf .html .htm "
            ".csv with the [cli] extra) with LlamaIndex's SentenceSplitter, embed and upsert "
            "them. Running it again writes only what changed; a changed file's chunks are "
            "replaced."
        ),
    )
    ingest.add_argument("paths", nargs="+", metavar="PATH", help="files and folders")
    ingest.add_argument(
        "--chunk-size",
        type=_at_least(1),
        help="tokens of the embedding model per chunk, its file name included (default: as "
        "many as the model reads, e.g. 254 for a 256-token window)",
    )
    ingest.add_argument(
        "--chunk-overlap", type=_at_least(0), default=32, help="tokens (default 32)"
    )
    ingest.add_argument(
        "--hybrid", action="store_true", help="store sparse vectors too (needed by query --hybrid)"
    )
    ingest.add_argument(
        "--prune", action="store_true", help="remove the chunks of files under PATH that are gone"
    )
    ingest.set_defaults(run=_ingest)

    query = commands.add_parser(
        "query",
        parents=[qdrant, models, cache],
        help="retrieve --top-k chunks and rerank them to --top-n",
        description="Retrieve chunks for TEXT, rerank them with a cross-encoder and print them.",
    )
    query.add_argument("text", metavar="TEXT", help="the question or search text")
    query.add_argument(
        "--top-k", type=_at_least(1), default=20, help="chunks retrieved (default 20)"
    )
    query.add_argument("--top-n", type=_at_least(1), default=5, help="chunks shown (default 5)")
    query.add_argument(
        "--rerank-model",
        default=DEFAULT_RERANK_MODEL,
        help=f"cross-encoder (default {DEFAULT_RERANK_MODEL})",
    )
    query.add_argument(
        "--no-rerank", action="store_true", help="show the first --top-n retrieved, to compare"
    )
    query.add_argument(
        "--hybrid", action="store_true", help="retrieve with dense and sparse vectors, fused by RRF"
    )
    query.add_argument("--json", action="store_true", help="print the results as JSON")
    query.set_defaults(run=_query)

    manage = commands.add_parser("models", help="list, import and export models")
    actions = manage.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser(
        "list",
        parents=[cache],
        help="every model fastembed offers, with size, license and whether it is cached",
    ).set_defaults(run=_models_list)
    for name, help_text in (
        ("import", "copy a model folder into the cache under a model name"),
        ("import-model", "the same as `models import`"),
    ):
        target = actions if name == "import" else commands
        imp = target.add_parser(
            name,
            parents=[cache],
            help=help_text,
            description=(
                "Copy a local model folder into fastembed's cache, so that code naming the "
                "model loads it with no network (set HF_HUB_OFFLINE=1 or local_files_only=True)."
            ),
        )
        imp.add_argument("source", metavar="DIR", help="folder with the ONNX model and tokenizer")
        imp.add_argument("model_name", metavar="NAME", help="e.g. BAAI/bge-small-en-v1.5")
        imp.set_defaults(run=_models_import)
    export = actions.add_parser(
        "export",
        parents=[cache],
        help="copy a cached model into a folder that `models import` takes",
    )
    export.add_argument("model_name", metavar="NAME", help="a model in the cache")
    export.add_argument("--to", required=True, metavar="DIR", help="a new folder")
    export.set_defaults(run=_models_export)
    return parser


def _at_least(minimum: int) -> Callable[[str], int]:
    """Return an argparse ``type`` that takes whole numbers of ``minimum`` or more."""

    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            msg = f"must be a whole number, got {value!r}"
            raise argparse.ArgumentTypeError(msg) from None
        if number < minimum:
            msg = f"must be {minimum} or more, got {value}"
            raise argparse.ArgumentTypeError(msg)
        return number

    return parse
