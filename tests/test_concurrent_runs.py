"""Two `rlmec run` processes on one new workspace, through the real CLI: both finish with
the same artifact ids, and each stage is computed once, the other run waiting for it and
taking it from the cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml
from mlflow.tracking import MlflowClient

from storage.run_records import load_run_records
from tests.pipeline_helpers import REPO, stage_table

pytestmark = pytest.mark.slow
STAGES_RUN = ("data", "bootstrap", "collect")


def small_micro(path, **overrides) -> None:
    """configs/micro.yaml with a few-step bootstrap and a handful of problems to collect."""
    raw = yaml.safe_load((REPO / "configs" / "micro.yaml").read_text(encoding="utf-8"))
    raw["data"]["eval_files"][0]["path"] = str(REPO / "tests" / "fixtures" / "gsm8k_slice.jsonl")
    raw["bootstrap"].update(max_steps=24, save_steps=8)  # long enough for the runs to meet
    raw["collect"].update(max_problems=4)
    for section, values in overrides.items():
        raw[section].update(values)
    path.write_text(yaml.safe_dump(raw), encoding="utf-8")


def test_two_runs_at_once_share_the_work_and_agree(tmp_path):
    config, workspace = tmp_path / "micro.yaml", tmp_path / "ws"
    small_micro(config)
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect"), "PREFECT_LOGGING_LEVEL": "INFO"}
    args = ["run", "--config", str(config), "--workspace", str(workspace), "--until", "collect"]
    runs = [
        subprocess.Popen(
            [sys.executable, "-m", "flows.cli", *args, "--json"],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    results = []
    for run in runs:
        out, err = run.communicate(timeout=900)
        results.append(subprocess.CompletedProcess(args, run.returncode, out, err))
    tables = [stage_table(result) for result in results]  # both exit 0

    for stage in STAGES_RUN:
        assert tables[0][stage]["artifact"] == tables[1][stage]["artifact"], stage
        assert sorted(t[stage]["status"] for t in tables) == ["cached", "ran"], stage
    assert not any("Traceback" in r.stderr for r in results)

    # One MLflow store, created once; both parent runs finished; every stage ran once.
    records = load_run_records(workspace)
    assert [r["status"] for r in records] == ["FINISHED", "FINISHED"]
    client = MlflowClient(f"sqlite:///{workspace / 'mlflow.db'}")
    assert sorted(e.name for e in client.search_experiments()) == ["Default", "rlmec"]
    experiment = client.get_experiment_by_name("rlmec")
    parents = {r["mlflow_run_id"] for r in records}
    assert {client.get_run(p).info.status for p in parents} == {"FINISHED"}
    children = [
        r for r in client.search_runs([experiment.experiment_id]) if r.info.run_id not in parents
    ]
    assert sorted(r.data.tags["rlmec.stage"] for r in children) == sorted(STAGES_RUN)
    assert {r.info.status for r in children} == {"FINISHED"}
    for path in (workspace / "runs").iterdir():
        assert json.loads(path.read_text())["mlflow_closed"] is True
