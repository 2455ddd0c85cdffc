"""Stage `bootstrap`: the initial policy π_ref — a tiny model trained here, or the user's."""

from __future__ import annotations

import hashlib
import json

from rlmec_core.bootstrap import bootstrap_policy
from rlmec_core.config import PipelineConfig
from rlmec_core.data.io import load_parquet
from storage.atomic import write_json_atomic
from tasks.context import RunContext
from tasks.models import MODEL_REF, describe_model_folder
from tasks.stage import StageIO, StageResult, stage_task

EXTERNAL_KIND = "model_ref"


def policy_source_key(config: PipelineConfig) -> str:
    """Identity of a user-supplied model folder, so replacing its weights re-runs downstream."""
    if config.bootstrap.model_path is None:
        return ""
    folder = describe_model_folder(config.resolve_path(config.bootstrap.model_path))
    return hashlib.sha256(json.dumps(folder, sort_keys=True).encode()).hexdigest()[:16]


@stage_task("bootstrap")
def bootstrap_task(ctx: RunContext, io: StageIO) -> StageResult:
    cfg = ctx.config.bootstrap
    if cfg.model_path is not None:
        # Nothing to train: record which folder is the policy, without copying weights.
        folder = describe_model_folder(ctx.config.resolve_path(cfg.model_path))
        write_json_atomic(io.out / MODEL_REF, folder)
        return StageResult(kind=EXTERNAL_KIND, summary={"model_path": folder["path"]})
    splits = {
        split: load_parquet(io.inputs["data"] / f"{split}.parquet") for split in ("train", "dev")
    }
    result = bootstrap_policy(
        splits,
        io.out / "model",
        cfg,
        seed=ctx.config.run.seed,
        checkpoint_dir=io.scratch / "checkpoints",
    )
    history = result.pop("loss_history", [])
    return StageResult(kind="policy", metrics=result, series={"train_loss": history})
