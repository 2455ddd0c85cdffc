"""QA records through collect and distill with a ChatTeacher on a loopback server."""

from __future__ import annotations

import pytest
import yaml

from rlmec_core.data.io import load_parquet
from storage.store import ArtifactStore
from tests.pipeline_helpers import REPO, run_in_process, stage_table
from tests.teacher_server import TeacherServer, qa_oracle

pytestmark = pytest.mark.slow
SECRET = "sk-test-never-log-this-0123456789"


def test_qa_records_flow_through_collect_and_distill_with_chat_teacher(tmp_path, monkeypatch):
    monkeypatch.setenv("RLMEC_TEST_TEACHER_KEY", SECRET)
    fixtures = REPO / "tests" / "fixtures"
    with TeacherServer(qa_oracle, expected_api_key=SECRET) as server:
        raw = yaml.safe_load((REPO / "configs" / "micro.yaml").read_text())
        raw["data"]["eval_files"] = []
        raw["data"]["train_file"] = {
            "name": "obqa",
            "path": str(fixtures / "openbookqa_slice.jsonl"),
            "format": "qa",
            "limit": 12,
        }
        raw["distill"]["teacher"] = {
            "kind": "chat",
            "base_url": server.base_url,
            "model": "test-teacher",
            "api_key_env": "RLMEC_TEST_TEACHER_KEY",
            "concurrency": 3,
        }
        config = tmp_path / "qa.yaml"
        config.write_text(yaml.safe_dump(raw))
        workspace = tmp_path / "ws"
        table = stage_table(
            run_in_process(
                "run",
                "--config",
                str(config),
                "--until",
                "distill",
                "--workspace",
                str(workspace),
                "--json",
            )
        )
        assert table["distill"]["status"] == "ran"
        assert server.request_count > 0

    store = ArtifactStore(workspace)
    samples = load_parquet(store.path(table["collect"]["artifact"]) / "samples.parquet")
    assert set(samples["source"]) == {"qa"} and len(samples) > 0
    distilled = load_parquet(store.path(table["distill"]["artifact"]) / "distilled.parquet")
    assert len(distilled) == len(samples)
    for row in distilled:
        if row["correct"]:
            assert row["teacher_status"] == "correct" and row["error_step"] == -1
        else:
            assert row["teacher_status"] == "kept"
            assert row["rewrite"].strip() == row["gold_solution"].strip()
    # The GRM's training set belongs to train_grm, built after its held-out split.
    assert not (store.path(table["distill"]["artifact"]) / "grm_train.parquet").exists()
    manifest = store.manifest(table["distill"]["artifact"])
    assert not any(name.startswith("grm_examples_") for name in manifest.extra["metrics"])

    # The key was sent to the server but reached no file of the workspace.
    assert manifest.extra["summary"]["teacher"]["api_key_env"] == "RLMEC_TEST_TEACHER_KEY"
    for path in workspace.rglob("*"):
        if path.is_file():
            assert SECRET.encode() not in path.read_bytes(), path
