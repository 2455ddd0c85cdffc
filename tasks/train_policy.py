"""Stage `train_policy`: the RLMEC objective (or an ablation variant) on the annotated data."""

from __future__ import annotations

from rlmec_core.data.io import load_parquet
from rlmec_core.modeling import load_policy
from rlmec_core.trainers.rlmec_trainer import gold_sft_rows, train_policy
from rlmec_core.trainers.sft import checkpoint_step
from storage.atomic import write_json_atomic
from tasks.context import RunContext
from tasks.models import model_dir
from tasks.stage import StageIO, StageResult, stage_task


@stage_task("train_policy", register_as="rlmec-policy")
def train_policy_task(ctx: RunContext, io: StageIO) -> StageResult:
    cfg = ctx.config.train_policy
    model, tokenizer = load_policy(model_dir(io.inputs["policy"]))
    rows = load_parquet(io.inputs["rl_data"] / "rl_data.parquet")
    gold = None
    if cfg.variant == "gold_sft":  # the same problems' gold solutions
        problems = load_parquet(io.inputs["data"] / "train.parquet")
        gold = gold_sft_rows(tokenizer, problems, rows["problem_id"])
    result = train_policy(model, tokenizer, rows, io.scratch / "checkpoints", cfg, gold=gold)
    model.save_pretrained(io.out / "model")
    tokenizer.save_pretrained(io.out / "model")
    series = {"train_loss": result.pop("loss_history", [])}
    for name, points in result.pop("term_histories", {}).items():
        series[name] = points
    # What was trained, inside the artifact. Only deterministic facts: timings and resume
    # points live in the manifest and MLflow, or a resumed run would change the id.
    facts = {
        k: result[k]
        for k in ("steps", "n_rows", "learning_rate", "epsilon", "imitation_coef")
        if k in result
    }
    write_json_atomic(io.out / "training.json", {"variant": cfg.variant, "seed": cfg.seed, **facts})
    metrics = {
        k: v for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    metrics["resumed_from_step"] = float(checkpoint_step(result.get("resumed_from")))
    return StageResult(
        kind="policy", metrics=metrics, series=series, summary={"variant": cfg.variant}
    )
