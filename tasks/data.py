"""Stage `data`: the training problems and the held-out sets, as Parquet files."""

from __future__ import annotations

import hashlib

from rlmec_core.config import PipelineConfig
from rlmec_core.data.loaders import DataFormatError, load_eval_file
from rlmec_core.data.synthetic import synthetic_splits
from storage import catalog
from storage.store import hash_file
from tasks.context import RunContext
from tasks.stage import StageIO, StageResult, stage_task


def input_files_digest(config: PipelineConfig) -> str:
    """Hash of the data files the stage reads, so editing a file invalidates the cache."""
    cfg = config.data
    files = [f for f in [cfg.train_file, *cfg.eval_files] if f is not None]
    digest = hashlib.sha256()
    for item in files:
        path = config.resolve_path(item.path)
        if not path.is_file():
            raise DataFormatError(path, None, f"not a file (named by {item.name!r})")
        digest.update(f"{item.name}\0{hash_file(path)}\n".encode())
    return digest.hexdigest()[:16]


@stage_task("data")
def data_task(ctx: RunContext, io: StageIO) -> StageResult:
    cfg = ctx.config.data
    syn = cfg.synthetic
    splits = synthetic_splits(seed=ctx.config.run.seed, **syn.model_dump())
    if cfg.train_file is not None:
        train = load_eval_file(ctx.config.resolve_path(cfg.train_file.path), cfg.train_file.format)
        if cfg.train_file.limit:
            train = train.select(range(min(cfg.train_file.limit, len(train))))
        splits["train"] = train
    sources = [{"name": "synthetic", "seed": ctx.config.run.seed, **syn.model_dump()}]
    for item in [cfg.train_file, *cfg.eval_files]:
        if item is not None:
            path = ctx.config.resolve_path(item.path)
            sources.append({"name": item.name, "path": str(path), "sha256": hash_file(path)})
    metrics: dict[str, float] = {}
    for split, dataset in splits.items():
        catalog.PROBLEMS[split].write(io.out, dataset)
        metrics[f"n_{split}"] = len(dataset)
    for item in cfg.eval_files:
        dataset = load_eval_file(ctx.config.resolve_path(item.path), item.format)
        if item.limit:
            dataset = dataset.select(range(min(item.limit, len(dataset))))
        catalog.eval_set(item.name).write(io.out, dataset)
        metrics[f"n_eval_{item.name}"] = len(dataset)
    return StageResult(
        kind="dataset", metrics=metrics, summary={"splits": sorted(splits), "sources": sources}
    )
