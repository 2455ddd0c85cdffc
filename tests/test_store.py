import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from flows.cli import main as rlmec
from storage.manifest import Production, Provenance
from storage.store import ArtifactNotFoundError, ArtifactStore

REPO = Path(__file__).resolve().parents[1]


def put(store: ArtifactStore, content: str, parents=(), stage="s") -> str:
    with store.staging() as out:
        (out / "data.txt").write_text(content)
        return store.commit(out, Provenance(stage=stage, kind="k", parents=tuple(parents))).id


def test_content_addressed_and_manifest(tmp_path):
    store = ArtifactStore(tmp_path)
    a = put(store, "hello")
    assert put(store, "hello") == a  # same bytes, same id, stored once
    b = put(store, "world", parents=[a], stage="t")
    assert a != b and store.ids() == sorted([a, b])
    manifest = store.manifest(b)
    assert manifest.parents == [a] and manifest.stage == "t"
    assert set(manifest.files) == {"data.txt"}
    assert [m.id for m in store.lineage(b)] == [b, a]
    assert store.resolve(b[:6]) == b
    assert not list(store.staging_root.iterdir())


def test_failed_writer_leaves_nothing(tmp_path):
    store = ArtifactStore(tmp_path)
    with pytest.raises(RuntimeError), store.staging() as out:
        (out / "half.bin").write_bytes(b"x" * 10)
        raise RuntimeError("boom")
    assert store.ids() == [] and not list(store.staging_root.iterdir())
    with pytest.raises(ArtifactNotFoundError, match="not in the store"):
        store.path("0" * 20)


def test_writer_killed_mid_write_leaves_no_finished_artifact(tmp_path):
    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(REPO)!r})
        from storage.store import ArtifactStore
        store = ArtifactStore({str(tmp_path)!r})
        with store.staging() as out:
            with open(out / "weights.bin", "wb") as f:
                f.write(b"w" * 1_000_000)
                f.flush()
                print("writing", flush=True)
                time.sleep(60)
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "writing"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    store = ArtifactStore(tmp_path)
    assert store.ids() == []  # the partial folder is never read as an artifact
    debris = list(store.staging_root.iterdir())
    assert len(debris) == 1 and (debris[0] / "weights.bin").exists()
    time.sleep(0.1)
    assert store.sweep_staging() == 1 and not list(store.staging_root.iterdir())


def run_of(number: int, parent: str) -> Provenance:
    """A run of the evaluate stage, with ids that say which run it was."""
    return Provenance(
        stage="evaluate",
        kind="evaluation",
        parents=(parent,),
        config_hash=f"config-{number}",
        code_fingerprint=f"code-{number}",
        prefect_flow_run_id=f"flow-run-{number}",
        prefect_task_run_id=f"task-run-{number}",
        mlflow_run_id=f"mlflow-run-{number}",
    )


@pytest.fixture
def produced_twice(tmp_path):
    """One evaluation artifact made by two runs from different parents."""
    store = ArtifactStore(tmp_path)
    parents = [put(store, "policy one", stage="train_policy"), put(store, "policy two")]
    ids = set()
    for number, parent in enumerate(parents, start=1):
        with store.staging() as out:
            (out / "results.json").write_text('{"accuracy": 0.5}')
            ids.add(store.commit(out, run_of(number, parent)).id)
    assert len(ids) == 1  # identical content: one artifact
    return store, ids.pop(), parents


def test_every_production_is_recorded_and_the_manifest_stays_the_first(produced_twice):
    store, artifact, (first_parent, second_parent) = produced_twice
    made = store.productions(artifact)
    assert [p.mlflow_run_id for p in made] == ["mlflow-run-1", "mlflow-run-2"]
    assert [p.parents for p in made] == [[first_parent], [second_parent]]
    assert [p.prefect_task_run_id for p in made] == ["task-run-1", "task-run-2"]
    manifest = store.manifest(artifact)
    assert manifest.mlflow_run_id == "mlflow-run-1" and manifest.parents == [first_parent]
    assert Production.origin_of(manifest) == made[0]
    # the records live outside the content, so the id is unchanged by them
    assert not (store.path(artifact) / "productions").exists()
    assert {m.id for m in store.lineage(artifact)} == {artifact, first_parent, second_parent}


def test_an_artifact_without_production_records_has_its_manifest_as_origin(produced_twice):
    store, artifact, _ = produced_twice
    shutil.rmtree(store.productions_root / artifact)  # as stored before productions existed
    assert store.productions(artifact) == [Production.origin_of(store.manifest(artifact))]


def test_lineage_command_shows_every_production(produced_twice, capsys):
    store, artifact, (first_parent, second_parent) = produced_twice
    assert rlmec(["lineage", artifact[:8], "--workspace", str(store.workspace)]) == 0
    shown = capsys.readouterr().out
    assert "production 1/2" in shown and "production 2/2" in shown
    for number in (1, 2):
        for value in ("config", "code", "flow-run", "task-run", "mlflow-run"):
            assert f"{value}-{number}" in shown
    assert first_parent in shown and second_parent in shown

    assert rlmec(["lineage", artifact, "--workspace", str(store.workspace), "--json"]) == 0
    chain = json.loads(capsys.readouterr().out)
    assert chain[0]["id"] == artifact and chain[0]["mlflow_run_id"] == "mlflow-run-1"
    productions = chain[0]["productions"]
    assert [p["mlflow_run_id"] for p in productions] == ["mlflow-run-1", "mlflow-run-2"]
    assert [p["parents"] for p in productions] == [[first_parent], [second_parent]]
    # both parents are walked, not only the manifest's
    assert {m["id"] for m in chain} == {artifact, first_parent, second_parent}
