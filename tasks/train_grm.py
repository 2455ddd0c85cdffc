"""Stage `train_grm`: SFT of the generative reward model, initialised from the policy."""

from __future__ import annotations

import random
from pathlib import Path

from datasets import Dataset

from rlmec_core.annotate import likelihood_error_steps
from rlmec_core.config import PipelineConfig
from rlmec_core.data.schema import DISTILLED_FEATURES
from rlmec_core.generation_server import open_generator, require_launch
from rlmec_core.grm import grm_metrics, grm_rewrites
from rlmec_core.grm_data import build_grm_examples
from rlmec_core.modeling import load_policy, load_tokenizer_folder, same_vocabulary
from rlmec_core.precision import torch_dtype
from rlmec_core.prompt_format import prompt_style
from rlmec_core.trainers.lora import lora_dtype, lora_summary
from rlmec_core.trainers.sft import checkpoint_step, train_sft
from rlmec_core.verification import Verifier
from storage import catalog
from tasks.context import RunContext
from tasks.launch import launched
from tasks.models import model_dir, model_source_key, resolve_model_source
from tasks.stage import StageIO, StageResult, stage_task
from tasks.stage_process import is_main_process

INIT_FROM = "train_grm.init_from"


def heldout_split(rows: list[dict], fraction: float, seed: int) -> tuple[list[dict], list[dict]]:
    """Hold out whole problems, so no held-out problem is seen in GRM training."""
    problems = sorted({r["problem_id"] for r in rows})
    random.Random(seed).shuffle(problems)
    held = set(problems[: round(len(problems) * fraction)])
    return [r for r in rows if r["problem_id"] not in held], [
        r for r in rows if r["problem_id"] in held
    ]


def distilled_dataset(rows: list[dict]) -> Dataset:
    """Distilled rows as a Dataset; column-wise, so an empty hold-out still has its schema."""
    columns = {name: [row[name] for row in rows] for name in DISTILLED_FEATURES}
    return Dataset.from_dict(columns, features=DISTILLED_FEATURES)


def grm_source_key(config: PipelineConfig) -> str:
    """Identity of ``train_grm.init_from`` for the cache key ("" when the GRM starts from
    the policy, an artifact whose id the key has already)."""
    init_from = config.train_grm.init_from
    return "" if init_from is None else model_source_key(config.resolve_path(init_from), INIT_FROM)


def grm_start(ctx: RunContext, io: StageIO) -> tuple[Path, dict]:
    """The folder the GRM starts from and what lineage records of it: the initial policy,
    or ``train_grm.init_from`` when its tokenizer gives the policy's token ids."""
    policy = model_dir(io.inputs["policy"])
    init_from = ctx.config.train_grm.init_from
    if init_from is None:
        return policy, {}
    folder, record = resolve_model_source(
        ctx.config.resolve_path(init_from), ctx.workspace, INIT_FROM
    )
    if not same_vocabulary(load_tokenizer_folder(folder), load_tokenizer_folder(policy)):
        raise ValueError(
            f"{INIT_FROM}: {init_from} has another tokenizer than the policy; the GRM scores "
            "the policy's token ids, so it must share the policy's vocabulary"
        )
    return folder, {"init_from": record.get("gguf", {"path": record["path"]})}


@stage_task("train_grm", register_as="rlmec-grm")
def train_grm_task(ctx: RunContext, io: StageIO) -> StageResult:
    cfg = ctx.config.train_grm
    return launched("train_grm", ctx, io, cfg.launcher, cfg.precision, _train_grm)


def _train_grm(ctx: RunContext, io: StageIO) -> StageResult:
    """The stage in this process (one of several under ``accelerate launch``: rank 0 writes
    the artifact and evaluates the GRM)."""
    cfg = ctx.config.train_grm
    distilled = list(catalog.DISTILLED.read(io.inputs["rewrites"]))
    train_rows, heldout = heldout_split(distilled, cfg.heldout_fraction, ctx.config.run.seed)
    if heldout:  # before training: the held-out evaluation generates with the new GRM
        require_launch(ctx.config.generation, "train_grm")
    start, source = grm_start(ctx, io)
    model, tokenizer = load_policy(start, dtype=lora_dtype(torch_dtype(cfg.precision), cfg.lora))
    style = prompt_style(tokenizer, ctx.config.prompts.format)
    examples = build_grm_examples(train_rows, seed=ctx.config.run.seed, style=style)
    if len(examples) == 0:
        raise ValueError(
            f"no GRM training examples: of {len(train_rows)} training samples none has a kept "
            "teacher rewrite (see the distill stage's metrics); collect more samples or use a "
            "teacher that handles this data"
        )
    if is_main_process():
        # Saved exactly as trained on and evaluated on, so the artifact states the GRM's data.
        catalog.GRM_TRAIN.write(io.out, examples)
        catalog.GRM_HELDOUT.write(io.out, distilled_dataset(heldout))
    result = train_sft(
        model,
        tokenizer,
        [{"prompt": e["prompt"], "response": e["response"]} for e in examples],
        io.scratch / "checkpoints",
        cfg,
        seed=ctx.config.run.seed,
        eos_id=style.end_id,  # None (plain): the tokenizer's EOS
    )
    if not is_main_process():
        return StageResult(kind="grm")
    model.save_pretrained(catalog.MODEL_FOLDER.path(io.out))
    tokenizer.save_pretrained(catalog.MODEL_FOLDER.path(io.out))
    history = result.pop("loss_history", [])
    metrics = {
        k: v for k, v in result.items() if isinstance(v, int | float) and not isinstance(v, bool)
    }
    metrics.update(
        n_examples=float(len(examples)),
        n_heldout=float(len(heldout)),
        resumed_from_step=float(checkpoint_step(result.get("resumed_from"))),
    )
    kinds = examples["kind"]
    metrics.update(
        {f"grm_examples_{k}": float(kinds.count(k)) for k in ("error_step", "rewrite", "identity")}
    )
    if heldout:  # the GRM's quality on problems it never saw, as annotate will use it
        steps = None
        if cfg.error_step == "likelihood":
            steps, _ = likelihood_error_steps(
                model, tokenizer, heldout, batch_size=cfg.eval_batch_size, style=style
            )
        loaded = (model, tokenizer)
        with open_generator(
            ctx.config.generation, catalog.MODEL_FOLDER.path(io.out), loaded=loaded
        ) as grm:
            verdicts = grm_rewrites(
                *grm,
                heldout,
                batch_size=cfg.eval_batch_size,
                max_new_tokens=cfg.max_new_tokens,
                style=style,
                error_steps=steps,
            )
        quality = grm_metrics(verdicts, heldout, Verifier(ctx.config.verification))
        metrics.update({f"heldout_{k}": v for k, v in quality.items()})
    summary = {
        "prompt_format": style.name,
        **lora_summary(cfg.lora, str(start) if cfg.init_from else io.parent_ids.get("policy", "")),
        **source,
    }
    return StageResult(kind="grm", metrics=metrics, series={"train_loss": history}, summary=summary)
