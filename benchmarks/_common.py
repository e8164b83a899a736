"""Shared by the benchmarks: offline models, seeded texts, percentiles and a machine summary.

Importing it sets ``HF_HUB_OFFLINE=1`` (unless set) and puts ``tests/`` on ``sys.path`` so
that ``offline_models`` builds the real-weight models from PyPI packages: no model hub is used.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import random
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MOVIES_PATH = ROOT / "examples" / "data" / "movies.json"

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # offline weights only; never wait for a hub
# The seeded texts run past the models' windows on purpose (truncation costs the same for all).
warnings.filterwarnings("ignore", message=r".* were longer than the .*-token window")
if str(ROOT / "tests") not in sys.path:
    sys.path.insert(0, str(ROOT / "tests"))

EMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
SEED = 20240601
# The MiniLM-L6 shape that all-MiniLM-L6-v2 and the stand-in cross-encoder share.
LAYERS, HIDDEN, HEADS, INTERMEDIATE = 6, 384, 12, 1536

_VERSIONS = (
    "onnxruntime",
    "fastembed",
    "numpy",
    "llama-index-core",
    "llama-index-fastembed-rerank",
    "llama-index-embeddings-fastembed",
    "qdrant-client",
)


def encoder_flops(length: int) -> int:
    """Return the matrix-product FLOPs of the six layers on one text of ``length`` tokens.

    Per layer: the Q, K, V and output projections (8*L*H^2), the attention's two batched
    products (4*L^2*H) and the feed-forward (4*L*H*I); a multiply-add counts 2.
    """
    h, i = HIDDEN, INTERMEDIATE
    return LAYERS * (8 * length * h * h + 4 * length * length * h + 4 * length * h * i)


def in_order(n: int, batch: int) -> list[list[int]]:
    """The batches of a method that runs ``n`` texts in input order, ``batch`` at a time."""
    return [list(range(i, min(i + batch, n))) for i in range(0, n, batch)]


def movies() -> dict[str, object]:
    """Return the tutorial's data: ``query`` and 20 ``descriptions``."""
    return json.loads(MOVIES_PATH.read_text())  # type: ignore[no-any-return]


def word_pool() -> list[str]:
    """Return the words of the tutorial's 20 movie descriptions, punctuation stripped."""
    text = " ".join(movies()["descriptions"])  # type: ignore[arg-type]
    words = (w.strip(".,;:!?\"'()") for w in text.split())
    return [w for w in words if w]


def make_chunks(n: int, min_words: int, max_words: int, seed: int = SEED) -> list[str]:
    """Return ``n`` seeded texts of ``min_words`` to ``max_words`` words, in short sentences."""
    pool = word_pool()
    rng = random.Random(f"{seed}-chunks-{n}-{min_words}-{max_words}")
    chunks = []
    for _ in range(n):
        words = rng.choices(pool, k=rng.randint(min_words, max_words))
        sentences, start = [], 0
        while start < len(words):
            end = start + rng.randint(6, 16)
            sentence = " ".join(words[start:end])
            sentences.append(sentence[:1].upper() + sentence[1:] + ".")
            start = end
        chunks.append(" ".join(sentences))
    return chunks


def make_queries(n: int, seed: int = SEED) -> list[str]:
    """Return the tutorial's query followed by ``n - 1`` seeded questions of 4 to 12 words."""
    pool = word_pool()
    rng = random.Random(f"{seed}-queries-{n}")
    starts = ("A story about", "Films where", "Which movie has", "Something with", "Find")
    queries = [str(movies()["query"])]
    while len(queries) < n:
        words = " ".join(rng.choices(pool, k=rng.randint(2, 9)))
        queries.append(f"{rng.choice(starts)} {words}?")
    return queries


def provision() -> str:
    """Build the offline models once (reused later) and return the fastembed cache, as a str."""
    import offline_models

    return str(offline_models.provision())


def percentile(values: list[float], q: float) -> float:
    """Return the ``q``-th percentile of ``values`` (linear interpolation, as numpy does)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def machine_lines(packages: tuple[str, ...] = ()) -> list[str]:
    """Return lines that say which CPU, cores, Python and package versions ran a benchmark."""
    cpu = platform.processor() or "unknown"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip()
            for line in cpuinfo.read_text().splitlines()
            if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    versions = []
    for package in _VERSIONS + packages:
        try:
            versions.append(f"{package} {importlib.metadata.version(package)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    return [
        f"CPU: {cpu}; {os.cpu_count()} logical cores; Python {platform.python_version()}",
        "Versions: " + ", ".join(versions),
    ]
