"""GGUF files as a model source: dequantised once into a Hugging Face model folder.

A ``.gguf`` file (llama.cpp's format, often the only offline copy of a model) holds the
weights, quantised, and the tokenizer with its chat template. transformers dequantises it
on load (``from_pretrained(folder, gguf_file=name)``), but the model it returns refuses
``save_pretrained`` ("quantized with gguf"), so the weights are copied into a model built
from its config, which saves as a normal safetensors folder that every stage loads.

Before the 20-second load we check what transformers can read: the architecture and the
tensor types, naming the file when it cannot (``GgufError``).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from rlmec_core.errors import InputError

GGUF_SUFFIX = ".gguf"
SOURCE_NAME = "gguf_source.json"  # what the folder was made from, inside the folder
# Tensor types stored as plain numbers; every other type must be one gguf can dequantise.
_PLAIN_TYPES = frozenset({"F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64"})


class GgufError(InputError, ValueError):
    """A GGUF file this project cannot turn into a model; the message names the file."""


def is_gguf_source(path: str | Path) -> bool:
    """A ``.gguf`` file, or a folder with no ``config.json`` that holds one."""
    path = Path(path)
    if path.is_file():
        return path.suffix.lower() == GGUF_SUFFIX
    return path.is_dir() and not (path / "config.json").is_file() and bool(_gguf_files(path))


def _gguf_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == GGUF_SUFFIX)


def gguf_file(path: str | Path) -> Path:
    """The one GGUF file that ``path`` names: the file itself, or a folder's only one."""
    path = Path(path)
    if path.is_file():
        if path.suffix.lower() != GGUF_SUFFIX:
            raise GgufError(f"{path}: not a .gguf file")
        return path.resolve()
    if not path.is_dir():
        raise GgufError(f"{path}: no such file or folder")
    found = _gguf_files(path)
    if len(found) != 1:
        names = ", ".join(p.name for p in found) or "none"
        raise GgufError(
            f"{path}: a GGUF model folder must hold exactly one .gguf file (found {names}); "
            "name the file itself"
        )
    return found[0].resolve()


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def gguf_source(path: str | Path) -> dict[str, Any]:
    """What lineage records of a GGUF file: its name, size and sha256 (about 0.3 s for
    100 MB), with the architecture and tensor types read from its header."""
    file = gguf_file(path)
    header = inspect_gguf(file)
    return {
        "format": "gguf",
        "file": file.name,
        "size": file.stat().st_size,
        "sha256": file_sha256(file),
        **header,
    }


def inspect_gguf(file: Path) -> dict[str, Any]:
    """The architecture and tensor types of ``file``; ``GgufError`` when transformers
    cannot load it (an unknown architecture, a tensor type gguf cannot dequantise, or not
    a GGUF file at all)."""
    import gguf
    from gguf.quants import _type_traits
    from transformers.modeling_gguf_pytorch_utils import GGUF_SUPPORTED_ARCHITECTURES

    try:
        reader = gguf.GGUFReader(str(file))
    except (ValueError, OSError, IndexError, KeyError) as exc:
        raise GgufError(f"{file}: not a readable GGUF file ({exc})") from None
    field = reader.fields.get("general.architecture")
    if field is None:
        raise GgufError(f"{file}: the GGUF header names no general.architecture")
    architecture = str(field.contents())
    supported = [a for a in GGUF_SUPPORTED_ARCHITECTURES if a not in ("general", "tokenizer")]
    if architecture not in supported:
        raise GgufError(
            f"{file}: architecture {architecture!r} is not one transformers can load from GGUF "
            f"(it reads {', '.join(sorted(supported))})"
        )
    readable = _PLAIN_TYPES | {t.name for t in _type_traits}
    types = sorted({t.tensor_type.name for t in reader.tensors})
    unreadable = [t for t in types if t not in readable]
    if unreadable:
        raise GgufError(
            f"{file}: quantisation type {', '.join(unreadable)} cannot be dequantised by gguf "
            f"{gguf.__version__ if hasattr(gguf, '__version__') else ''}".rstrip()
            + "; convert the file to another type (e.g. Q8_0 or F16) with llama.cpp"
        )
    return {"architecture": architecture, "tensor_types": types, "n_tensors": len(reader.tensors)}


def dequantize_gguf(
    path: str | Path, out_dir: str | Path, source: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write the model of a GGUF file as a ``save_pretrained`` folder (float32 safetensors,
    tokenizer, chat template) to ``out_dir``, atomically, with ``gguf_source.json`` in it.
    Returns the source record (``gguf_source``; pass it when already computed)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = source if source is not None else gguf_source(path)
    file = gguf_file(path)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(file.parent, gguf_file=file.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            file.parent, gguf_file=file.name, dtype=torch.float32
        )
    except (ValueError, KeyError, NotImplementedError, RuntimeError) as exc:
        raise GgufError(f"{file}: transformers could not load it ({exc})") from None
    config = loaded.config
    # The loaded model is marked quantised and will not save; a plain one from its config will.
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = file.stem
    with torch.device("meta"):
        model = type(loaded)(config)
    model.load_state_dict(loaded.state_dict(), assign=True)
    model.tie_weights()
    model.generation_config = loaded.generation_config
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    (tmp / SOURCE_NAME).write_text(json.dumps(source, indent=2, sort_keys=True) + "\n")
    if out_dir.exists():
        shutil.rmtree(out_dir)
    os.replace(tmp, out_dir)
    return source


def dequantized_folder(path: str | Path, cache_root: str | Path) -> tuple[Path, dict[str, Any]]:
    """The HF folder of a GGUF source under ``cache_root/<sha256 prefix>``, made on first
    use; a folder whose recorded source has another sha256 is made again."""
    source = gguf_source(path)
    folder = Path(cache_root) / f"{Path(source['file']).stem}-{source['sha256'][:16]}"
    record = folder / SOURCE_NAME
    if record.is_file() and (folder / "config.json").is_file():
        try:
            if json.loads(record.read_text())["sha256"] == source["sha256"]:
                return folder, source
        except (ValueError, KeyError):
            pass
    return folder, dequantize_gguf(path, folder, source)
