"""Stage `bootstrap`: the initial policy π_ref — the user's model fine-tuned on the gold
solutions (or kept as it is with ``epochs: 0``), or a tiny model trained here."""

from __future__ import annotations

import shutil

from rlmec_core.bootstrap import bootstrap_policy
from rlmec_core.config import PipelineConfig
from rlmec_core.trainers.lora import lora_summary
from storage import catalog
from tasks.context import RunContext
from tasks.models import model_source_key, resolve_model_source
from tasks.stage import StageIO, StageResult, stage_task


def policy_source_key(config: PipelineConfig) -> str:
    """Identity of a user-supplied model folder, so replacing its weights re-runs downstream."""
    if config.bootstrap.model_path is None:
        return ""
    return model_source_key(config.resolve_path(config.bootstrap.model_path))


@stage_task("bootstrap")
def bootstrap_task(ctx: RunContext, io: StageIO) -> StageResult:
    cfg = ctx.config.bootstrap
    folder = None
    source: dict = {}
    if cfg.model_path is not None:
        path, folder = resolve_model_source(ctx.config.resolve_path(cfg.model_path), ctx.workspace)
        source = {"model_source": folder["gguf"]} if "gguf" in folder else {}
        if cfg.epochs == 0 and source:
            # A dequantised GGUF lives in scratch: the artifact keeps its own copy.
            shutil.copytree(path, catalog.MODEL_FOLDER.path(io.out))
            return StageResult(kind="policy", summary={"model_path": str(path), **source})
        if cfg.epochs == 0:
            # Nothing to train: record which folder is the policy, without copying weights.
            catalog.MODEL_REF.write(io.out, folder)
            return StageResult(
                kind=catalog.EXTERNAL_MODEL_KIND, summary={"model_path": folder["path"]}
            )
    splits = {split: catalog.PROBLEMS[split].read(io.inputs["data"]) for split in ("train", "dev")}
    result = bootstrap_policy(
        splits,
        catalog.MODEL_FOLDER.path(io.out),
        cfg,
        seed=ctx.config.run.seed if cfg.seed is None else cfg.seed,
        checkpoint_dir=io.scratch / "checkpoints",
        model_path=folder["path"] if folder else None,
        prompt_format=ctx.config.prompts.format,
    )
    history = result.pop("loss_history", [])
    series = {"train_loss": history}
    if "dev_curve" in result:  # early stopping on dev: the curve, one point per epoch
        series["dev_accuracy"] = [(step, value) for step, _, value in result.pop("dev_curve")]
    summary = {"prompt_format": result.pop("prompt_format"), **source}
    if folder:
        summary["model_path"] = folder["path"]
    summary.update(
        lora_summary(cfg.lora, folder["path"] if folder else "tiny-llama (from scratch)")
    )
    return StageResult(kind="policy", metrics=result, series=series, summary=summary)
