"""``python -m llama_index_fastembed_rerank``: the ``llama-index-fastembed-rerank`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
