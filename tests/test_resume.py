"""Crash safety: SIGKILL the pipeline inside each stage in turn, rerun, and compare.

After every kill the same command is run again: finished stages must be cache hits, the
killed stage resumes from its checkpoint (Trainer checkpoints, distill shards), and at
the end every artifact id equals that of an uninterrupted run with the same seed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from flows.end_of_run import DOCUMENTED
from rlmec_core.config import STAGES, load_config
from storage.run_records import load_run_records
from storage.store import ArtifactStore
from tests.pipeline_helpers import REPO, markdown_artifacts, run_in_process, stage_table

pytestmark = pytest.mark.slow
MICRO = REPO / "configs" / "micro.yaml"


def start(workspace: Path, kill_at: str = "") -> subprocess.Popen:
    env = {**os.environ, "PREFECT_LOGGING_LEVEL": "WARNING"}
    env.pop("RLMEC_KILL_AT", None)
    if kill_at:
        env["RLMEC_KILL_AT"] = kill_at
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flows.cli",
            "run",
            "--config",
            str(MICRO),
            "--workspace",
            str(workspace),
            "--json",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: the embedded server dies with it
    )


def kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def wait_for(proc: subprocess.Popen, condition: Callable[[], bool], timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            out = proc.stdout.read()[-4000:]
            raise AssertionError(f"pipeline ended before the kill point:\n{out}")
        if time.monotonic() > deadline:
            kill_group(proc)
            raise AssertionError("kill point not reached in time")
        time.sleep(0.05)


def checkpoint_exists(workspace: Path, stage: str, name: str) -> Callable[[], bool]:
    return lambda: any(
        (workspace / "scratch" / stage).glob(f"*/checkpoints/**/{name}/trainer_state.json")
    )


def last_record(workspace: Path) -> dict:
    return load_run_records(workspace)[-1]


@pytest.fixture(scope="module")
def uninterrupted_run(tmp_path_factory) -> tuple[Path, dict[str, dict]]:
    workspace = tmp_path_factory.mktemp("uninterrupted")
    table = stage_table(
        run_in_process("run", "--config", str(MICRO), "--workspace", str(workspace), "--json")
    )
    return workspace, table


@pytest.fixture(scope="module")
def uninterrupted(uninterrupted_run) -> dict[str, dict]:
    return uninterrupted_run[1]


def test_full_run_lineage_reaches_raw_data_and_models_are_registered(uninterrupted_run):
    workspace, table = uninterrupted_run
    assert all(table[s]["status"] == "ran" for s in STAGES)
    result = run_in_process(
        "lineage", table["evaluate"]["artifact"], "--workspace", str(workspace), "--json"
    )
    chain = json.loads(result.stdout)
    assert {m["stage"] for m in chain} == set(STAGES)
    data = next(m for m in chain if m["stage"] == "data")
    assert data["parents"] == []  # the root: raw data, named with its file hash
    sources = data["extra"]["summary"]["sources"]
    assert any(s["name"] == "gsm8k" and len(s["sha256"]) == 64 for s in sources)
    for manifest in chain:
        assert manifest["mlflow_run_id"] and manifest["prefect_task_run_id"], manifest["stage"]

    client = MlflowClient(tracking_uri=f"sqlite:///{workspace / 'mlflow.db'}")
    for name, stage in (("rlmec-grm", "train_grm"), ("rlmec-policy", "train_policy")):
        versions = client.search_model_versions(f"name='{name}'")
        tagged = {v.tags["rlmec.artifact_id"] for v in versions}
        assert table[stage]["artifact"] in tagged, (name, tagged)
    # the RL terms of the objective are logged as curves
    policy_run = next(m for m in chain if m["stage"] == "train_policy")["mlflow_run_id"]
    metrics = client.get_run(policy_run).data.metrics
    assert {"l_rl", "l_im", "clip_fraction", "mean_ratio"} <= set(metrics)


def test_full_run_moves_the_registry_aliases_to_its_models(uninterrupted_run):
    workspace, table = uninterrupted_run
    client = MlflowClient(tracking_uri=f"sqlite:///{workspace / 'mlflow.db'}")
    latest = client.get_model_version_by_alias("rlmec-grm", "latest")
    assert latest.tags["rlmec.artifact_id"] == table["train_grm"]["artifact"]
    best = client.get_model_version_by_alias("rlmec-policy", "best")  # the first is the best
    assert best.tags["rlmec.artifact_id"] == table["train_policy"]["artifact"]
    results = json.loads(
        (ArtifactStore(workspace).path(table["evaluate"]["artifact"]) / "results.json").read_text()
    )
    trained = next(
        r for r in results if r["eval_set"] == "synthetic_test" and r["policy"] == "rlmec"
    )
    assert float(best.tags["rlmec.accuracy.synthetic_test"]) == trained["accuracy"]


def test_full_run_logs_each_stages_datasets_as_mlflow_inputs(uninterrupted_run):
    workspace, table = uninterrupted_run
    client = MlflowClient(tracking_uri=f"sqlite:///{workspace / 'mlflow.db'}")
    store = ArtifactStore(workspace)
    ids = {stage: table[stage]["artifact"] for stage in STAGES}

    def inputs(stage: str) -> dict[str, tuple[str, str]]:
        run = client.get_run(store.manifest(ids[stage]).mlflow_run_id)
        return {
            d.dataset.name: (
                d.dataset.digest,
                {t.key: t.value for t in d.tags}["mlflow.data.context"],
            )
            for d in run.inputs.dataset_inputs
        }

    data = ids["data"]
    assert inputs("data") == {}
    assert inputs("bootstrap")[f"{data}/train.parquet"] == (data, "data")
    assert {f"{data}/dev.parquet", f"{data}/test.parquet"} <= set(inputs("collect"))
    assert set(inputs("distill")) == {f"{ids['collect']}/samples.parquet"}
    distilled = {f"{ids['distill']}/distilled.parquet"}
    assert set(inputs("train_grm")) == set(inputs("annotate")) == distilled  # not the GRM's data
    assert inputs("train_policy")[f"{ids['annotate']}/rl_data.parquet"][1] == "rl_data"
    assert f"{data}/eval/gsm8k.parquet" in inputs("evaluate")


def test_full_run_publishes_its_evaluation_table_to_prefect(uninterrupted_run):
    workspace, table = uninterrupted_run
    record = last_record(workspace)
    tables = markdown_artifacts(record["prefect_flow_run_id"])
    results = ArtifactStore(workspace).path(table["evaluate"]["artifact"]) / "results.md"
    assert tables == {"rlmec-micro-evaluation": results.read_text()}


def test_a_plain_rerun_ends_with_the_tables_and_what_they_show(uninterrupted_run):
    workspace, table = uninterrupted_run
    assert all(table[s]["peak_rss_mib"] > 50 for s in STAGES)  # each stage that ran
    out = run_in_process("run", "--config", str(MICRO), "--workspace", str(workspace)).stdout
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in ([s] for s in STAGES)]
    assert [row[:2] for row in rows] == [[s, "cached"] for s in STAGES]
    assert not any("MiB" in row for row in rows)  # a cached stage used no memory here
    ending = out.rstrip().splitlines()[-2:]
    assert ending == list(DOCUMENTED["micro"])
    assert out.index("Evaluation (greedy accuracy, %)") < out.index(ending[0])


def test_sigkill_inside_each_stage_then_resume(tmp_path, uninterrupted):
    workspace = tmp_path / "ws"
    finished: list[str] = []

    def killed_in(stage: str, proc: subprocess.Popen) -> None:
        record = last_record(workspace)
        assert record["status"] == "INTERRUPTED", record
        statuses = {s["stage"]: s["status"] for s in record["stages"]}
        for done in finished:  # everything finished before is reused, not recomputed
            assert statuses[done] == "cached" or done == finished[-1], (stage, statuses)
        assert statuses[stage] == "interrupted", (stage, statuses)  # in flight when killed
        finished.append(stage)

    # bootstrap: right after a training epoch ends (16 steps per epoch; checkpoint at 64)
    proc = start(workspace)
    wait_for(proc, checkpoint_exists(workspace, "bootstrap", "checkpoint-64"))
    kill_group(proc)
    killed_in("bootstrap", proc)

    # the stages without checkpoints: killed after their work, before their artifact exists
    for stage in ("collect", "distill"):
        proc = start(workspace, kill_at=f"{stage}:before_commit")
        proc.wait(timeout=600)
        assert proc.returncode == -signal.SIGKILL, proc.stdout.read()[-4000:]
        kill_group(proc)
        killed_in(stage, proc)

    # distill's shards hold every example exactly once, so the rerun judges nothing again
    shards = [
        json.loads(line)["sample_id"]
        for path in (workspace / "scratch" / "distill").glob("*/shards/*.jsonl")
        for line in path.read_text().splitlines()
    ]
    assert len(shards) == len(set(shards)) > 0

    # train_grm runs in a time-limited child process: a kill of the pipeline takes it along
    proc = start(workspace)
    wait_for(proc, checkpoint_exists(workspace, "train_grm", "checkpoint-16"))
    kill_group(proc)
    killed_in("train_grm", proc)

    for stage in ("annotate", "train_policy", "evaluate"):
        proc = start(workspace, kill_at=f"{stage}:before_commit")
        proc.wait(timeout=600)
        assert proc.returncode == -signal.SIGKILL, proc.stdout.read()[-4000:]
        kill_group(proc)
        killed_in(stage, proc)

    proc = start(workspace)
    out, _ = proc.communicate(timeout=600)
    kill_group(proc)
    final = stage_table(subprocess.CompletedProcess(proc.args, proc.returncode, out, ""))
    for stage in STAGES:
        assert final[stage]["artifact"] == uninterrupted[stage]["artifact"], stage
    assert [final[s]["status"] for s in STAGES[:-1]] == ["cached"] * (len(STAGES) - 1)
    assert final["evaluate"]["status"] == "ran"

    # training resumed from the checkpoint it was killed after: not step 0, not skipped
    store = ArtifactStore(workspace)
    bootstrap = store.manifest(final["bootstrap"]["artifact"]).extra["metrics"]
    assert bootstrap["resumed_from_step"] == 64 and bootstrap["sft_steps"] == 256
    grm = store.manifest(final["train_grm"]["artifact"]).extra["metrics"]
    grm_cfg = load_config(MICRO).train_grm  # every epoch's steps, none twice: 15 an epoch
    assert grm["resumed_from_step"] == 16 and grm["steps"] == grm_cfg.epochs * 15
    assert len(load_run_records(workspace)) == 8  # 7 killed runs and the final one
