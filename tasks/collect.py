"""Stage `collect`: k sampled solutions per training problem, labelled by answer."""

from __future__ import annotations

from rlmec_core.collect import collect_samples
from rlmec_core.generation_server import open_generator
from rlmec_core.prompt_format import prompt_style
from storage import catalog
from tasks.context import RunContext
from tasks.models import model_dir
from tasks.stage import StageIO, StageResult, stage_task


@stage_task("collect")
def collect_task(ctx: RunContext, io: StageIO) -> StageResult:
    cfg = ctx.config.collect
    problems = catalog.PROBLEMS["train"].read(io.inputs["data"])
    if cfg.max_problems is not None:
        problems = problems.select(range(min(cfg.max_problems, len(problems))))
    with open_generator(ctx.config.generation, model_dir(io.inputs["policy"])) as policy:
        samples, metrics = collect_samples(
            *policy,
            problems,
            cfg,
            seed=ctx.config.run.seed,
            style=prompt_style(policy[1], ctx.config.prompts.format),
        )
    catalog.SAMPLES.write(io.out, samples)
    return StageResult(kind="samples", metrics=metrics, summary={"n_samples": len(samples)})
