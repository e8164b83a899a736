"""Ingest's reading and chunking, in process: what a folder holds, and texts of any length.

The command line's own tests (tests/test_cli.py) run the same on real folders in subprocesses.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import stat
import uuid
from contextlib import closing
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from llama_index.core.node_parser import SentenceSplitter
from llama_index.core.schema import Document, MetadataMode
from llama_index.core.utils import get_tokenizer

import offline_models
from llama_index_fastembed_rerank import FastEmbedEmbedding
from llama_index_fastembed_rerank import ingest as ingest_module
from llama_index_fastembed_rerank.ingest import (
    _CHUNK_NAMESPACE,
    chunk_id,
    find_files,
    ingest,
    model_tokens,
    sections,
    splitter,
)
from llama_index_fastembed_rerank.qdrant import EmbeddedCollection

MOVIES = json.loads((Path(__file__).parents[1] / "examples" / "data" / "movies.json").read_text())
DESCRIPTIONS: list[str] = MOVIES["descriptions"]


def _document(text: str, name: str = "notes.txt") -> Document:
    """A document as ingest reads a file: its name embedded, its path kept out of the text."""
    document = Document(text=text, metadata={"file_name": name, "file_path": f"/docs/{name}"})
    document.id_ = f"/docs/{name}"
    document.excluded_embed_metadata_keys = ["file_path"]
    document.excluded_llm_metadata_keys = ["file_path"]
    return document


def _chunks(chunker: SentenceSplitter, document: Document, settings: str) -> list:
    return ingest_module._split(chunker, document.id_, [document], settings, [])


# --- chunks and their ids ---------------------------------------------------------------------


def test_chunk_ids_of_a_normal_file_are_those_of_earlier_versions():
    # Ids written by the release before this one (SentenceSplitter and a hash per chunk), so a
    # collection ingested then is not embedded again.
    text = "\n\n".join(DESCRIPTIONS[:8]) + "\n\n\n" + " ".join(DESCRIPTIONS[8:])
    nodes = _chunks(splitter(64, 8), _document(text), "SentenceSplitter(64,8)")
    ids = [n.node_id for n in nodes]
    assert len(ids) == 15
    assert ids[:3] == [
        "757512b5-8ff4-5dd2-a4a8-017210b91b9a",
        "f250e3bc-e5e2-522c-90ed-02bffd7b3595",
        "ce68c779-96c7-5bd2-a6c0-9d6965522010",
    ]
    assert ids[-1] == "9f27c327-bb0f-56e4-a004-ab881dd69d9a"
    plain = SentenceSplitter(chunk_size=64, chunk_overlap=8).get_nodes_from_documents(
        [_document(text)]
    )
    assert [n.text for n in nodes] == [n.text for n in plain]


@settings(max_examples=60, deadline=None)
@given(
    text=st.text(alphabet=st.characters(exclude_categories=("Cs",)), max_size=300),
    repeat=st.sampled_from([1, 700]),
    i=st.integers(min_value=0, max_value=10_000),
)
def test_chunk_id_hashes_the_documents_json_key(text, repeat, i):
    # Hashed a slice at a time; the same as the whole key at once, escapes and all.
    long_text = f'file_name: a.txt\n\n{text * repeat}"\\'
    key = json.dumps(["/docs/a.txt", 2, long_text, "SentenceSplitter(256,32)"], ensure_ascii=False)
    digest = hashlib.sha256(key.encode()).hexdigest()
    expected = str(uuid.uuid5(_CHUNK_NAMESPACE, f"{digest}:{i}"))
    assert chunk_id("/docs/a.txt", 2, long_text, "SentenceSplitter(256,32)", i) == expected


_TEXTS = {
    "paragraphs": "\n\n".join(DESCRIPTIONS) * 3,
    "one-long-paragraph": " ".join(DESCRIPTIONS * 12),
    "blank-line-sections": "\n\n\n".join(" ".join(DESCRIPTIONS[i : i + 5]) for i in range(16)),
    "no-spaces": "".join(d.replace(" ", "") for d in DESCRIPTIONS),
    "lines-and-cjk": "\n".join(f"{d} 東京の映画、{i}。" for i, d in enumerate(DESCRIPTIONS * 2)),
}


@pytest.mark.parametrize("text", list(_TEXTS.values()), ids=list(_TEXTS))
@pytest.mark.parametrize(("size", "overlap"), [(64, 8), (256, 32)], ids=["64", "256"])
def test_splitter_chunks_as_sentence_splitter_does(text, size, overlap):
    metadata = "file_name: notes.txt"
    ours = splitter(size, overlap).split_text_metadata_aware(text, metadata)
    theirs = SentenceSplitter(chunk_size=size, chunk_overlap=overlap).split_text_metadata_aware(
        text, metadata
    )
    assert ours == theirs


def test_splitter_has_no_wall_clock_limit(monkeypatch):
    # NLTK limits each regular expression to 5 s of wall-clock time; on a busy machine a long
    # paragraph exceeds it. A limit of a microsecond stands in for a very busy machine.
    redos = pytest.importorskip("nltk.redos", reason="NLTK before 3.10 sets no time limit")
    text = " ".join(DESCRIPTIONS * 40)
    expected = splitter(256, 32).split_text(text)
    monkeypatch.setattr(redos, "DEFAULT_TIMEOUT", 1e-6)
    with pytest.raises(TimeoutError, match="exceeded its 1e-06s time limit"):
        SentenceSplitter(chunk_size=256, chunk_overlap=32).split_text(text)
    assert splitter(256, 32).split_text(text) == expected


def test_sections_cut_at_the_last_paragraph_break():
    text = "\n\n".join(f"Paragraph {i}. " + "word " * (i % 7 * 20) for i in range(400))
    pieces = list(sections(text, 2_000))
    assert "".join(pieces) == text
    assert all(len(p) <= 2_000 for p in pieces)
    assert all(p.startswith("\n\nParagraph ") for p in pieces[1:])
    # No break at all: cut at the size.
    assert list(sections("x" * 5_001, 2_000)) == ["x" * 2_000, "x" * 2_000, "x" * 1_001]


def test_a_long_text_is_chunked_a_section_at_a_time(monkeypatch):
    monkeypatch.setattr(ingest_module, "SECTION_CHARS", 4_000)
    text = "\n\n".join(f"{i}: {d}" for i, d in enumerate(DESCRIPTIONS * 4))
    document = _document(text)
    nodes = _chunks(splitter(64, 8), document, "SentenceSplitter(64,8)")
    count = get_tokenizer()
    name = len(count("file_name: notes.txt"))
    assert all(len(count(n.text)) + name <= 64 for n in nodes)
    # Every chunk is a piece of the text, in order, and none runs across a section's end.
    ends, position = [], 0
    for piece in sections(text, 4_000):
        position += len(piece)
        ends.append(position)
    for node in nodes:
        assert text[node.start_char_idx : node.end_char_idx] == node.text
        assert not any(node.start_char_idx < end < node.end_char_idx for end in ends)
    assert [n.start_char_idx for n in nodes] == sorted(n.start_char_idx for n in nodes)
    # The chunks of sections are not those of the whole text, so their ids differ too.
    monkeypatch.setattr(ingest_module, "SECTION_CHARS", 1 << 20)
    whole = _chunks(splitter(64, 8), document, "SentenceSplitter(64,8)")
    assert not {n.node_id for n in nodes} & {n.node_id for n in whole}


# --- chunks that fit the model ----------------------------------------------------------------


@pytest.fixture(scope="module")
def minilm(offline_cache) -> FastEmbedEmbedding:
    return FastEmbedEmbedding(offline_models.EMBED_MODEL, cache_dir=str(offline_cache))


def test_model_tokens_are_the_models_window_less_its_special_tokens(minilm):
    tokens = model_tokens(minilm)
    assert tokens is not None
    assert (tokens.window, tokens.special, tokens.room) == (256, 2, 254)
    text = "Paprika is a film by Satoshi Kon."
    assert len(tokens.tokens(text)) == len(fastembeds_tokenizer(minilm).encode(text).ids) - 2
    assert model_tokens(object()) is None  # another embedding class: no window known


def test_chunks_of_the_models_size_are_never_truncated(minilm):
    tokens = model_tokens(minilm)
    text = "\n\n".join(
        f"{d} {DESCRIPTIONS[(i * 7) % 20]} ({i}, straße, naïve, 東京)"
        for i, d in enumerate(DESCRIPTIONS * 6)
    )
    nodes = _chunks(
        splitter(tokens.room, 32, tokens.tokens),
        _document(text, "a-rather-long-file-name-of-notes.txt"),
        "x",
    )
    assert len(nodes) > 20
    # fastembed's own tokenizer, as it embeds: it truncates to the window.
    engine_tokenizer = fastembeds_tokenizer(minilm)
    encodings = engine_tokenizer.encode_batch(
        [n.get_content(metadata_mode=MetadataMode.EMBED) for n in nodes]
    )
    assert not any(e.overflowing for e in encodings)
    assert max(sum(e.attention_mask) for e in encodings) > 200  # full, not merely short


def fastembeds_tokenizer(embed_model: FastEmbedEmbedding):
    from llama_index_fastembed_rerank import _fastembed

    return _fastembed.tokenizer(embed_model._model())


# --- what a folder holds ----------------------------------------------------------------------


def test_find_files_reads_or_reports_every_kind_of_entry(tmp_path):
    root = tmp_path / "home"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("a")
    (root / "empty.md").write_text("")
    (root / "sub" / "b.md").write_text("b")
    (root / "image.png").write_bytes(b"\x89PNG")
    (root / ".hidden.txt").write_text("hidden")
    (root / ".git").mkdir()
    (root / ".git" / "c.txt").write_text("in a hidden folder")
    (root / "link.txt").symlink_to(root / "a.txt")
    (root / "linked-folder").symlink_to(tmp_path / "elsewhere")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "far.rst").write_text("far")
    (root / "parent").symlink_to(root)  # a loop through a folder: walked once
    (root / "broken.txt").symlink_to(root / "nowhere.txt")
    (root / "loop.md").symlink_to(root / "loop.md")
    (root / "gone.zip").symlink_to(root / "nowhere.zip")  # not a supported type: left out
    os.mkfifo(root / "pipe.txt")
    with closing(socket.socket(socket.AF_UNIX)) as server:
        server.bind(str(root / "socket.md"))
        (root / "null.txt").symlink_to("/dev/null")
        bad_name = os.fsdecode(b"caf\xe9.txt")
        (root / bad_name).write_text("a Latin-1 name")
        found = find_files([root])
    far = tmp_path / "elsewhere" / "far.rst"  # through the linked folder
    assert found.files == sorted([root / "a.txt", root / "empty.md", root / "sub" / "b.md", far])
    assert sorted((p.name, reason) for p, reason in found.skipped) == sorted([
        (bad_name, "its name is not UTF-8: rename it (convmv converts names from another "
         "encoding)"),
        ("broken.txt", f"a symbolic link to {str(root / 'nowhere.txt')!r}, which does not exist: "
         "fix or remove the link"),
        ("loop.md", f"a symbolic link loop ({str(root / 'loop.md')!r}): fix or remove the link"),
        ("null.txt", "a character device, not a regular file: only files are read"),
        ("pipe.txt", "a named pipe (FIFO), not a regular file: only files are read"),
        ("socket.md", "a socket, not a regular file: only files are read"),
    ])  # fmt: skip
    assert found.ignored == 4  # .hidden.txt, .git, image.png, gone.zip


def test_find_files_walks_a_folder_given_inside_a_hidden_one(tmp_path):
    folder = tmp_path / ".config" / "notes"
    folder.mkdir(parents=True)
    (folder / "a.txt").write_text("a")
    assert find_files([folder]).files == [folder / "a.txt"]


def test_find_files_names_a_missing_path_and_a_broken_link(tmp_path):
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    with pytest.raises(ValueError, match=r"No such file or folder: 'missing'$"):
        find_files(["missing"])
    with pytest.raises(ValueError, match=r"\(a symbolic link to '.*nowhere'\)$"):
        find_files([tmp_path / "link"])


def test_ingest_skips_a_file_that_vanishes_after_the_walk_and_takes_the_rest(minilm, tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.txt").write_text(DESCRIPTIONS[i])

    def progress(status):
        if status.files_read == 1:  # 0.txt is read; 1.txt was listed, and goes now
            (folder / "1.txt").unlink(missing_ok=True)

    with closing(EmbeddedCollection(tmp_path / "qdrant", "c")) as collection:
        report = ingest(
            [folder], collection, minilm, chunk_size=254, chunk_overlap=32, progress=progress
        )
    assert report.skipped == [
        (
            folder / "1.txt",
            "No such file or directory: it was removed during the ingest: ingest again to "
            "take it, or its removal",
        )
    ]
    assert (report.files, report.chunks_written) == (3, 2)


def test_files_hold_no_nul_bytes_that_pass_for_text(tmp_path):
    (tmp_path / "utf16.txt").write_bytes("Paprika".encode("utf-16-le"))  # valid UTF-8 bytes
    with pytest.raises(ValueError, match=r"holds NUL bytes, so it is not UTF-8 text \(UTF-16\?"):
        ingest_module._read(tmp_path / "utf16.txt")


def test_a_special_file_named_directly_is_reported_not_opened(tmp_path):
    os.mkfifo(tmp_path / "pipe")
    found = find_files([tmp_path / "pipe"])  # would block for ever if it were opened
    assert found.files == []
    assert [reason for _, reason in found.skipped] == [
        "a named pipe (FIFO), not a regular file: only files are read"
    ]
    assert stat.S_ISFIFO(os.stat(tmp_path / "pipe").st_mode)


_SPHINX_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>io — Core tools for streams</title>
<script>var DOCUMENTATION_OPTIONS = {};</script></head>
<body>
<div class="related" role="navigation" aria-label="related navigation"><h3>Navigation</h3>
<ul><li><a href="genindex.html">index</a></li><li><a href="py-modindex.html">modules</a> |</li>
<li><a href="index.html">3.11.2 Documentation</a> &#187;</li>
<li><a href="library/index.html">The Python Standard Library</a> &#187;</li></ul></div>
<div class="document"><div class="documentwrapper"><div class="bodywrapper">
<div class="body" role="main">
<section id="module-io"><h1>io — Core tools for working with streams</h1>
<p>The io module provides Python's main facilities for dealing with various types of I/O.
There are three main types of I/O: text I/O, binary I/O and raw I/O.</p>
<p>To read a file line by line, iterate over the file object: each iteration returns one
line, with its newline, until the end of the file is reached.</p>
<p>Text I/O expects and produces str objects. This means that whenever the backing store is
natively made of bytes, encoding and decoding of data is made transparently.</p>
</section></div></div></div>
<div class="sphinxsidebar" role="navigation" aria-label="main navigation">
<h3>Previous topic</h3><p><a href="os.html">os — Miscellaneous operating system interfaces</a></p>
<h3>Next topic</h3><p><a href="time.html">time — Time access and conversions</a></p>
<h3>This Page</h3><ul><li><a href="bugs.html">Report a Bug</a></li>
<li><a href="_sources/library/io.rst.txt">Show Source</a></li></ul></div></div>
<div class="footer">&copy; <a href="copyright.html">Copyright</a> 2001-2023, Python Software
Foundation. This page is licensed under the Python Software Foundation License Version 2.
Last updated on Feb 15, 2023. Created using Sphinx 5.3.0.</div>
</body></html>
"""


def test_html_pages_are_read_without_navigation_headers_or_footers(tmp_path):
    (tmp_path / "io.html").write_text(_SPHINX_PAGE)
    (document,) = ingest_module._read(tmp_path / "io.html")
    assert "To read a file line by line, iterate over the file object" in document.text
    assert "Text I/O expects and produces str objects." in document.text
    for boilerplate in ("Navigation", "Documentation", "Previous topic", "Report a Bug",
                        "Copyright", "Sphinx"):  # fmt: skip
        assert boilerplate not in document.text
    assert document.metadata["file_name"] == "io.html"


def test_html_in_another_encoding_is_read_as_the_page_declares(tmp_path):
    text = "Un café au lait, très bon, servi chaud dans une tasse épaisse et lourde."
    page = f"<html><head><meta charset='iso-8859-1'></head><body><p>{text}</p></body></html>"
    (tmp_path / "cafe.htm").write_bytes(page.encode("latin-1"))
    (document,) = ingest_module._read(tmp_path / "cafe.htm")
    assert document.text == text
