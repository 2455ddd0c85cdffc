import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from storage.manifest import Provenance
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
