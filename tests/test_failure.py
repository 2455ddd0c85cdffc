"""Failures end with one clear line: a bad record is refused before anything runs; a stage
that fails (training that diverges, a full disk) names the stage and what to do, prints no
traceback, marks the MLflow parent run and the run record FAILED and commits nothing."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
import yaml
from mlflow.tracking import MlflowClient

from flows.cli import main
from storage.run_records import load_run_records
from storage.store import ArtifactStore
from tests.pipeline_helpers import REPO, run_cli
from tests.test_concurrent_runs import small_micro

pytestmark = pytest.mark.slow


def test_bad_record_is_refused_before_anything_runs(tmp_path, capsys):
    bad = tmp_path / "gsm8k_bad.jsonl"
    good = (REPO / "tests" / "fixtures" / "gsm8k_slice.jsonl").read_text().splitlines()
    bad.write_text("\n".join([good[0], '{"question": "no answer field"}', *good[1:3]]) + "\n")
    raw = yaml.safe_load((REPO / "configs" / "micro.yaml").read_text())
    raw["data"]["eval_files"] = [{"name": "broken", "path": str(bad), "format": "gsm8k"}]
    config = tmp_path / "broken.yaml"
    config.write_text(yaml.safe_dump(raw))
    workspace = tmp_path / "ws"

    assert main(["run", "--config", str(config), "--workspace", str(workspace)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("rlmec: ") and f"{bad}, line 2, field 'answer': missing" in line
    assert "data.eval_files.0" in line and "fix it" in line and "resume" not in line
    assert not workspace.exists()  # nothing ran, nothing was written


def failed_run(result: subprocess.CompletedProcess, workspace, stage: str) -> str:
    """The last line of a run that failed in ``stage``, after checking what it left."""
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith(f"rlmec: stage {stage!r} failed: ")
    assert sum(line.startswith("rlmec:") for line in result.stderr.splitlines()) == 1
    record = load_run_records(workspace)[-1]
    assert record["status"] == "FAILED"
    assert {s["stage"]: s["status"] for s in record["stages"]}[stage] == "failed"
    return last


def test_diverging_training_fails_its_stage_and_commits_nothing(tmp_path):
    config, workspace = tmp_path / "nan.yaml", tmp_path / "ws"
    small_micro(config, bootstrap={"learning_rate": 1e30, "max_steps": 6, "logging_steps": 2})
    result = run_cli(
        *("run", "--config", str(config), "--workspace", str(workspace), "--until", "bootstrap"),
        prefect_home=tmp_path / "prefect",
    )
    last = failed_run(result, workspace, "bootstrap")
    assert "training diverged at step" in last and "lower the learning rate" in last
    assert "resume" not in last  # a run that diverged has nothing worth resuming
    assert "rlmec runs" in last

    record = load_run_records(workspace)[-1]
    client = MlflowClient(tracking_uri=f"sqlite:///{workspace / 'mlflow.db'}")
    parent = client.get_run(record["mlflow_run_id"])
    assert parent.info.status == "FAILED"
    assert parent.data.tags["stage.bootstrap.status"] == "failed"
    store = ArtifactStore(workspace)
    data = {s["stage"]: s for s in record["stages"]}["data"]["artifact"]
    assert store.ids() == [data] and not list(store.staging_root.iterdir())


def _mount_tmpfs(path, size: str) -> bool:
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return False
    path.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)])
    return mounted.returncode == 0


def test_a_full_disk_is_said_as_such_and_the_run_is_recorded_failed(tmp_path):
    disk = tmp_path / "disk"
    if not _mount_tmpfs(disk, "3m"):
        pytest.skip("needs root and mount to give the workspace a small disk")
    try:
        config, workspace = tmp_path / "micro.yaml", disk / "ws"
        small_micro(config, bootstrap={"max_steps": 16, "save_steps": 2})
        result = run_cli(
            *(
                "run",
                "--config",
                str(config),
                "--workspace",
                str(workspace),
                "--until",
                "bootstrap",
            ),
            prefect_home=tmp_path / "prefect",
        )
        last = failed_run(result, workspace, "bootstrap")
        assert "no space left on device" in last and "free some space" in last
        assert "SQLAlchemy" not in result.stderr  # MLflow's own error reports are left out
    finally:
        subprocess.run(["umount", str(disk)])
