"""Stage `evaluate`: greedy accuracy of the initial and the trained policy, side by side."""

from __future__ import annotations

import json
from pathlib import Path

from rlmec_core.data.io import load_parquet
from rlmec_core.eval_table import evaluate_policies, results_table, summarize_results
from rlmec_core.generation_server import open_generator
from storage.atomic import write_bytes_atomic, write_json_atomic
from tasks.context import RunContext
from tasks.models import model_dir
from tasks.stage import StageIO, StageResult, stage_task


def eval_sets(data_artifact: Path, split: str = "test") -> dict[str, list[dict]]:
    """``test``: the synthetic test split and every held-out file the data stage loaded;
    ``dev``: the dev split alone (for choices, never for final numbers)."""
    if split == "dev":
        return {"synthetic_dev": list(load_parquet(data_artifact / "dev.parquet"))}
    sets = {"synthetic_test": list(load_parquet(data_artifact / "test.parquet"))}
    for path in sorted((data_artifact / "eval").glob("*.parquet")):
        sets[path.stem] = list(load_parquet(path))
    return sets


def _evaluate_one(ctx: RunContext, io: StageIO, role: str, label: str, sets: dict) -> list[dict]:
    """One policy's rows, memoised by policy id: ablations share the initial policy's."""
    cfg = ctx.config.evaluate
    key = f"{ctx.config.stage_hash('evaluate')}-{io.code_fingerprint}"
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
    variant = ctx.config.train_policy.variant
    rows = [
        *_evaluate_one(ctx, io, "initial", "initial", sets),
        *_evaluate_one(ctx, io, "policy", variant, sets),
    ]
    summary = summarize_results(rows)
    write_json_atomic(io.out / "results.json", summary)
    write_json_atomic(io.out / "predictions.json", rows)
    markdown = results_table(summary).to_markdown()
    write_bytes_atomic(io.out / "results.md", markdown.encode("utf-8"))
    metrics = {f"{r['policy']}.{r['eval_set']}.accuracy": r["accuracy"] for r in summary}
    for r in summary:
        if "vs_baseline" in r:
            metrics[f"{r['policy']}.{r['eval_set']}.delta_vs_initial"] = r["vs_baseline"]["value"]
    brief = [{k: v for k, v in r.items() if k != "outcomes"} for r in summary]
    return StageResult(kind="evaluation", metrics=metrics, summary={"results": brief})
