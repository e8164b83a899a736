"""Command line: ``python -m llama_index_fastembed_rerank import-model SOURCE MODEL_NAME``."""

from __future__ import annotations

import argparse
import sys

from .offline import import_model


def main(argv: list[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m llama_index_fastembed_rerank")
    commands = parser.add_subparsers(dest="command", required=True)
    imp = commands.add_parser(
        "import-model",
        help="copy a local model directory into fastembed's cache under a model name",
        description=(
            "Copy a local model directory into fastembed's cache, so that code naming the "
            "model loads it with no network (set HF_HUB_OFFLINE=1 or local_files_only=True)."
        ),
    )
    imp.add_argument("source", help="directory with the ONNX model and its tokenizer files")
    imp.add_argument("model_name", help="e.g. sentence-transformers/all-MiniLM-L6-v2")
    imp.add_argument(
        "--cache-dir",
        help="fastembed cache (default: $FASTEMBED_CACHE_PATH, else <tempdir>/fastembed_cache)",
    )
    args = parser.parse_args(argv)
    try:
        snapshot = import_model(args.source, args.model_name, cache_dir=args.cache_dir)
    except ValueError as e:
        parser.exit(2, f"error: {e}\n")
    print(f"Imported {args.model_name} into {snapshot}")  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
