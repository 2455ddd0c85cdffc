"""Datasets on disk as Parquet: byte-stable for identical rows, so artifact ids are too."""

from __future__ import annotations

from pathlib import Path

from datasets import Dataset


def save_parquet(dataset: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    dataset.to_parquet(str(path))
    return path


def load_parquet(path: Path) -> Dataset:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: dataset file not found")
    # keep_in_memory: these are small and this avoids writing HF cache files elsewhere.
    return Dataset.from_parquet(str(path), keep_in_memory=True)
