"""Chunking large text files as ingest does: chunks/s and peak memory, 50 MB and 200 MB.

The text is real: the reStructuredText sources of Python's documentation (Debian's
``python3-doc``: ``/usr/share/doc/python3*/html/_sources``, 11 MB), concatenated until the file
has the size asked for, with every run of blank lines made one blank line, as in most text
files (so that no paragraph break of SentenceSplitter's own, two blank lines, helps it).

Each case runs in a fresh process, so that its peak RSS is its own: reading the file
(``SimpleDirectoryReader``, as ingest does) and cutting it into chunks with their ids, the
step the command line takes before it embeds anything. Embedding is left out: on 2 cores it
runs at some 30 chunks/s (see the README), hours for these files, the same with any chunker.

- ``ingest``: this package's chunker at the library's default count (tiktoken), 256/32.
- ``ingest, model tokens``: the command line's default, all-MiniLM-L6-v2's tokens, 254/32.
- ``SentenceSplitter``: LlamaIndex's own, as ingest ran it before (NLTK's 5 s limit on each
  regular expression in force); chunk ids left out, which cost it more still (each chunk's id
  hashed the whole text: 73 s for a 2 MB file).

Run: ``python benchmarks/large_files.py [--sizes 50 200] [--model-sizes 50] [--dir DIR]``.
"""

from __future__ import annotations

import argparse
import glob
import json
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import _common

SOURCES = "/usr/share/doc/python3*/html/_sources/**/*.txt"


def make_text(path: Path, megabytes: int) -> None:
    files = sorted(glob.glob(SOURCES, recursive=True))
    if not files:
        sys.exit("needs Python's documentation sources: apt-get install python3-doc")
    text = "".join(Path(f).read_text(encoding="utf-8") for f in files)
    text = re.sub(r"\n[ \t]*\n(?:[ \t]*\n)+", "\n\n", text)
    size = megabytes * 1_000_000
    with path.open("w", encoding="utf-8") as out:
        written = 0
        while written < size:
            piece = text[: size - written]
            piece = piece[: piece.rfind("\n") + 1] or piece
            out.write(piece)
            written += len(piece.encode())


def peak_mib() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not the parent's)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_case(case: str, path: Path) -> dict[str, object]:
    """Chunk ``path`` in this process; return what it took."""
    from llama_index_fastembed_rerank import ingest

    start_mib = peak_mib()
    start = time.perf_counter()
    try:
        if case == "SentenceSplitter":
            from llama_index.core.node_parser import SentenceSplitter

            documents = ingest._read(path)
            chunks = len(
                SentenceSplitter(chunk_size=256, chunk_overlap=32).get_nodes_from_documents(
                    documents
                )
            )
        else:
            tokens, size = None, 256
            if case == "ingest, model tokens":
                from llama_index_fastembed_rerank import FastEmbedEmbedding

                cache = _common.provision()
                model = FastEmbedEmbedding(_common.EMBED_MODEL, cache_dir=cache)
                tokens = ingest.model_tokens(model)
                assert tokens is not None
                size = tokens.room
            chunker = ingest.splitter(size, 32, tokens.tokens if tokens else None)
            documents = ingest._read(path)
            nodes = ingest._split(chunker, str(path), documents, f"bench({size})", [])
            chunks = len(nodes)
        error = None
    except Exception as e:  # the baseline's failure is a result
        chunks, error = 0, f"{type(e).__name__}: {' '.join(str(e).split())[:90]}"
    seconds = time.perf_counter() - start
    return {
        "chunks": chunks,
        "seconds": seconds,
        "peak_mib": peak_mib(),
        "start_mib": start_mib,
        "error": error,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 200], help="MB")
    parser.add_argument("--model-sizes", type=int, nargs="*", default=[50], help="MB")
    parser.add_argument("--baseline-sizes", type=int, nargs="*", default=[50], help="MB")
    parser.add_argument("--dir", help="where the text files go (default: a temporary folder)")
    parser.add_argument("--case", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.case:  # a child process: one case
        print(json.dumps(run_case(args.case, Path(args.file))))
        return

    print("\n".join(_common.machine_lines(("nltk", "tiktoken", "tokenizers"))))
    folder = Path(args.dir or tempfile.mkdtemp(prefix="large-files-"))
    folder.mkdir(parents=True, exist_ok=True)
    print("| file | chunker | chunks | seconds | chunks/s | MB/s | peak RSS MiB (after imports) |")
    print("|---|---|---|---|---|---|---|")
    sizes = sorted(set(args.sizes) | set(args.model_sizes) | set(args.baseline_sizes))
    for megabytes in sizes:
        path = folder / f"text-{megabytes}mb.txt"
        if not path.exists() or path.stat().st_size < megabytes * 1_000_000:
            make_text(path, megabytes)
        cases = []
        if megabytes in args.baseline_sizes:
            cases.append("SentenceSplitter")
        if megabytes in args.sizes:
            cases.append("ingest")
        if megabytes in args.model_sizes:
            cases.append("ingest, model tokens")
        for case in cases:
            done = subprocess.run(
                [sys.executable, __file__, "--case", case, "--file", str(path)],
                capture_output=True,
                text=True,
                check=True,
            )
            result = json.loads(done.stdout.splitlines()[-1])
            seconds = result["seconds"]
            if result["error"]:
                rate = f"fails after {seconds:.1f} s: {result['error']}"
                print(
                    f"| {megabytes} MB | {case} | - | {rate} | - | - | "
                    f"{result['peak_mib']:.0f} ({result['start_mib']:.0f}) |",
                    flush=True,
                )
                continue
            print(
                f"| {megabytes} MB | {case} | {result['chunks']:,} | {seconds:.1f} | "
                f"{result['chunks'] / seconds:.0f} | {megabytes / seconds:.2f} | "
                f"{result['peak_mib']:.0f} ({result['start_mib']:.0f}) |",
                flush=True,
            )


if __name__ == "__main__":
    main()
