"""Stage `train_policy`: the RLMEC objective (or an ablation variant) on the annotated data."""

from __future__ import annotations

from rlmec_core.modeling import load_policy
from rlmec_core.precision import torch_dtype
from rlmec_core.prompt_format import prompt_style
from rlmec_core.trainers.lora import lora_dtype, lora_summary
from rlmec_core.trainers.rlmec_trainer import gold_sft_rows, train_policy
from rlmec_core.trainers.sft import checkpoint_step
from storage import catalog
from tasks.context import RunContext
from tasks.launch import launched
from tasks.models import model_dir
from tasks.stage import StageIO, StageResult, stage_task
from tasks.stage_process import is_main_process


@stage_task("train_policy", register_as="rlmec-policy")
def train_policy_task(ctx: RunContext, io: StageIO) -> StageResult:
    cfg = ctx.config.train_policy
    return launched("train_policy", ctx, io, cfg.launcher, cfg.precision, _train_policy)


def _train_policy(ctx: RunContext, io: StageIO) -> StageResult:
    """The stage in this process (one of several under ``accelerate launch``)."""
    cfg = ctx.config.train_policy.resolved()  # the variant's own learning rate
    model, tokenizer = load_policy(
        model_dir(io.inputs["policy"]), dtype=lora_dtype(torch_dtype(cfg.precision), cfg.lora)
    )
    rows = catalog.RL_DATA.read(io.inputs["rl_data"])
    gold = None
    if cfg.variant == "gold_sft":  # the same problems' gold solutions
        problems = catalog.PROBLEMS["train"].read(io.inputs["data"])
        style = prompt_style(tokenizer, ctx.config.prompts.format)
        gold = gold_sft_rows(tokenizer, problems, rows["problem_id"], style)
    result = train_policy(model, tokenizer, rows, io.scratch / "checkpoints", cfg, gold=gold)
    if not is_main_process():  # rank 0 writes the artifact and reports the result
        return StageResult(kind="policy")
    model.save_pretrained(catalog.MODEL_FOLDER.path(io.out))
    tokenizer.save_pretrained(catalog.MODEL_FOLDER.path(io.out))
    series = {"train_loss": result.pop("loss_history", [])}
    for name, points in result.pop("term_histories", {}).items():
        series[name] = points
    # What was trained, inside the artifact. Only deterministic facts: timings and resume
    # points live in the manifest and MLflow, or a resumed run would change the id.
    facts = {
        k: result[k]
        for k in ("steps", "n_rows", "learning_rate", "epsilon", "imitation_coef", "rl_normalizer")
        if k in result
    }
    if cfg.lora is not None:
        facts["lora"] = cfg.lora.model_dump(mode="json")
    if cfg.launcher.kind != "local":
        facts["processes"] = cfg.launcher.num_processes
    catalog.TRAINING.write(io.out, {"variant": cfg.variant, "seed": cfg.seed, **facts})
    metrics = {
        k: v for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    metrics["resumed_from_step"] = float(checkpoint_step(result.get("resumed_from")))
    summary = {"variant": cfg.variant, **lora_summary(cfg.lora, io.parent_ids.get("policy", ""))}
    return StageResult(kind="policy", metrics=metrics, series=series, summary=summary)
