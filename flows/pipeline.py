"""The RLMEC pipeline as a Prefect flow; it reads like the method's diagram.

data → bootstrap (policy π_ref) → collect (samples y) → distill (teacher rewrites ŷ)
     → train_grm → annotate (token rewards) → train_policy → evaluate
"""

from __future__ import annotations

from prefect import flow

from flows.publish import promote_if_best, publish_evaluation
from flows.runner import StageRunner, pipeline_run
from rlmec_core.config import PipelineConfig, load_config
from tasks.annotate import annotate_task
from tasks.bootstrap import bootstrap_task, policy_source_key
from tasks.collect import collect_task
from tasks.context import RunContext
from tasks.data import data_task, input_files_digest
from tasks.distill import distill_task
from tasks.evaluate import evaluate_task
from tasks.train_grm import grm_source_key, train_grm_task
from tasks.train_policy import train_policy_task


@flow(name="rlmec-pipeline", persist_result=False)
def rlmec_pipeline(
    config_path: str = "configs/tiny.yaml",
    workspace: str = "workspace",
    until: str | None = None,
    force: str | None = None,
) -> list[dict]:
    config = load_config(config_path)
    with pipeline_run(config, workspace, config_path, until=until, force=force) as stages:
        upstream = stages_through_annotate(stages, config)
        refs = train_evaluate_and_promote(stages, upstream)
        publish_evaluation(stages.ctx, refs["evaluation"])
        return [vars(report) for report in stages.reports]


def stages_through_annotate(
    stages: StageRunner,
    config: PipelineConfig,
    ctx: RunContext | None = None,
    label: str = "",
) -> dict[str, dict | None]:
    """Stages 1–4, data through annotate: everything every policy variant shares (``ctx``:
    another config's context, e.g. another bootstrap seed's; ``label`` tells its report
    lines apart)."""

    def run(task, parents, extra_key="") -> dict | None:
        return stages.run(task, parents, extra_key, ctx=ctx, label=f"{task.name}{label}")

    data = run(data_task, {}, extra_key=input_files_digest(config))
    policy = run(bootstrap_task, {"data": data}, extra_key=policy_source_key(config))
    samples = run(collect_task, {"policy": policy, "data": data})
    rewrites = run(distill_task, {"samples": samples, "policy": policy})
    grm = run(
        train_grm_task, {"rewrites": rewrites, "policy": policy}, extra_key=grm_source_key(config)
    )
    rl_data = run(annotate_task, {"rewrites": rewrites, "grm": grm, "policy": policy})
    return {"data": data, "policy": policy, "rl_data": rl_data}


def train_evaluate_and_promote(
    stages: StageRunner,
    upstream: dict[str, dict | None],
    ctx: RunContext | None = None,
    label: str = "",
) -> dict[str, dict | None]:
    """Stages 5–6 for one variant: train the policy, evaluate it beside the initial one,
    and move the registry's ``best`` policy alias to it if it is the best evaluated yet.
    Returns the trained policy's and the evaluation's artifact references."""
    trained = stages.run(
        train_policy_task,
        {"rl_data": upstream["rl_data"], "policy": upstream["policy"], "data": upstream["data"]},
        ctx=ctx,
        label=f"train_policy{label}",
    )
    evaluation = stages.run(
        evaluate_task,
        {"data": upstream["data"], "initial": upstream["policy"], "policy": trained},
        ctx=ctx,
        label=f"evaluate{label}",
    )
    promote_if_best(ctx or stages.ctx, train_policy_task.registered_model, trained, evaluation)
    return {"policy": trained, "evaluation": evaluation}
