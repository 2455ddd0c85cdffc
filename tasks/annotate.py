"""Stage `annotate`: GRM rewrites, token rewards, reference log-probs, imitation weights."""

from __future__ import annotations

from rlmec_core.annotate import annotate_samples, likelihood_error_steps, rows_for_grm
from rlmec_core.generation_server import open_generator
from rlmec_core.grm import grm_rewrites
from rlmec_core.modeling import load_policy
from rlmec_core.precision import inference_device, torch_dtype
from rlmec_core.prompt_format import prompt_style
from rlmec_core.verification import Verifier
from storage import catalog
from tasks.context import RunContext
from tasks.models import model_dir
from tasks.stage import StageIO, StageResult, stage_task


@stage_task("annotate")
def annotate_task(ctx: RunContext, io: StageIO) -> StageResult:
    cfg = ctx.config.annotate
    error_step = ctx.config.train_grm.error_step  # how the GRM names the first error step
    samples = catalog.DISTILLED.read(io.inputs["rewrites"])
    # Rewards and reference log-probs: always the exact HF forward passes.
    # Both models in the inference dtype (annotate.precision), on the GPU when there is one.
    loading = {"dtype": torch_dtype(cfg.precision), "device": inference_device()}
    served_rewrites = ctx.config.generation.backend != "hf"
    local = None  # this process's GRM; with a server and the generated verdict, loaded after it
    if not served_rewrites or error_step == "likelihood":
        local = load_policy(model_dir(io.inputs["grm"]), **loading)
    verdicts = None  # with a generation server, the GRM's rewrites come from there
    scored = {}  # the likelihood pass's log-probs: the incorrect rows' token rewards too
    if served_rewrites:
        incorrect = rows_for_grm(samples)
        steps = None
        if error_step == "likelihood":  # read off this process's forward pass
            grm, tokenizer = local
            style = prompt_style(tokenizer, ctx.config.prompts.format)
            steps, logprobs = likelihood_error_steps(
                grm, tokenizer, incorrect, batch_size=cfg.batch_size, style=style
            )
            scored = {row["sample_id"]: lp for row, lp in zip(incorrect, logprobs, strict=True)}
        grm_dir = model_dir(io.inputs["grm"])
        with open_generator(ctx.config.generation, grm_dir, stage="annotate") as served:
            verdicts = grm_rewrites(
                *served,
                incorrect,
                batch_size=cfg.batch_size,
                max_new_tokens=cfg.max_new_tokens,
                style=prompt_style(served[1], ctx.config.prompts.format),
                error_steps=steps,
            )
    grm, tokenizer = local or load_policy(model_dir(io.inputs["grm"]), **loading)
    style = prompt_style(tokenizer, ctx.config.prompts.format)
    reference, _ = load_policy(model_dir(io.inputs["policy"]), **loading)
    rows, metrics = annotate_samples(
        samples,
        grm,
        reference,
        tokenizer,
        batch_size=cfg.batch_size,
        max_new_tokens=cfg.max_new_tokens,
        verifier=Verifier(ctx.config.verification),
        verdicts=verdicts,
        scored=scored,
        style=style,
        error_step=error_step,
    )
    if len(rows) == 0:
        raise ValueError("annotate kept no sample: every incorrect sample's GRM rewrite missed")
    catalog.RL_DATA.write(io.out, rows)
    # Reward quality, stated in the summary as well as logged: do rewards separate right
    # from wrong, and does the most penalised token sit in the teacher's first error step?
    quality = {
        k: metrics.get(k)
        for k in (
            "mean_reward_correct_token",
            "mean_reward_incorrect_token",
            "reward_quality",
            "reward_quality_n",
        )
    }
    return StageResult(
        kind="rl_data", metrics=metrics, summary={"n_rows": len(rows), "reward_quality": quality}
    )
