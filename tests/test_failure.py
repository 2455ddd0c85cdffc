"""A failing stage: a clear message naming the stage and the record at fault, the MLflow
parent run marked failed, the run record saying which stage failed, nothing half-written."""

from __future__ import annotations

import pytest
import yaml
from mlflow.tracking import MlflowClient

from flows.cli import main
from flows.run_records import load_run_records
from storage.store import ArtifactStore
from tests.pipeline_helpers import REPO

pytestmark = pytest.mark.slow


def test_bad_record_fails_its_stage_clearly(tmp_path, capsys):
    bad = tmp_path / "gsm8k_bad.jsonl"
    good = (REPO / "tests" / "fixtures" / "gsm8k_slice.jsonl").read_text().splitlines()
    bad.write_text("\n".join([good[0], '{"question": "no answer field"}', *good[1:3]]) + "\n")
    raw = yaml.safe_load((REPO / "configs" / "micro.yaml").read_text())
    raw["data"]["eval_files"] = [{"name": "broken", "path": str(bad), "format": "gsm8k"}]
    config = tmp_path / "broken.yaml"
    config.write_text(yaml.safe_dump(raw))
    workspace = tmp_path / "ws"

    assert main(["run", "--config", str(config), "--workspace", str(workspace)]) == 1
    err = capsys.readouterr().err
    assert "stage 'data' failed" in err
    assert f"{bad}, line 2" in err and "answer" in err  # the file, line and field at fault
    assert "rlmec runs" in err  # what to do next

    record = load_run_records(workspace)[-1]
    assert record["status"] == "FAILED"
    assert {s["stage"]: s["status"] for s in record["stages"]}["data"] == "failed"
    client = MlflowClient(tracking_uri=f"sqlite:///{workspace / 'mlflow.db'}")
    parent = client.get_run(record["mlflow_run_id"])
    assert parent.info.status == "FAILED"
    assert parent.data.tags["stage.data.status"] == "failed"
    store = ArtifactStore(workspace)
    assert store.ids() == [] and not list(store.staging_root.iterdir())
