"""GGUF files as a model source: which files are one, and a clear error for those that
transformers cannot load, naming the file (the real dequantisation of SmolLM2 is checked
in tests/test_smollm.py)."""

from __future__ import annotations

from pathlib import Path

import gguf
import numpy as np
import pytest

from flows.cli import main
from rlmec_core.gguf_model import GgufError, gguf_file, gguf_source, inspect_gguf, is_gguf_source
from tasks.models import ModelSourceError, check_model_source


def write_gguf(path: Path, architecture: str, tensor_type: str = "F32") -> Path:
    """A header-valid GGUF file with one tensor of ``tensor_type`` (F32 or raw Q8_1)."""
    writer = gguf.GGUFWriter(str(path), architecture)
    if tensor_type == "F32":
        writer.add_tensor("token_embd.weight", np.zeros((4, 8), dtype=np.float32))
    else:  # raw quantised bytes: one block of 32 values, 36 bytes for Q8_1
        kind = gguf.GGMLQuantizationType[tensor_type]
        _, size = gguf.GGML_QUANT_SIZES[kind]
        writer.add_tensor(
            "token_embd.weight",
            np.zeros(size, dtype=np.uint8),
            raw_shape=(size,),  # the byte shape
            raw_dtype=kind,
        )
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_llama_file_of_known_types_passes_and_is_described(tmp_path: Path) -> None:
    file = write_gguf(tmp_path / "m.gguf", "llama")
    assert inspect_gguf(file) == {"architecture": "llama", "tensor_types": ["F32"], "n_tensors": 1}
    source = gguf_source(tmp_path)  # the folder holding it names the same file
    assert source["file"] == "m.gguf" and source["size"] == file.stat().st_size
    assert len(source["sha256"]) == 64 and source["format"] == "gguf"


def test_an_unsupported_architecture_names_the_file_and_the_architecture(tmp_path: Path) -> None:
    file = write_gguf(tmp_path / "r.gguf", "rwkv6")
    with pytest.raises(GgufError, match=r"r\.gguf: architecture 'rwkv6' is not one"):
        inspect_gguf(file)


def test_an_undequantisable_tensor_type_names_the_file_and_the_type(tmp_path: Path) -> None:
    file = write_gguf(tmp_path / "q.gguf", "llama", "Q8_1")
    with pytest.raises(GgufError, match=r"q\.gguf: quantisation type Q8_1 cannot be"):
        inspect_gguf(file)


def test_a_file_that_is_not_gguf_is_refused_by_name(tmp_path: Path) -> None:
    file = tmp_path / "fake.gguf"
    file.write_text("not a model")
    with pytest.raises(GgufError, match=r"fake\.gguf: not a readable GGUF file"):
        inspect_gguf(file)


def test_which_paths_are_gguf_sources(tmp_path: Path) -> None:
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text("{}")
    (hf / "extra.gguf").write_bytes(b"")
    two = tmp_path / "two"
    two.mkdir()
    for name in ("a.gguf", "b.gguf"):
        write_gguf(two / name, "llama")
    assert not is_gguf_source(hf)  # an HF folder stays an HF folder
    assert is_gguf_source(two) and is_gguf_source(two / "a.gguf")
    assert not is_gguf_source(tmp_path / "missing.gguf")
    with pytest.raises(GgufError, match="exactly one .gguf file"):
        gguf_file(two)
    with pytest.raises(ModelSourceError, match=r"bootstrap.model_path: .*missing"):
        check_model_source(tmp_path / "missing", "bootstrap.model_path")


def test_rlmec_run_refuses_a_bad_gguf_before_anything_runs(tmp_path: Path, capsys) -> None:
    file = write_gguf(tmp_path / "bad.gguf", "rwkv6")
    config = tmp_path / "c.yaml"
    config.write_text(f"bootstrap: {{model_path: {file}}}\n")
    code = main(["run", "--config", str(config), "--workspace", str(tmp_path / "ws")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("rlmec: ") and "bad.gguf" in err[0]
    assert "rwkv6" in err[0]
    assert not (tmp_path / "ws" / "artifacts").exists()
