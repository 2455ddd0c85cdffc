"""Where a policy artifact's weights are: in the artifact, or in a user's model folder."""

from __future__ import annotations

import json
from pathlib import Path

MODEL_REF = "model_ref.json"


def model_dir(artifact: Path) -> Path:
    """The folder to load with ``from_pretrained`` for a model artifact."""
    ref = artifact / MODEL_REF
    if ref.is_file():
        path = Path(json.loads(ref.read_text(encoding="utf-8"))["path"])
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"{ref}: the referenced model folder {path} is gone or has no config.json"
            )
        return path
    return artifact / "model" if (artifact / "model").is_dir() else artifact


def describe_model_folder(path: Path) -> dict:
    """A cheap identity of an external model folder: names, sizes and mtimes of its files.

    Hashing many GB of weights on every run would be slow; size+mtime changes whenever
    the weights are replaced, which is what the cache must notice.
    """
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"bootstrap.model_path: {path} is not a model folder (no config.json)"
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
