"""The llama-index-fastembed-rerank command, run as a user runs it: in subprocesses, offline.

Real weights: all-MiniLM-L6-v2 and BM25 under their names. The reranker the command loads by
default, Xenova/ms-marco-MiniLM-L-6-v2, is a LOAN in these tests (``loan_cache``): the
untrained stand-in's files under that name, so rerank scores are checked against fastembed's
on the stand-in, never for relevance.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
from contextlib import closing
from pathlib import Path

import pytest
from llama_index.core.schema import TextNode

import offline_models
from conftest import JsonHandler, serving
from llama_index_fastembed_rerank import QdrantEdgeVectorStore
from llama_index_fastembed_rerank.ingest import WRITE_BATCH
from llama_index_fastembed_rerank.qdrant import RECORD_KEY, embedded_collections

EMBED = offline_models.EMBED_MODEL
MOVIES = json.loads((Path(__file__).parents[1] / "examples" / "data" / "movies.json").read_text())
QUERY = MOVIES["query"]


def run(*args: str, cache: Path, env: dict[str, str] | None = None, before: str = "", **kwargs):
    """Run the command in a fresh process; ``before`` is Python run ahead of it there."""
    command = ["-m", "llama_index_fastembed_rerank"]
    if before:
        main = "from llama_index_fastembed_rerank.cli import main; sys.exit(main(sys.argv[1:]))"
        command = ["-c", f"import sys\n{before}\n{main}"]
    return subprocess.run(
        [sys.executable, *command, *args],
        capture_output=True,
        text=True,
        env={
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "FASTEMBED_CACHE_PATH": str(cache),
            **(env or {}),
        },
        check=False,
        **kwargs,
    )


def points(qdrant: Path, collection: str) -> list:
    """Every point of a collection; the folder is closed again, so the command can open it."""
    with QdrantEdgeVectorStore(qdrant / collection) as store:
        return list(store.iter_points())


def write_pdf(path: Path, pages: list[str]) -> None:
    """Write a PDF with one line of Helvetica text per page (no PDF library needed)."""
    objects = [
        "<< /Type /Catalog /Pages 2 0 R >>",
        "",
        "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    kids = []
    for text in pages:
        stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET"
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {len(objects)} 0 R >>"
        )
        kids.append(f"{len(objects)} 0 R")
    objects[1] = f"<< /Type /Pages /Kids [{' '.join(kids)}] /Count {len(kids)} >>"
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += (
        f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    )
    path.write_bytes(out)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """The tutorial's 20 descriptions as .txt files (some in a subfolder), and one file of each
    other type, and one that is not UTF-8."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "sub").mkdir()
    for i, text in enumerate(MOVIES["descriptions"]):
        (root / ("sub" if i % 3 == 0 else "") / f"movie{i:02}.txt").write_text(text + "\n")
    (root / "notes.md").write_text("# Notes\n\nPaprika is a film by Satoshi Kon.\n")
    (root / "page.html").write_text(
        "<html><head><title>t</title><script>var x = 1;</script></head>"
        "<body><h1>Heading</h1><p>A paragraph about Paprika the therapist.</p></body></html>"
    )
    (root / "films.csv").write_text("title,year\nThe Passion of Joan of Arc,1928\nKubo,2016\n")
    (root / "data.json").write_text('{"film": "Seven Samurai", "year": 1954}\n')
    write_pdf(root / "report.pdf", ["First page about heresy trials.", "Second page on dreams."])
    (root / "bad.txt").write_bytes(b"\xff\xfe\x00 not utf-8")
    (root / "image.png").write_bytes(b"\x89PNG")  # another type: ignored in a folder
    (root / ".hidden.txt").write_text("hidden files are left out")
    return root


@pytest.fixture(scope="module")
def ingested(corpus, loan_cache, tmp_path_factory):
    """The corpus ingested once, hybrid, into embedded Qdrant; the query tests share it."""
    qdrant = tmp_path_factory.mktemp("qdrant")
    done = run(
        "ingest", str(corpus), "--collection", "docs", "--qdrant-path", str(qdrant),
        "--embed-model", EMBED, "--hybrid", cache=loan_cache,
    )  # fmt: skip
    return done, qdrant


def query(ingested, loan_cache, *args: str):
    _, qdrant = ingested
    return run(
        "query", *args, "--collection", "docs", "--qdrant-path", str(qdrant), cache=loan_cache
    )


def test_cli_ingest_reads_each_type_and_skips_the_unreadable_file(corpus, ingested):
    done, qdrant = ingested
    assert done.returncode == 1, done.stderr  # 1: ingested, but a file was skipped
    assert done.stderr.splitlines() == [
        f"error: skipped {corpus / 'bad.txt'}: not UTF-8 text ('utf-8' codec can't decode byte "
        "0xff in position 0: invalid start byte): convert it to UTF-8 (iconv -f ENCODING -t "
        "UTF-8) or leave it out"
    ]
    stored = points(qdrant, "docs")
    assert done.stdout.startswith("docs: 26 files, 0 unchanged, ")
    assert ", 1 skipped, 2 hidden or of other types left out; " in done.stdout
    assert f"; {len(stored)} chunks in the collection (embedded Qdrant at {qdrant})" in done.stdout
    texts = {}
    for point in stored:
        assert point.payload["doc_id"] == point.payload["file_path"]  # ref_doc_id is the file
        texts.setdefault(Path(point.payload["file_path"]).name, []).append(
            json.loads(point.payload["_node_content"])["text"]
        )
    assert len(texts) == 25  # every file but bad.txt; not the .png, not the hidden file
    assert sorted(texts["report.pdf"]) == [
        "First page about heresy trials.",
        "Second page on dreams.",
    ]
    pages = {p.payload.get("page_label") for p in stored if p.payload["file_name"] == "report.pdf"}
    assert pages == {"1", "2"}
    assert texts["page.html"] == ["Heading\nA paragraph about Paprika the therapist."]
    assert sorted(texts["films.csv"]) == [
        "title: Kubo\nyear: 2016",
        "title: The Passion of Joan of Arc\nyear: 1928",
    ]
    assert texts["movie00.txt"] == [MOVIES["descriptions"][0]]
    assert len({p.id for p in stored}) == len(stored) == sum(map(len, texts.values()))


def test_cli_query_reranks_the_retrieved_chunks_with_fastembeds_scores(
    ingested, loan_cache, real_cross_encoder
):
    first = query(
        ingested, loan_cache, QUERY, "--top-k", "8", "--top-n", "8", "--no-rerank", "--json"
    )
    reranked = query(ingested, loan_cache, QUERY, "--top-k", "8", "--top-n", "3", "--json")
    assert first.returncode == reranked.returncode == 0, first.stderr + reranked.stderr
    retrieved = json.loads(first.stdout)
    results = json.loads(reranked.stdout)
    assert len(retrieved) == 8
    assert len(results) == 3
    for row in retrieved:
        assert set(row) == {"text", "score", "retrieval_score", "source", "page", "id"}
        assert row["score"] == row["retrieval_score"]
    # The reranker scores what was embedded: the file's name, then the chunk's text.
    texts = [f"file_name: {Path(row['source']).name}\n\n{row['text']}" for row in retrieved]
    expected = sorted(
        zip(real_cross_encoder.rerank(QUERY, texts), retrieved, strict=True), key=lambda p: -p[0]
    )[:3]
    assert [r["id"] for r in results] == [row["id"] for _, row in expected]
    assert [r["score"] for r in results] == pytest.approx([s for s, _ in expected], abs=1e-5)
    assert [r["retrieval_score"] for r in results] == [row["score"] for _, row in expected]


def test_cli_query_prints_ranked_results(ingested, loan_cache):
    done = query(ingested, loan_cache, "heresy trial")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert len(lines) == 10  # --top-n 5: a line with score and source, a line of text
    assert lines[0].startswith(" 1. ")
    assert "(retrieval " in lines[0]
    assert all(line.startswith("    ") for line in lines[1::2])


def test_cli_query_hybrid_fuses_dense_and_bm25(ingested, loan_cache, corpus):
    done = query(
        ingested, loan_cache, "Paprika", "--hybrid", "--no-rerank", "--json", "--top-n", "3"
    )
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    # Three files name Paprika; BM25 ranks them first, and RRF (k=2) gives 1/2 + 1/2 to the
    # chunk first on both sides.
    assert {Path(r["source"]).name for r in rows} == {"movie06.txt", "page.html", "notes.md"}
    assert rows[0]["score"] <= 1.0
    assert all(r["score"] >= 0.5 for r in rows)  # each is in the top of the BM25 list


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["query", "x", "--collection", "nope"],
            "No collection 'nope' here (collections: dense, docs, plain)",
        ),
        (
            ["query", "x", "--collection", "docs", "--embed-model", "BAAI/bge-small-en-v1.5"],
            "collection 'docs' holds vectors of sentence-transformers/all-MiniLM-L6-v2, not of",
        ),
        (
            ["query", "x", "--collection", "dense", "--embed-model", "BAAI/bge-base-en-v1.5"],
            "collection 'dense' holds vectors of 384 numbers, but BAAI/bge-base-en-v1.5 makes 768",
        ),
        (
            ["query", "x", "--collection", "docs", "--rerank-model", "nobody/nothing"],
            "TextCrossEncoder does not support model 'nobody/nothing'",
        ),
        (
            [
                "query",
                "x",
                "--collection",
                "docs",
                "--rerank-model",
                "Xenova/ms-marco-MiniLM-L-12-v2",
            ],
            "HF_HUB_OFFLINE=1 kept fastembed from asking the model hub",
        ),
        (["ingest", "nowhere", "--collection", "new"], "No such file or folder: 'nowhere'"),
        (
            ["ingest", ".", "--collection", "new", "--embed-model", "BAAI/bge-small-en-v1.5"],
            "Could not load TextEmbedding model 'BAAI/bge-small-en-v1.5'",
        ),
        (
            ["query", "x", "--collection", "docs", "--top-k", "0"],
            "argument --top-k: must be 1 or more, got 0 (see llama-index-fastembed-rerank query",
        ),
        (
            [
                "ingest",
                ".",
                "--collection",
                "new",
                "--embed-model",
                EMBED,
                "--chunk-size",
                "3",
                "--chunk-overlap",
                "0",
            ],
            "chunk size 3 leaves no room for text beside the file name that each chunk embeds",
        ),
        (
            ["query", "x", "--collection", "plain", "--hybrid"],
            "has no sparse vectors (it was ingested without --hybrid): query it without --hybrid",
        ),
    ],
    ids=[
        "unknown-collection",
        "other-embed-model",
        "vector-size",
        "unknown-model",
        "model-not-cached",
        "missing-path",
        "missing-model-before-writing",
        "bad-option",
        "chunks-smaller-than-metadata",
        "hybrid-query-of-a-dense-collection",
    ],
)
def test_cli_foreseen_failures_are_one_error_line(ingested, loan_cache, corpus, args, message):
    _, qdrant = ingested
    point = TextNode(text="x", id_="00000000-0000-0000-0000-000000000001", embedding=[0.1] * 384)
    if "dense" not in embedded_collections(qdrant):  # a collection made without the command
        with QdrantEdgeVectorStore(qdrant / "dense") as store:
            store.add([point])
    if "plain" not in embedded_collections(qdrant):  # as ingest without --hybrid makes it
        with QdrantEdgeVectorStore(qdrant / "plain") as store:
            store.write_metadata({RECORD_KEY: {"embed_model": EMBED, "sparse_model": None}})
            store.add([point])
    before = {name: points(qdrant, name) for name in embedded_collections(qdrant)}
    done = run(*args, "--qdrant-path", str(qdrant), cache=loan_cache, cwd=corpus)
    assert done.returncode == 2
    assert done.stdout == ""
    (line,) = done.stderr.splitlines()
    assert line.startswith("error: ")
    assert message in line
    # nothing written
    assert sorted(before) == embedded_collections(qdrant) == ["dense", "docs", "plain"]
    assert all(points(qdrant, name) == stored for name, stored in before.items())


def test_cli_server_credentials_are_never_printed(loan_cache):
    done = run(
        "query", "x", "--collection", "docs", "--qdrant-url", "http://user:hunter2@127.0.0.1:9",
        cache=loan_cache, env={"QDRANT_API_KEY": "s3cret-key"},
    )  # fmt: skip
    assert done.returncode == 2
    assert "error: cannot reach Qdrant at http://127.0.0.1:9: " in done.stderr
    for secret in ("hunter2", "s3cret-key", "user"):
        assert secret not in done.stdout + done.stderr


class _RefusingQdrant(JsonHandler):
    """A Qdrant server that lists its collections, then refuses everything (a read-only key)."""

    def do_GET(self) -> None:
        if self.path.startswith("/collections?") or self.path == "/collections":
            self.answer(200, {"result": {"collections": []}, "status": "ok", "time": 0})
        else:
            self.answer(403, {"status": {"error": "Forbidden: read-only key"}, "time": 0})

    do_POST = do_PUT = do_GET


def test_cli_a_qdrant_servers_refusal_is_one_error_line(loan_cache):
    with serving(_RefusingQdrant) as url:
        done = run(
            "query", "x", "--collection", "docs", "--qdrant-url", url,
            cache=loan_cache, env={"QDRANT_API_KEY": "s3cret-key"},
        )  # fmt: skip
    assert done.returncode == 2
    # The key goes over plain http: said once, in the command's words, without the key.
    assert done.stderr.splitlines()[:-1] == [
        f"warning: QDRANT_API_KEY is sent to {url} unencrypted: use an https:// URL"
    ]
    line = done.stderr.splitlines()[-1]
    assert line.startswith("error: Qdrant: ")
    assert "403" in line
    assert "Forbidden: read-only key" in line
    assert "s3cret-key" not in done.stdout + done.stderr


def test_cli_ingest_again_writes_nothing_replaces_changed_files_and_prunes(tmp_path, loan_cache):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i, text in enumerate(MOVIES["descriptions"][:6]):
        (folder / f"m{i}.txt").write_text(text)
    qdrant = tmp_path / "qdrant"

    def ingest(*extra):
        done = run(
            "ingest", str(folder), "--collection", "c", "--qdrant-path", str(qdrant),
            "--embed-model", EMBED, "--chunk-size", "64", "--chunk-overlap", "0", *extra,
            cache=loan_cache,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr
        return done.stdout, {p.id: p.payload["file_path"] for p in points(qdrant, "c")}

    out, first = ingest()
    assert "6 files, 0 unchanged" in out
    assert len(first) >= 6

    (folder / "m1.txt").write_text("A short new text about a lighthouse keeper.")
    out, changed = ingest()
    old_m1 = {i for i, f in first.items() if f.endswith("m1.txt")}
    assert f"6 files, 5 unchanged, 1 chunks written, {len(old_m1)} removed" in out
    assert {i: f for i, f in changed.items() if not f.endswith("m1.txt")} == {
        i: f for i, f in first.items() if i not in old_m1
    }

    (folder / "m2.txt").unlink()
    out, kept = ingest()
    assert "5 files, 5 unchanged, 0 chunks written, 0 removed" in out
    assert kept == changed  # without --prune a file that is gone keeps its chunks
    out, pruned = ingest("--prune")
    assert "0 chunks written, " in out
    assert ", 1 files pruned;" in out
    assert pruned == {i: f for i, f in changed.items() if not f.endswith("m2.txt")}


def _stored(qdrant: Path, collection: str) -> int:
    with QdrantEdgeVectorStore(qdrant / collection) as store:
        return store.count()


def _default_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _interrupt(args: list[str], cache: Path, sig: int) -> int:
    """Start an ingest and send ``sig`` as soon as it says its first chunks are written."""
    process = subprocess.Popen(
        [sys.executable, "-m", "llama_index_fastembed_rerank", *args, "--progress-every", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "FASTEMBED_CACHE_PATH": str(cache)},
        # Ctrl-C as at a terminal: a suite started in the background (`pytest &`, some CI
        # runners) passes SIGINT on ignored, and Python then keeps ignoring it.
        preexec_fn=_default_sigint,
    )
    assert process.stderr is not None
    for line in process.stderr:  # blocks until the command writes a line: no sleep, no poll
        if line.startswith("progress: "):
            process.send_signal(sig)
            break
    process.communicate(timeout=600)
    return process.returncode


def test_cli_ingest_interrupted_then_rerun_stores_each_chunk_once(tmp_path, loan_cache):
    folder, qdrant = tmp_path / "docs", tmp_path / "qdrant"
    folder.mkdir()
    # Six write batches: the signal, sent once the first is written, lands with most of the
    # work still to do. The long file comes first, and its chunks span three batches.
    long_text = "\n\n".join(f"Part {i}: {MOVIES['descriptions'][i % 20]}" for i in range(700))
    (folder / "a-long.txt").write_text(long_text)
    names = [f"f{i:03}.txt" for i in range(6 * WRITE_BATCH - 700)]
    for i, name in enumerate(names):
        (folder / name).write_text(f"Note {i}: {MOVIES['descriptions'][i % 20]}")
    args = ["ingest", str(folder), "--collection", "k", "--qdrant-path", str(qdrant),
            "--embed-model", EMBED, "--chunk-size", "48", "--chunk-overlap", "0"]  # fmt: skip

    # Ctrl-C in the middle of the first ingest, then the same command again.
    assert _interrupt(args, loan_cache, signal.SIGINT) == 130
    assert 0 < _stored(qdrant, "k") < 4 * WRITE_BATCH
    done = run(*args, cache=loan_cache)
    assert done.returncode == 0, done.stderr
    total = _stored(qdrant, "k")
    assert total > 5 * WRITE_BATCH

    # Every file changed; SIGKILL once the long file's first new chunks are in beside all its
    # old ones (they go once its new ones are all written).
    (folder / "a-long.txt").write_text(long_text.replace("Part ", "Revised part "))
    for i, name in enumerate(names):
        (folder / name).write_text(f"Revised note {i}: {MOVIES['descriptions'][(i + 7) % 20]}")
    assert _interrupt(args, loan_cache, signal.SIGKILL) == -signal.SIGKILL
    assert _stored(qdrant, "k") > total  # old and new chunks side by side
    done = run(*args, cache=loan_cache)
    assert done.returncode == 0, done.stderr
    assert ", 0 removed" not in done.stdout  # the old chunks of killed files went now

    # Each chunk once: what an ingest of the same files into a new collection stores.
    done = run(*[a if a != "k" else "fresh" for a in args], cache=loan_cache)
    assert done.returncode == 0, done.stderr

    def chunks(collection: str) -> list[tuple[str, str, dict]]:
        return sorted(
            (
                p.id,
                Path(p.payload["file_path"]).name,
                json.loads(p.payload["_node_content"])["text"],
            )
            for p in points(qdrant, collection)
        )

    stored = chunks("k")
    assert stored == chunks("fresh")
    assert {name for _, name, _ in stored} == {"a-long.txt", *names}


def test_cli_import_refuses_the_wrong_kind_and_unusable_caches(offline_cache, tmp_path):
    flat = tmp_path / "cross-encoder"
    shutil.copytree(offline_cache.parent / "standin-cross-encoder", flat)
    shutil.copy(flat / "onnx" / "model.onnx", flat / "model.onnx")
    a_file = tmp_path / "a-file"
    a_file.write_text("")
    cases = [
        (["import-model", str(flat), EMBED], tmp_path / "c", "is not a text embedding model"),
        (["models", "import", str(offline_cache.parent / "all-MiniLM-L6-v2"), EMBED],
         a_file / "cache", "Not a directory"),
    ]  # fmt: skip
    for args, cache, message in cases:
        done = run(*args, cache=cache)
        assert done.returncode == 2, done.stderr
        (line,) = done.stderr.splitlines()
        assert line.startswith("error: "), line
        assert message in line, line
    assert not (tmp_path / "c").exists()


def test_cli_without_the_file_readers_skips_those_files_with_the_fix(tmp_path, loan_cache):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("Plain text needs no extra package.")
    (tmp_path / "docs" / "b.csv").write_text("title,year\nKubo,2016\n")
    done = run(
        "ingest", "docs", "--collection", "c", "--qdrant-path", "q", "--embed-model", EMBED,
        cache=loan_cache, cwd=tmp_path,
        before="sys.modules['llama_index.readers.file'] = None",  # the base install
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        f"error: skipped {tmp_path / 'docs' / 'b.csv'}: reading .csv files needs "
        "llama-index-readers-file: pip install 'llama-index-fastembed-rerank[cli]'"
    ]
    assert "2 files, 0 unchanged, 1 chunks written, 0 removed, 1 skipped;" in done.stdout


def _without_root_powers() -> list[str]:
    """A command prefix under which permissions hold even for root, or [] where they do.

    Tests run as root, who reads a file of mode 000 all the same: the command runs without
    the capabilities that let root pass file permissions (CAP_DAC_OVERRIDE and
    CAP_DAC_READ_SEARCH), as the owner of its files, like any other user.
    """
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("running as root without setpriv (util-linux): permissions cannot hold")
    drop = "-dac_override,-dac_read_search"
    return [setpriv, "--bounding-set", drop, "--inh-caps", drop, "--"]


def test_cli_ingest_reports_every_entry_it_cannot_read_and_ingests_the_rest(tmp_path, loan_cache):
    folder = tmp_path / "home"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.txt").write_text(MOVIES["descriptions"][0])
    (folder / "sub" / "b.md").write_text(MOVIES["descriptions"][1])
    (folder / "empty.txt").write_text("")
    (folder / ".hidden.txt").write_text("left out")
    (folder / "photo.jpg").write_bytes(b"\xff\xd8\xff")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "c.rst").write_text(MOVIES["descriptions"][2])
    (folder / "linked").symlink_to(tmp_path / "elsewhere")
    (folder / "link.txt").symlink_to(folder / "a.txt")
    (folder / "broken.txt").symlink_to(folder / "nowhere.txt")
    (folder / "loop.md").symlink_to(folder / "loop.md")
    os.mkfifo(folder / "pipe.txt")  # opened, it would wait for a writer for ever
    try:
        os.mknod(folder / "device.txt", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        (folder / "device.txt").symlink_to("/dev/null")
    (folder / os.fsdecode(b"caf\xe9.txt")).write_text("a Latin-1 name")
    (folder / "latin1.txt").write_bytes("café".encode("latin-1"))
    (folder / "utf16.txt").write_bytes("Paprika".encode("utf-16-le"))
    with open(folder / "big.txt", "wb") as big:  # 64 MB of NUL bytes, written sparsely
        big.truncate(64 << 20)
    (folder / "secret.txt").write_text("not readable")
    (folder / "secret.txt").chmod(0)
    (folder / "locked").mkdir()
    (folder / "locked" / "d.txt").write_text("inside a folder that cannot be listed")
    (folder / "locked").chmod(0)
    qdrant = tmp_path / "qdrant"
    try:
        with closing(socket.socket(socket.AF_UNIX)) as server:
            server.bind(str(folder / "socket.md"))
            done = subprocess.run(
                [*_without_root_powers(), sys.executable, "-m", "llama_index_fastembed_rerank",
                 "ingest", str(folder), "--collection", "c", "--qdrant-path", str(qdrant),
                 "--embed-model", EMBED],
                capture_output=True, text=True, check=False, timeout=600,
                env={**os.environ, "HF_HUB_OFFLINE": "1", "FASTEMBED_CACHE_PATH": str(loan_cache)},
            )  # fmt: skip
    finally:
        (folder / "locked").chmod(0o700)
    assert done.returncode == 1, done.stderr  # something was skipped, the rest ingested
    not_read = "not a regular file: only files are read"
    no_permission = "Permission denied: give this user read permission, or run as a user who has it"
    assert sorted(done.stderr.splitlines()) == sorted(
        f"error: skipped {folder}/{name}: {reason}"
        for name, reason in [
            ("big.txt", "it holds NUL bytes, so it is not UTF-8 text (UTF-16? convert it: iconv "
             "-f UTF-16 -t UTF-8), or leave it out"),
            ("broken.txt", f"a symbolic link to '{folder}/nowhere.txt', which does not exist: fix "
             "or remove the link"),
            ("caf\\xe9.txt", "its name is not UTF-8: rename it (convmv converts names from another "
             "encoding)"),
            ("device.txt", f"a character device, {not_read}"),
            ("latin1.txt", "not UTF-8 text ('utf-8' codec can't decode byte 0xe9 in position 3: "
             "unexpected end of data): convert it to UTF-8 (iconv -f ENCODING -t UTF-8) or leave "
             "it out"),
            ("locked", f"cannot list this folder: {no_permission}"),
            ("loop.md", f"a symbolic link loop ('{folder}/loop.md'): fix or remove the link"),
            ("pipe.txt", f"a named pipe (FIFO), {not_read}"),
            ("secret.txt", no_permission),
            ("socket.md", f"a socket, {not_read}"),
            ("utf16.txt", "it holds NUL bytes, so it is not UTF-8 text (UTF-16? convert it: iconv "
             "-f UTF-16 -t UTF-8), or leave it out"),
        ]
    )  # fmt: skip
    assert done.stdout.startswith(
        "c: 8 files, 1 unchanged, 3 chunks written, 0 removed, 11 skipped, 2 hidden or of other "
        "types left out; 3 chunks in the collection"
    )  # 8 read: a, b, c (through the linked folder), empty and the 4 that failed to read
    stored = {Path(p.payload["file_path"]).name for p in points(qdrant, "c")}
    assert stored == {"a.txt", "b.md", "c.rst"}


def test_cli_ingest_has_no_wall_clock_limit_on_chunking(tmp_path, loan_cache):
    # NLTK limits each regular expression to 5 s of wall-clock time, and a long paragraph on a
    # busy machine exceeds it. Here the limit is a microsecond: a machine busier than any.
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "long.txt").write_text(" ".join(MOVIES["descriptions"] * 6))
    (tmp_path / "docs" / "short.txt").write_text(MOVIES["descriptions"][0])
    done = run(
        "ingest", "docs", "--collection", "c", "--qdrant-path", "q", "--embed-model", EMBED,
        cache=loan_cache, cwd=tmp_path,
        before="import nltk.redos; nltk.redos.DEFAULT_TIMEOUT = 1e-6",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    texts = [json.loads(p.payload["_node_content"])["text"] for p in points(tmp_path / "q", "c")]
    assert len(texts) > 5
    assert set(" ".join(texts).split()) == set(" ".join(MOVIES["descriptions"]).split())


def test_cli_default_chunks_fit_the_models_window(tmp_path, loan_cache, real_text_embedding):
    folder, qdrant = tmp_path / "docs", tmp_path / "qdrant"
    folder.mkdir()
    # Names, numbers and words of other languages: more of the model's tokens than tiktoken's.
    (folder / "notes.txt").write_text(
        "\n\n".join(f"{d} See os.path.join_{i}() and str.removeprefix(); Straße, naïve café, "
                    f"東京 {i * 7919}." for i, d in enumerate(MOVIES["descriptions"] * 2))
    )  # fmt: skip
    args = ["ingest", str(folder), "--qdrant-path", str(qdrant), "--embed-model", EMBED]
    done = run(*args, "--collection", "fit", cache=loan_cache)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""  # no chunk was longer than the window
    tokenizer = real_text_embedding.model.tokenizer  # fastembed's own: it truncates
    stored = points(qdrant, "fit")
    embedded = [f"file_name: notes.txt\n\n{json.loads(p.payload['_node_content'])['text']}"
                for p in stored]  # fmt: skip
    lengths = [sum(e.attention_mask) for e in tokenizer.encode_batch(embedded)]
    assert max(lengths) <= 256
    assert sorted(lengths)[-2] > 200  # chunks are filled to the window, not merely short

    # A --chunk-size beyond the window is said once, before anything is embedded.
    done = run(*args, "--collection", "over", "--chunk-size", "400", cache=loan_cache)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[0] == (
        f"warning: --chunk-size 400 is more than the 254 tokens {EMBED} reads (its 256-token "
        "window less 2 special tokens): longer chunks lose their ends when embedded; leave "
        "--chunk-size out to fit the model"
    )


def test_cli_refuses_a_folder_of_qdrant_clients_local_mode(tmp_path, loan_cache):
    from qdrant_client import QdrantClient, models

    old = tmp_path / "qdrant"
    with closing(QdrantClient(path=str(old))) as client:  # what earlier versions wrote
        client.create_collection("docs", models.VectorParams(size=384, distance="Cosine"))
    for args in (["query", "x", "--collection", "docs"], ["ingest", ".", "--collection", "d"]):
        done = run(*args, "--qdrant-path", str(old), cache=loan_cache, cwd=tmp_path)
        assert done.returncode == 2
        assert done.stderr.splitlines() == [
            f"error: {old} holds collections of qdrant-client's local mode, which an earlier "
            "version wrote; this version keeps collections in Qdrant Edge folders: ingest your "
            "files again with --qdrant-path set to a new folder (or move "
            f"{old} away first)"
        ]


def test_cli_a_second_process_on_a_folder_is_one_error_line(ingested, loan_cache):
    _, qdrant = ingested
    with QdrantEdgeVectorStore(qdrant / "docs"):  # this process holds the folder
        done = query(ingested, loan_cache, "x", "--no-rerank")
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"error: {qdrant / 'docs'} is open in another process (Qdrant Edge opens a folder in one "
        "process at a time): close that process first, or use another folder"
    ]


def test_cli_push_copies_to_a_server_which_query_then_reads(
    ingested, loan_cache, monkeypatch, capsys, tmp_path
):
    # A server, in this process: qdrant-client's local mode in a folder, behind the URL the
    # command takes (each command opens and closes it, as it connects to a server).
    import qdrant_client

    from llama_index_fastembed_rerank.cli import main

    _, qdrant = ingested
    folder = tmp_path / "server"

    class Server(qdrant_client.QdrantClient):
        def __init__(self, url: str, **kwargs: object) -> None:
            super().__init__(path=str(folder))

    monkeypatch.setattr(qdrant_client, "QdrantClient", Server)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("FASTEMBED_CACHE_PATH", str(loan_cache))
    url = "http://qdrant.test:6333"
    total = len(points(qdrant, "docs"))

    push = ["push", "--collection", "docs", "--qdrant-path", str(qdrant), "--qdrant-url", url]
    assert main(push) == 0
    assert capsys.readouterr().out == (
        f"docs: {total} points copied to docs at {url}; {total} points there\n"
    )
    assert main(push) == 0  # again: nothing missing, nothing copied twice
    assert (
        capsys.readouterr().out == f"docs: 0 points copied to docs at {url}; {total} points there\n"
    )

    ask = ["query", "Paprika", "--collection", "docs", "--hybrid", "--no-rerank", "--json"]
    assert main([*ask, "--qdrant-path", str(qdrant)]) == 0
    embedded = json.loads(capsys.readouterr().out)
    assert main([*ask, "--qdrant-url", url]) == 0  # the models come from the pushed record
    on_server = json.loads(capsys.readouterr().out)
    assert [r["id"] for r in on_server] == [r["id"] for r in embedded]
    assert [r["score"] for r in on_server] == pytest.approx([r["score"] for r in embedded])


def test_cli_quantize_int8_is_recorded_and_queries_follow_it(loan_cache, tmp_path):
    docs, qdrant = tmp_path / "docs", tmp_path / "qdrant"
    docs.mkdir()
    for i, text in enumerate(MOVIES["descriptions"]):
        (docs / f"{i:02}.txt").write_text(text)
    where = ["--qdrant-path", str(qdrant)]
    # --hybrid with BM25: BM25 has no weights and runs as it is, without an error.
    done = run("ingest", str(docs), "--collection", "int8", *where, "--embed-model", EMBED,
               "--hybrid", "--quantize", "int8", cache=loan_cache)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    with QdrantEdgeVectorStore(qdrant / "int8") as store:
        assert store.read_metadata()[RECORD_KEY]["quantize"] == "int8"
    assert list(loan_cache.rglob("model.int8-v1.onnx"))  # the embedder's, kept
    # Without --quantize the query is embedded as the collection's vectors were.
    found = run("query", "Joan of Arc heresy trial", "--collection", "int8", *where,
                "--hybrid", "--no-rerank", "--top-n", "1", "--json", cache=loan_cache)  # fmt: skip
    assert found.returncode == 0, found.stderr
    assert found.stderr == ""
    (hit,) = json.loads(found.stdout)
    assert "Jeanne d'Arc" in hit["text"]
    # --quantize int8 quantizes the reranker too.
    reranked = run("query", "Joan of Arc heresy trial", "--collection", "int8", *where,
                   "--quantize", "int8", "--json", cache=loan_cache)  # fmt: skip
    assert reranked.returncode == 0, reranked.stderr
    assert reranked.stderr == ""
    assert list(loan_cache.rglob("model.cls-pruned-int8-v1.onnx"))

    # An fp32 collection: an int8 query says so in one line and embeds as the collection did;
    # an int8 ingest into it is refused.
    assert run("ingest", str(docs), "--collection", "fp32", *where, "--embed-model", EMBED,
               cache=loan_cache).returncode == 0  # fmt: skip
    with QdrantEdgeVectorStore(qdrant / "fp32") as store:
        assert store.read_metadata()[RECORD_KEY]["quantize"] is None
    queried = run("query", "Joan of Arc heresy trial", "--collection", "fp32", *where,
                  "--quantize", "int8", "--json", cache=loan_cache)  # fmt: skip
    assert queried.returncode == 0, queried.stderr
    assert queried.stderr.splitlines() == [
        "warning: collection 'fp32' holds fp32 vectors (ingested without --quantize): the query "
        "is embedded alike, and --quantize int8 applies to the reranker only"
    ]
    refused = run("ingest", str(docs), "--collection", "fp32", *where, "--quantize", "int8",
                  cache=loan_cache)  # fmt: skip
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        "error: collection 'fp32' holds fp32 vectors (ingested without --quantize), not int8 "
        "ones: leave --quantize out, or ingest into another collection"
    ]


def test_cli_quantize_takes_only_int8(tmp_path):
    done = run("ingest", str(tmp_path), "--collection", "c", "--quantize", "int4",
               cache=tmp_path)  # fmt: skip
    assert done.returncode == 2
    assert "argument --quantize: invalid choice: 'int4' (choose from 'int8')" in done.stderr


def test_cli_without_qdrant_edge_says_to_use_a_server(tmp_path, monkeypatch, capsys):
    # Where qdrant-edge-py has no wheel, the [cli] extra installs without it (a marker).
    from llama_index_fastembed_rerank.cli import main

    monkeypatch.setitem(sys.modules, "qdrant_edge", None)  # find_spec then finds nothing
    (tmp_path / "a.txt").write_text("text")
    root = tmp_path / "q"
    code = main(
        ["ingest", str(tmp_path / "a.txt"), "--collection", "c", "--qdrant-path", str(root)]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("error: embedded Qdrant needs qdrant-edge-py, which is not installed")
    assert "--qdrant-url" in err
    assert not root.exists()
