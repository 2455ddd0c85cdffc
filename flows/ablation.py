"""The ablation of the method: every policy variant, several seeds, on shared upstream data."""

from __future__ import annotations

from prefect import flow

from flows.pipeline import reward_annotation
from flows.runner import pipeline_run
from flows.variants import commit_summary, train_and_evaluate
from rlmec_core.config import VARIANTS, load_config
from rlmec_core.eval_table import BASELINE_POLICY, ablation_markdown, ablation_summary


@flow(name="rlmec-ablation", persist_result=False)
def rlmec_ablation(
    config_path: str = "configs/tiny.yaml",
    workspace: str = "workspace",
    seeds: int = 3,
    variants: list[str] | None = None,
) -> dict:
    """Train every variant with ``seeds`` seeds on the same annotated data; summarise each
    variant's accuracy pooled over seeds with its 95% CI and paired differences."""
    config = load_config(config_path)
    variants = list(variants or VARIANTS)
    with pipeline_run(config, workspace, config_path) as stages:
        upstream = reward_annotation(stages, config)
        runs = [
            train_and_evaluate(stages, upstream, config, variant=variant, seed=seed)
            for variant in variants
            for seed in range(seeds)
        ]
        initial = {
            row["eval_set"]: row["outcomes"]
            for row in runs[0]["rows"]
            if row["policy"] == BASELINE_POLICY
        }
        results = [
            {
                "variant": run["variant"],
                "seed": run["seed"],
                "eval_set": row["eval_set"],
                "outcomes": row["outcomes"],
                "policy_artifact": run["policy_artifact"],
            }
            for run in runs
            for row in run["rows"]
            if row["policy"] == run["variant"]
        ]
        summary = ablation_summary(results, initial)
        markdown = ablation_markdown(summary)
        # Per variant and seed: the trained policy, its learning rate and its evaluation.
        study = {"variants": variants, "seeds": seeds}
        return commit_summary(
            stages, "ablation", {"summary": summary, "results": results}, markdown, runs, study
        )
