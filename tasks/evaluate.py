"""Stage `evaluate`: greedy accuracy of the initial and the trained policy, side by side."""

from __future__ import annotations

import json
from pathlib import Path

from rlmec_core.eval_table import evaluate_policies, results_table, summarize_results
from rlmec_core.generation_server import open_generator
from storage import catalog
from storage.atomic import write_json_atomic
from tasks.config_reads import stage_hash
from tasks.context import RunContext
from tasks.models import model_dir
from tasks.stage import StageIO, StageResult, stage_task


def eval_sets(data_artifact: Path, split: str = "test") -> dict[str, list[dict]]:
    """``test``: the synthetic test split and every held-out file the data stage loaded;
    ``dev``: the dev split alone (for choices, never for final numbers)."""
    if split == "dev":
        return {"synthetic_dev": list(catalog.PROBLEMS["dev"].read(data_artifact))}
    sets = {"synthetic_test": list(catalog.PROBLEMS["test"].read(data_artifact))}
    for name in catalog.eval_set_names(data_artifact):
        sets[name] = list(catalog.eval_set(name).read(data_artifact))
    return sets


def _evaluate_one(ctx: RunContext, io: StageIO, role: str, label: str, sets: dict) -> list[dict]:
    """One policy's rows, memoised by policy id: ablations share the initial policy's."""
    cfg = ctx.config.evaluate
    key = f"{stage_hash(ctx.config, 'evaluate')}-{io.code_fingerprint}"
    memo = (
        Path(ctx.workspace)
        / "scratch"
        / "evaluate-memo"
        / f"{label}-{io.parent_ids[role]}-{io.parent_ids['data']}-{key}.json"
    )
    if memo.is_file():
        return json.loads(memo.read_text(encoding="utf-8"))
    generation = ctx.config.generation
    with open_generator(generation, model_dir(io.inputs[role]), stage="evaluate") as policy:
        rows = evaluate_policies(
            {label: policy},
            sets,
            batch_size=cfg.batch_size,
            max_new_tokens=cfg.max_new_tokens,
            keep_predictions=True,
            progress=True,
            prompt_format=ctx.config.prompts.format,
        )
    write_json_atomic(memo, rows)
    return rows


@stage_task("evaluate")
def evaluate_task(ctx: RunContext, io: StageIO) -> StageResult:
    sets = eval_sets(io.inputs["data"], ctx.config.evaluate.split)
    # The trained policy's row is named by what its artifact says it was trained as.
    variant = catalog.TRAINING.read(io.inputs["policy"])["variant"]
    rows = [
        *_evaluate_one(ctx, io, "initial", "initial", sets),
        *_evaluate_one(ctx, io, "policy", variant, sets),
    ]
    summary = summarize_results(rows)
    catalog.RESULTS.write(io.out, summary)
    catalog.PREDICTIONS.write(io.out, rows)
    catalog.RESULTS_TABLE.write(io.out, results_table(summary).to_markdown())
    metrics = {f"{r['policy']}.{r['eval_set']}.accuracy": r["accuracy"] for r in summary}
    for r in summary:
        if "vs_baseline" in r:
            metrics[f"{r['policy']}.{r['eval_set']}.delta_vs_initial"] = r["vs_baseline"]["value"]
    brief = [{k: v for k, v in r.items() if k != "outcomes"} for r in summary]
    return StageResult(kind="evaluation", metrics=metrics, summary={"results": brief})
