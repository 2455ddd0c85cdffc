"""The ablation of the method: every policy variant, several seeds, on shared upstream data."""

from __future__ import annotations

import dataclasses

from prefect import flow

from flows.pipeline import stages_through_annotate
from flows.runner import pipeline_run
from flows.variants import commit_summary, train_and_evaluate
from rlmec_core.config import VARIANTS, PipelineConfig, load_config
from rlmec_core.eval_table import BASELINE_POLICY, ablation_markdown, ablation_summary


@flow(name="rlmec-ablation", persist_result=False)
def rlmec_ablation(
    config_path: str = "configs/tiny.yaml",
    workspace: str = "workspace",
    seeds: int = 3,
    variants: list[str] | None = None,
    bootstrap_seeds: int = 1,
) -> dict:
    """Train every variant with ``seeds`` seeds on the same annotated data; summarise each
    variant's accuracy pooled over seeds with its 95% CI and paired differences.

    With ``bootstrap_seeds`` > 1 the initial policy itself is trained from that many seeds
    (bootstrap's own seed; the data and its splits stay the same), each with its own
    collected samples, GRM and annotation, and every variant and seed is trained on each:
    the table pools over bootstrap seeds too, each policy paired with its own initial one.
    """
    config = load_config(config_path)
    variants = list(variants or VARIANTS)
    with pipeline_run(config, workspace, config_path) as stages:
        runs, initial = [], {}
        for boot, boot_config in enumerate(bootstrap_configs(config, bootstrap_seeds)):
            tag = f"[bootstrap={boot}]" if boot else ""
            ctx = dataclasses.replace(stages.ctx, config=boot_config)
            upstream = stages_through_annotate(stages, boot_config, ctx=ctx, label=tag)
            trained = [
                train_and_evaluate(
                    stages, upstream, boot_config, variant=variant, seed=seed,
                    bootstrap_seed=boot if bootstrap_seeds > 1 else None,
                )
                for variant in variants
                for seed in range(seeds)
            ]  # fmt: skip
            for row in trained[0]["rows"]:
                if row["policy"] == BASELINE_POLICY:
                    initial.setdefault(row["eval_set"], []).append(row["outcomes"])
            runs += trained
        results = [
            {
                "variant": run["variant"],
                "seed": run["seed"],
                **({"bootstrap_seed": run["bootstrap_seed"]} if "bootstrap_seed" in run else {}),
                "eval_set": row["eval_set"],
                "outcomes": row["outcomes"],
                "policy_artifact": run["policy_artifact"],
            }
            for run in runs
            for row in run["rows"]
            if row["policy"] == run["variant"]
        ]
        # One row of initial outcomes per bootstrap seed (one row: the one-bootstrap table).
        summary = ablation_summary(results, initial)
        markdown = ablation_markdown(summary)
        # Per variant and seed: the trained policy, its learning rate and its evaluation.
        study = {"variants": variants, "seeds": seeds, "bootstrap_seeds": bootstrap_seeds}
        return commit_summary(
            stages, "ablation", {"summary": summary, "results": results}, markdown, runs, study
        )


def bootstrap_configs(config: PipelineConfig, count: int) -> list[PipelineConfig]:
    """The config once per bootstrap seed: the first as it is (its upstream is the one
    `rlmec run` caches), the others with ``bootstrap.seed`` run.seed + 1, + 2, ..."""
    if count < 1:
        raise ValueError(f"bootstrap_seeds must be at least 1, got {count}")
    if count > 1 and config.bootstrap.epochs == 0:
        raise ValueError(
            "bootstrap_seeds > 1 needs bootstrap to train (bootstrap.epochs is 0: every "
            "seed would give the same initial policy)"
        )
    first = config.run.seed if config.bootstrap.seed is None else config.bootstrap.seed
    return [config] + [
        config.model_copy(
            update={"bootstrap": config.bootstrap.model_copy(update={"seed": first + i})}
        )
        for i in range(1, count)
    ]
