"""The README's code runs as pasted and prints what it shows; its tables list every option.

The README names the real default reranker, Xenova/ms-marco-MiniLM-L-6-v2; here it is a LOAN
(``loan_cache``: the untrained stand-in's files under that name), so the README shows no
reranked output and these tests only run the code that reranks.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from llama_index_fastembed_rerank import (
    FastEmbedEmbedding,
    FastEmbedRerank,
    FastEmbedSparseEmbedding,
)

ROOT = Path(__file__).parents[1]
README = (ROOT / "README.md").read_text()


def _blocks(language: str) -> list[tuple[str, str]]:
    """Each fenced block of ``language``, with the README section it is in."""
    found = []
    for match in re.finditer(rf"^```{language}\n(.*?)^```$", README, re.MULTILINE | re.DOTALL):
        headings = re.findall(r"^## (.+)$", README[: match.start()], re.MULTILINE)
        found.append((headings[-1] if headings else "top", match.group(1)))
    return found


def _commands(block: str) -> list[tuple[str, str]]:
    """Split a console block into its ``$`` commands and the output shown after each."""
    pairs: list[tuple[str, list[str]]] = []
    for line in block.splitlines():
        if line.startswith("$ "):
            pairs.append((line[2:], []))
        else:
            pairs[-1][1].append(line)
    return [(command, "\n".join(output)) for command, output in pairs]


def _env(loan_cache: Path, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "FASTEMBED_CACHE_PATH": str(loan_cache),
        # the console scripts installed beside this Python, as after `pip install`
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **extra,
    }


PYTHON_BLOCKS = _blocks("python")


@pytest.mark.parametrize(
    "code",
    [code for _, code in PYTHON_BLOCKS],
    ids=[re.sub(r"\W+", "-", section).strip("-").lower() for section, _ in PYTHON_BLOCKS],
)
def test_readme_python_block_runs_as_pasted(code, loan_cache):
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env=_env(loan_cache),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    if "print(" in code:
        assert done.stdout.strip()


def test_readme_console_commands_print_what_the_readme_shows(loan_cache, tmp_path):
    # Run where the README ran them: a clone (here its examples/) and a per-user data folder.
    demo, data = tmp_path / "demo", tmp_path / "data"
    demo.mkdir()
    (demo / "examples").symlink_to(ROOT / "examples")
    places = {str(demo): "/root/demo", str(data): "/root/.local/share"}
    commands = [pair for _, block in _blocks("console") for pair in _commands(block)]
    assert len(commands) >= 8
    for command, shown in commands:
        done = subprocess.run(
            command,
            shell=True,
            cwd=demo,
            env=_env(loan_cache, XDG_DATA_HOME=str(data)),
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        printed = (done.stdout + done.stderr).rstrip("\n")
        for here, there in places.items():
            printed = printed.replace(here, there)
        assert _rounded(printed) == _rounded(shown), command


def _rounded(text: str) -> str:
    # Scores printed in full (JSON) may differ in their last digits between CPUs, and chunk
    # ids are derived from the absolute path.
    text = re.sub(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", "<id>", text)
    return re.sub(r"(\d\.\d{4})\d+", r"\1", text)


def test_ci_runs_the_readme_test_command():
    (command,) = [
        line
        for line in README.splitlines()
        if line.startswith("python3 -m venv") and "pytest" in line
    ]
    assert command in (ROOT / ".ci" / "run").read_text().splitlines()


@pytest.mark.parametrize(
    "cls",
    [FastEmbedRerank, FastEmbedEmbedding, FastEmbedSparseEmbedding],
    ids=lambda c: c.__name__,
)
def test_readme_documents_every_option(cls):
    inherited = {"callback_manager", "num_workers", "embeddings_cache", "rate_limiter"}
    for name in set(cls.model_fields) - inherited:
        assert f"| `{name}` |" in README, name
