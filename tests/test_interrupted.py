"""`kill -9` of a running `rlmec run`: its temporary Prefect server dies with it, `rlmec
runs` shows the stage it was in as interrupted, and the next run marks its MLflow runs
KILLED instead of leaving them RUNNING for ever."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from flows.cli import main
from tests.pipeline_helpers import REPO, run_cli
from tests.test_concurrent_runs import small_micro

pytestmark = pytest.mark.slow


def children_of(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")  # dead, waiting to be reaped by whoever adopted it


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def in_flight(workspace: Path) -> str | None:
    for path in (workspace / "runs").glob("*.json"):
        try:
            return json.loads(path.read_text()).get("in_flight")
        except ValueError:
            return None
    return None


def test_a_killed_run_leaves_nothing_running(tmp_path, capsys):
    config, workspace, home = tmp_path / "micro.yaml", tmp_path / "ws", tmp_path / "prefect"
    small_micro(config, bootstrap={"max_steps": 2000, "save_steps": 1000})
    args = ["run", "--config", str(config), "--workspace", str(workspace)]
    env = {**os.environ, "PREFECT_HOME": str(home)}
    run = subprocess.Popen(
        [sys.executable, "-m", "flows.cli", *args, "--until", "bootstrap"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: in_flight(workspace) == "bootstrap", 300, "bootstrap to start")
        client = MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")
        stage_run = "tags.`rlmec.stage` = 'bootstrap'"
        wait_for(lambda: client.search_runs(["1"], stage_run), 120, "bootstrap's MLflow run")
        server = children_of(run.pid)
        assert server, "the temporary Prefect server is a child of rlmec"
    finally:
        run.kill()
        run.wait()
    wait_for(lambda: all(gone(pid) for pid in server), 20, "the server to die with rlmec")

    assert main(["runs", "--workspace", str(workspace), "--json"]) == 0
    [record] = json.loads(capsys.readouterr().out)
    assert record["status"] == "INTERRUPTED"
    statuses = {s["stage"]: s["status"] for s in record["stages"]}
    assert statuses["data"] == "ran" and statuses["bootstrap"] == "interrupted"

    # The next run (cheap: data is cached) closes the killed run's MLflow runs.
    again = run_cli(*args, "--until", "data", prefect_home=home)
    assert again.returncode == 0, again.stderr[-3000:]
    parent = client.get_run(record["mlflow_run_id"])
    assert parent.info.status == "KILLED"
    experiment = parent.info.experiment_id
    children = client.search_runs(
        [experiment], f"tags.mlflow.parentRunId = '{record['mlflow_run_id']}'"
    )
    assert {r.data.tags["rlmec.stage"]: r.info.status for r in children} == {
        "data": "FINISHED",
        "bootstrap": "KILLED",
    }
