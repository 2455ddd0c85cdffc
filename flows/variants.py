"""Training several policies on one run's shared upstream data: what `rlmec ablate` and
`rlmec tune` both do, once per variant, seed or learning rate."""

from __future__ import annotations

import dataclasses
from typing import Any

from mlflow.tracking import MlflowClient
from prefect.runtime import flow_run

from flows.pipeline import train_evaluate_and_promote
from flows.publish import publish_table
from flows.runner import StageRunner
from rlmec_core.config import PipelineConfig
from storage import catalog
from storage.manifest import Provenance


def train_and_evaluate(
    stages: StageRunner,
    upstream: dict[str, dict | None],
    config: PipelineConfig,
    *,
    variant: str,
    seed: int,
    learning_rate: float | None = None,
    split: str = "test",
    bootstrap_seed: int | None = None,
) -> dict[str, Any]:
    """Train ``variant`` (at its configured learning rate, or ``learning_rate``) with
    ``seed``, evaluate it on ``split``; its artifacts and evaluation rows. ``bootstrap_seed``
    (the index of the initial policy ``upstream`` holds, when an ablation has several)
    labels its report lines and its result."""
    section = config.train_policy.for_variant(variant, seed)
    label = f"[{variant},seed={seed}"
    if bootstrap_seed is not None:
        label += f",bootstrap={bootstrap_seed}"
    if learning_rate is not None:
        section = section.model_copy(update={"learning_rate": learning_rate})
        label += f",lr={learning_rate:g}"
    evaluate = config.evaluate.model_copy(update={"split": split})
    variant_config = config.model_copy(update={"train_policy": section, "evaluate": evaluate})
    ctx = dataclasses.replace(stages.ctx, config=variant_config)
    refs = train_evaluate_and_promote(stages, upstream, ctx=ctx, label=label + "]")
    evaluation = refs["evaluation"]
    rows = catalog.RESULTS.read(stages.ctx.store.path(evaluation["id"]))
    return {
        "variant": variant,
        "seed": seed,
        **({} if bootstrap_seed is None else {"bootstrap_seed": bootstrap_seed}),
        "learning_rate": section.learning_rate,
        "policy_artifact": refs["policy"]["id"],
        "evaluation_artifact": evaluation["id"],
        "rows": rows,
    }


def commit_summary(
    stages: StageRunner,
    kind: str,
    payload: dict[str, Any],
    markdown: str,
    runs: list[dict[str, Any]],
    extra: dict[str, Any],
) -> dict[str, Any]:
    """Store a study's summary (``<kind>.json`` with ``payload`` and each run without its
    rows, and ``<kind>.md``) as an artifact whose parents are the runs' evaluations; tag
    the run with it and publish the table as a Prefect markdown artifact. Returns the
    flow's result: ``payload``, the runs as stored, the table, the artifact id and the
    stage reports."""
    publish_table(stages.ctx, kind, markdown)
    trained = [{k: v for k, v in run.items() if k != "rows"} for run in runs]
    payload = {**payload, "runs": trained}
    parents = [run["evaluation_artifact"] for run in runs]
    store = stages.ctx.store
    with store.staging() as out:
        catalog.study_summary(kind).write(out, payload)
        catalog.study_table(kind).write(out, markdown)
        manifest = store.commit(
            out,
            Provenance(
                stage=kind,
                kind=kind,
                parents=tuple(dict.fromkeys(parents)),
                config_hash=stages.ctx.config.config_hash(),
                mlflow_run_id=stages.ctx.mlflow_parent_run_id,
                prefect_flow_run_id=str(flow_run.id) if flow_run.id else None,
                extra=extra,
            ),
        )
    client = MlflowClient(stages.ctx.mlflow_tracking_uri)
    client.log_text(stages.ctx.mlflow_parent_run_id, markdown, f"{kind}.md")
    client.set_tag(stages.ctx.mlflow_parent_run_id, f"rlmec.{kind}_artifact", manifest.id)
    return {
        **payload,
        "artifact": manifest.id,
        "markdown": markdown,
        "stages": [vars(r) for r in stages.reports],
    }
