"""`rlmec tune`: each variant's learning rate, chosen from a small grid on the dev split.

Every variant gets the same grid, seed, data and steps; the choice is made on dev and never
on test, and the result is a config line to paste (``train_policy.variant_learning_rates``).
"""

from __future__ import annotations

from prefect import flow

from flows.pipeline import stages_through_annotate
from flows.runner import pipeline_run
from flows.variants import commit_summary, train_and_evaluate
from rlmec_core.config import DEFAULT_TUNING_GRID, VARIANTS, load_config
from rlmec_core.eval_table import BASELINE_POLICY, tuning_summary, tuning_table


@flow(name="rlmec-tuning", persist_result=False)
def rlmec_tuning(
    config_path: str = "configs/tiny.yaml",
    workspace: str = "workspace",
    learning_rates: list[float] | None = None,
    variants: list[str] | None = None,
    seed: int = 0,
) -> dict:
    """Train every variant at every learning rate of the grid (one seed), evaluate on dev."""
    config = load_config(config_path)
    grid = sorted(set(learning_rates or DEFAULT_TUNING_GRID))
    variants = list(variants or VARIANTS)
    with pipeline_run(config, workspace, config_path) as stages:
        upstream = stages_through_annotate(stages, config)
        runs = [
            train_and_evaluate(
                stages, upstream, config, variant=v, seed=seed, learning_rate=lr, split="dev"
            )
            for v in variants
            for lr in grid
        ]
        initial = next(r for r in runs[0]["rows"] if r["policy"] == BASELINE_POLICY)
        results = [
            {
                "variant": run["variant"],
                "learning_rate": run["learning_rate"],
                "outcomes": next(r for r in run["rows"] if r["policy"] == run["variant"])[
                    "outcomes"
                ],
            }
            for run in runs
        ]
        summary = tuning_summary(results, initial["outcomes"])
        chosen = {s["variant"]: s["learning_rate"] for s in summary if s["chosen"]}
        rates = ", ".join(f"{variant}: {lr:g}" for variant, lr in chosen.items())
        snippet = f"train_policy:\n  variant_learning_rates: {{{rates}}}\n"
        markdown = tuning_table(summary).to_markdown() + "\n```yaml\n" + snippet + "```\n"
        study = {"variants": variants, "learning_rates": grid, "seed": seed}
        return commit_summary(
            stages, "tuning", {"summary": summary, "chosen": chosen}, markdown, runs, study
        )
