"""What a run publishes after evaluate: the registry's `best` policy alias and the
evaluation table as a Prefect markdown artifact (the glue, on a made-up evaluation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from prefect import flow
from prefect.runtime import flow_run

from flows.publish import promote_if_best, publish_evaluation
from rlmec_core.config import load_config
from storage.manifest import Provenance
from tasks import tracking
from tasks.context import RunContext
from tests.pipeline_helpers import REPO, markdown_artifacts

pytestmark = pytest.mark.slow
POLICY = "rlmec-policy"


def run_context(workspace: Path) -> RunContext:
    uri = tracking.default_tracking_uri(workspace)
    client = MlflowClient(tracking_uri=uri)
    experiment = tracking.ensure_experiment(client, "publish-test", workspace)
    parent = client.create_run(experiment).info.run_id
    config = load_config(REPO / "configs" / "micro.yaml")
    return RunContext(config, str(workspace), uri, experiment, parent)


def evaluation(ctx: RunContext, eval_set: str, accuracy: float) -> dict:
    """An evaluation artifact whose trained policy (`rlmec`) has ``accuracy``."""
    rows = [
        {"policy": policy, "eval_set": eval_set, "accuracy": value}
        for policy, value in (("initial", 0.1), ("rlmec", accuracy))
    ]
    with ctx.store.staging() as out:
        (out / "results.json").write_text(json.dumps(rows))
        (out / "results.md").write_text(f"| {eval_set} | {accuracy} |\n")
        manifest = ctx.store.commit(out, Provenance(stage="evaluate", kind="evaluation"))
    return {"id": manifest.id, "kind": "evaluation", "stage": "evaluate"}


def trained_policy(ctx: RunContext, artifact_id: str) -> dict:
    client = MlflowClient(tracking_uri=ctx.mlflow_tracking_uri)
    tracking.register_model(client, POLICY, Path(ctx.workspace), "", artifact_id)
    return {"id": artifact_id, "kind": "policy", "stage": "train_policy"}


@flow(name="publish-test", persist_result=False)
def publish(ctx: RunContext, policy: dict, evaluated: dict) -> tuple[bool, str, str]:
    promoted = promote_if_best(ctx, POLICY, policy, evaluated)
    return promoted, publish_evaluation(ctx, evaluated), str(flow_run.id)


def best_artifact(ctx: RunContext) -> str:
    client = MlflowClient(tracking_uri=ctx.mlflow_tracking_uri)
    return client.get_model_version_by_alias(POLICY, "best").tags["rlmec.artifact_id"]


def test_best_follows_test_accuracy_and_each_run_publishes_its_table(tmp_path):
    ctx = run_context(tmp_path / "ws")
    on_dev = evaluation(ctx, "synthetic_dev", 0.9)
    assert not publish(ctx, trained_policy(ctx, "tuned"), on_dev)[0]  # dev never counts

    good = evaluation(ctx, "synthetic_test", 0.5)
    promoted, key, run_id = publish(ctx, trained_policy(ctx, "good"), good)
    assert promoted and best_artifact(ctx) == "good"
    table = (ctx.store.path(good["id"]) / "results.md").read_text()
    assert markdown_artifacts(run_id) == {key: table} and key == "rlmec-micro-evaluation"

    worse = evaluation(ctx, "synthetic_test", 0.25)
    assert not publish(ctx, trained_policy(ctx, "worse"), worse)[0]
    better = evaluation(ctx, "synthetic_test", 0.75)
    assert publish(ctx, trained_policy(ctx, "better"), better)[0]
    assert best_artifact(ctx) == "better"
