"""What a pipeline run publishes once its policy is evaluated.

- the MLflow registry alias ``best`` of the policy model, moved to the trained policy when
  its accuracy on the primary eval set beats the current holder's;
- the evaluation and ablation tables as Prefect markdown artifacts, under a key per run
  name, so the Prefect UI shows each run's table and their history.
"""

from __future__ import annotations

import re

from mlflow.tracking import MlflowClient
from prefect.artifacts import create_markdown_artifact
from prefect.logging import get_run_logger

from rlmec_core.eval_table import BASELINE_POLICY
from storage import catalog
from tasks import tracking
from tasks.context import RunContext

# Final numbers: the synthetic test split, the first eval set of a test evaluation. A dev
# evaluation (`rlmec tune`) has none, so choices made on dev never move `best`.
PRIMARY_EVAL_SET = "synthetic_test"


def promote_if_best(
    ctx: RunContext, model_name: str, policy: dict | None, evaluation: dict | None
) -> bool:
    """Move ``best`` of ``model_name`` to the evaluated policy if its accuracy on the
    primary eval set beats the holder's. Returns whether the policy holds ``best``."""
    if policy is None or evaluation is None:
        return False
    results = catalog.RESULTS.read(ctx.store.path(evaluation["id"]))
    trained = [
        r for r in results if r["eval_set"] == PRIMARY_EVAL_SET and r["policy"] != BASELINE_POLICY
    ]
    if not trained:
        return False
    accuracy = trained[0]["accuracy"]
    client = MlflowClient(ctx.mlflow_tracking_uri)
    version = tracking.version_of_artifact(client, model_name, policy["id"])
    logger = get_run_logger()
    if version is None:
        logger.warning("policy %s has no version of %s to promote", policy["id"], model_name)
        return False
    promoted = tracking.promote_if_better(
        client, model_name, version.version, PRIMARY_EVAL_SET, accuracy
    )
    if promoted:
        logger.info(
            "%s version %s holds alias %r (%s accuracy %.3f)",
            model_name,
            version.version,
            tracking.BEST_ALIAS,
            PRIMARY_EVAL_SET,
            accuracy,
        )
    return promoted


def artifact_key(run_name: str, table: str) -> str:
    """``rlmec-<run name>-<table>`` in what Prefect allows: lowercase letters, digits, dashes."""
    return re.sub(r"[^a-z0-9]+", "-", f"rlmec-{run_name}-{table}".lower()).strip("-")


def publish_table(ctx: RunContext, table: str, markdown: str) -> str:
    """The table as a markdown artifact of the current flow run; returns its key."""
    key = artifact_key(ctx.config.run.name, table)
    create_markdown_artifact(
        markdown=markdown,
        key=key,
        description=f"rlmec {table} of MLflow run {ctx.mlflow_parent_run_id}",
    )
    return key


def publish_evaluation(ctx: RunContext, evaluation: dict | None) -> str | None:
    """The evaluate stage's table (its ``results.md``) as a markdown artifact."""
    if evaluation is None:
        return None
    markdown = catalog.RESULTS_TABLE.read(ctx.store.path(evaluation["id"]))
    return publish_table(ctx, "evaluation", markdown)
