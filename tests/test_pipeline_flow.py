"""The real flow, through the real CLI: caching, re-running what changed, lineage."""

from __future__ import annotations

import json
import shutil

import pytest
from mlflow.tracking import MlflowClient

from tests.pipeline_helpers import REPO, run_cli, run_in_process, stage_table

pytestmark = pytest.mark.slow
UPSTREAM = ("data", "bootstrap", "collect")


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipeline")
    home = root / "prefect"
    workspace = root / "ws"
    config = root / "micro.yaml"
    shutil.copy(REPO / "configs" / "micro.yaml", config)
    text = config.read_text().replace("../tests/fixtures/", str(REPO / "tests" / "fixtures") + "/")
    config.write_text(text)
    result = run_cli(
        "run",
        "--config",
        str(config),
        "--until",
        "collect",
        "--workspace",
        str(workspace),
        "--json",
        prefect_home=home,
    )
    return root, home, workspace, config, stage_table(result)


def run_until_collect(config, workspace, *extra: str) -> dict[str, dict]:
    """`rlmec run --until collect` again, in this process, as a stage table."""
    args = ["run", "--config", str(config), "--until", "collect", "--workspace", str(workspace)]
    return stage_table(run_in_process(*args, *extra, "--json"))


def test_first_run_runs_each_stage_and_stops_at_until(first_run):
    _, _, workspace, _, table = first_run
    assert [table[s]["status"] for s in UPSTREAM] == ["ran", "ran", "ran"]
    assert table["distill"]["status"] == "not reached"
    store_ids = {p.name for p in (workspace / "artifacts").iterdir()}
    assert {table[s]["artifact"] for s in UPSTREAM} <= store_ids


def test_second_run_is_all_cache_hits_with_identical_ids(first_run):
    _, home, workspace, config, table = first_run
    again = run_until_collect(config, workspace)
    for stage in UPSTREAM:
        assert again[stage]["status"] == "cached", stage
        assert again[stage]["artifact"] == table[stage]["artifact"], stage


def test_changing_collect_temperature_reruns_collect_only(first_run):
    root, home, workspace, config, table = first_run
    hotter = root / "hotter.yaml"
    hotter.write_text(config.read_text().replace("temperature: 0.7", "temperature: 0.5"))
    assert hotter.read_text() != config.read_text()
    changed = run_until_collect(hotter, workspace)
    assert changed["data"]["status"] == changed["bootstrap"]["status"] == "cached"
    assert changed["bootstrap"]["artifact"] == table["bootstrap"]["artifact"]
    assert changed["collect"]["status"] == "ran"
    assert changed["collect"]["artifact"] != table["collect"]["artifact"]


def test_force_reruns_a_stage_and_those_after_it(first_run):
    _, home, workspace, config, table = first_run
    forced = run_until_collect(config, workspace, "--force", "bootstrap")
    assert forced["data"]["status"] == "cached"
    assert forced["bootstrap"]["status"] == forced["collect"]["status"] == "ran"


def test_lineage_and_mlflow_records(first_run):
    _, home, workspace, _, table = first_run
    samples = table["collect"]["artifact"]
    result = run_in_process("lineage", samples, "--workspace", str(workspace), "--json")
    assert result.returncode == 0, result.stderr
    chain = json.loads(result.stdout)
    assert [m["stage"] for m in chain] == ["collect", "bootstrap", "data"]
    for manifest in chain:
        assert manifest["config_hash"] and manifest["code_fingerprint"]
        assert manifest["prefect_flow_run_id"] and manifest["prefect_task_run_id"]
        assert manifest["mlflow_run_id"]
    assert chain[0]["parents"] == [
        table["bootstrap"]["artifact"],
        table["data"]["artifact"],
    ] or set(chain[0]["parents"]) == {table["bootstrap"]["artifact"], table["data"]["artifact"]}
    human = run_cli("lineage", samples[:8], "--workspace", str(workspace), prefect_home=home)
    assert human.returncode == 0 and "code fingerprint" in human.stdout

    client = MlflowClient(tracking_uri=f"sqlite:///{workspace / 'mlflow.db'}")
    child = client.get_run(chain[0]["mlflow_run_id"])
    parent_id = child.data.tags["mlflow.parentRunId"]
    assert client.get_run(parent_id).info.status == "FINISHED"
    assert child.data.tags["rlmec.artifact_id"] == samples
    assert child.data.params["k"] == "2"
    for name in ("sample_accuracy", "pass_at_k", "tokens_per_second"):
        assert name in child.data.metrics
    assert "manifest.json" in [a.path for a in client.list_artifacts(child.info.run_id)]
    # the tracking store lives in the workspace, not the working directory
    assert not (REPO / "mlflow.db").exists() and not (REPO / "mlruns").exists()
