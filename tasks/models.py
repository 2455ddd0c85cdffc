"""Where a model's weights are: in an artifact, in a user's model folder, or in a GGUF
file dequantised once into the workspace."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from filelock import FileLock

from storage import catalog

DEQUANTIZED = Path("scratch") / "dequantized"  # under the workspace: GGUF files as HF folders


def model_dir(artifact: Path) -> Path:
    """The folder to load with ``from_pretrained`` for a model artifact."""
    ref = catalog.MODEL_REF.path(artifact)
    if ref.is_file():
        path = Path(json.loads(ref.read_text(encoding="utf-8"))["path"])
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{ref}: the referenced model folder {path} is gone or has no config.json"
            )
        return path
    folder = catalog.MODEL_FOLDER.path(artifact)
    return folder if folder.is_dir() else artifact


def describe_model_folder(path: Path, field: str = "bootstrap.model_path") -> dict:
    """A cheap identity of an external model folder: names, sizes and mtimes of its files.

    Hashing many GB of weights on every run would be slow; size+mtime changes whenever
    the weights are replaced, which is what the cache must notice.
    """
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{field}: {path} is not a model folder (no config.json) nor a .gguf file"
        )
    files = {
        p.relative_to(path).as_posix(): [p.stat().st_size, int(p.stat().st_mtime)]
        for p in sorted(path.rglob("*"))
        if p.is_file()
    }
    return {"path": str(path.resolve()), "files": files}


def load_tokenizer(artifact: Path):
    """The tokenizer of a model artifact (no weights loaded)."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir(artifact), local_files_only=True)


def model_source_key(path: Path, field: str = "bootstrap.model_path") -> str:
    """Identity of a user-supplied model (a folder or a GGUF file), for cache keys:
    replacing its weights re-runs the stages that start from it."""
    from rlmec_core.gguf_model import gguf_source, is_gguf_source

    identity = gguf_source(path) if is_gguf_source(path) else describe_model_folder(path, field)
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def resolve_model_source(
    path: Path, workspace: str | Path, field: str = "bootstrap.model_path"
) -> tuple[Path, dict[str, Any]]:
    """The HF folder to load for a user-supplied model and what lineage records of it: a
    folder as it is (its path, file sizes and times), a GGUF file dequantised into the
    workspace on first use (its name, size, sha256, architecture and tensor types)."""
    from rlmec_core.gguf_model import dequantized_folder, is_gguf_source

    if not is_gguf_source(path):
        return path, describe_model_folder(path, field)
    cache = Path(workspace) / DEQUANTIZED
    cache.mkdir(parents=True, exist_ok=True)
    with FileLock(str(cache / ".lock")):  # two runs never write one folder at once
        folder, source = dequantized_folder(path, cache)
    return folder, {"path": str(folder), "gguf": source}


class ModelSourceError(ValueError):
    """A model the config names that is not there; the message names the field and path."""


def check_model_source(path: Path, field: str) -> None:
    """Refuse, before anything runs, a model source that is missing or a GGUF file that
    transformers cannot load (its header only: milliseconds, no weights read)."""
    from rlmec_core.gguf_model import gguf_file, inspect_gguf, is_gguf_source

    if not path.exists():
        raise ModelSourceError(
            f"{field}: {path}: no such model file or folder "
            "(`rlmec fetch-model` fetches configs/smollm.yaml's SmolLM2)"
        )
    if is_gguf_source(path):
        inspect_gguf(gguf_file(path))
