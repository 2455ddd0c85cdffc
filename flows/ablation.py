"""The ablation of the method: every policy variant, several seeds, on shared upstream data."""

from __future__ import annotations

import dataclasses
import json

from mlflow.tracking import MlflowClient
from prefect import flow
from prefect.runtime import flow_run

from flows.pipeline import policy_and_evaluation, reward_annotation
from flows.runner import pipeline_run
from rlmec_core.config import load_config
from rlmec_core.eval_table import ablation_markdown, ablation_summary
from storage.atomic import write_bytes_atomic, write_json_atomic
from storage.manifest import Provenance

VARIANTS = ("rlmec", "no_imitation", "no_token_reward", "rft", "sft")


@flow(name="rlmec-ablation", persist_result=False)
def rlmec_ablation(
    config_path: str = "configs/tiny.yaml",
    workspace: str = "workspace",
    seeds: int = 3,
    variants: list[str] | None = None,
) -> dict:
    """Train every variant with ``seeds`` seeds and summarise accuracy as mean ± std."""
    config = load_config(config_path)
    variants = list(variants or VARIANTS)
    with pipeline_run(config, workspace, config_path) as stages:
        upstream = reward_annotation(stages, config)
        results, evaluations = [], []
        for variant in variants:
            for seed in range(seeds):
                section = config.train_policy.model_copy(update={"variant": variant, "seed": seed})
                variant_config = config.model_copy(update={"train_policy": section})
                ctx = dataclasses.replace(stages.ctx, config=variant_config)
                evaluation = policy_and_evaluation(
                    stages, upstream, ctx=ctx, label=f"[{variant},seed={seed}]"
                )
                evaluations.append(evaluation["id"])
                table = json.loads(
                    (stages.ctx.store.path(evaluation["id"]) / "results.json").read_text()
                )
                results.extend(
                    {"variant": variant, "seed": seed, **row}
                    for row in table
                    if row["policy"] == variant
                )
        summary = ablation_summary(results)
        markdown = ablation_markdown(summary)
        store = stages.ctx.store
        with store.staging() as out:
            write_json_atomic(out / "ablation.json", {"summary": summary, "results": results})
            write_bytes_atomic(out / "ablation.md", markdown.encode("utf-8"))
            manifest = store.commit(
                out,
                Provenance(
                    stage="ablate",
                    kind="ablation",
                    parents=tuple(dict.fromkeys(evaluations)),
                    config_hash=config.config_hash(),
                    mlflow_run_id=stages.ctx.mlflow_parent_run_id,
                    prefect_flow_run_id=str(flow_run.id) if flow_run.id else None,
                    extra={"variants": variants, "seeds": seeds},
                ),
            )
        client = MlflowClient(stages.ctx.mlflow_tracking_uri)
        client.log_text(stages.ctx.mlflow_parent_run_id, markdown, "ablation.md")
        client.set_tag(stages.ctx.mlflow_parent_run_id, "rlmec.ablation_artifact", manifest.id)
        return {
            "artifact": manifest.id,
            "markdown": markdown,
            "summary": summary,
            "stages": [vars(r) for r in stages.reports],
        }
