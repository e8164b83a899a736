"""Start-up: the package and the command's --help load no model library; every name resolves."""

from __future__ import annotations

import subprocess
import sys

import llama_index_fastembed_rerank

HEAVY = ("llama_index.core", "fastembed", "onnx", "onnxruntime", "qdrant_client", "nltk")


def _loaded_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys\nprint(' '.join(sorted(sys.modules)))"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    return set(done.stdout.split())


def test_importing_the_package_loads_no_model_library():
    loaded = _loaded_after("import llama_index_fastembed_rerank")
    assert not loaded & set(HEAVY)


def test_help_loads_no_model_library():
    code = (
        "import contextlib, io\n"
        "from llama_index_fastembed_rerank.cli import main\n"
        "with contextlib.redirect_stdout(io.StringIO()):\n"
        "    try:\n        main(['--help'])\n    except SystemExit:\n        pass"
    )
    loaded = _loaded_after(code)
    assert "llama_index_fastembed_rerank.cli.parser" in loaded
    assert not loaded & set(HEAVY)


def test_every_public_name_resolves():
    for name in llama_index_fastembed_rerank.__all__:
        assert getattr(llama_index_fastembed_rerank, name) is not None, name
    assert set(llama_index_fastembed_rerank.__all__) <= set(dir(llama_index_fastembed_rerank))


def test_version_is_the_installed_one():
    from importlib import metadata

    done = subprocess.run(
        [sys.executable, "-m", "llama_index_fastembed_rerank", "--version"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    version = metadata.version("llama-index-fastembed-rerank")
    assert done.stdout == f"llama-index-fastembed-rerank {version}\n"
    assert llama_index_fastembed_rerank.__version__ == version
