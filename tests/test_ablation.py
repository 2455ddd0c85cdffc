"""`rlmec ablate`: variants and seeds share every upstream artifact."""

from __future__ import annotations

import json

import pytest

from storage.store import ArtifactStore
from tests.pipeline_helpers import REPO, run_in_process

pytestmark = pytest.mark.slow


def test_ablate_trains_each_variant_and_seed_on_shared_data(tmp_path):
    workspace = tmp_path / "ws"
    result = run_in_process(
        "ablate",
        "--config",
        str(REPO / "configs" / "micro.yaml"),
        "--seeds",
        "2",
        "--variants",
        "rlmec",
        "no_token_reward",
        "sft",
        "--workspace",
        str(workspace),
    )
    assert result.returncode == 0, result.stdout[-3000:]
    out = result.stdout
    assert "| variant |" in out and "±" in out
    for variant in ("rlmec", "no_token_reward", "sft"):
        assert f"| {variant} |" in out
    rows = [line.split() for line in out.splitlines() if line.strip()]
    upstream = [row for row in rows if row[0] in ("data", "bootstrap", "annotate")]
    assert len(upstream) == 3  # each shared stage ran once for all variants and seeds
    trained = [row for row in rows if row[0].startswith("train_policy[")]
    assert [row[1] for row in trained] == ["ran"] * 6
    assert len({row[2] for row in trained}) == 6  # one policy per variant and seed

    artifact = out.strip().splitlines()[-1].split()[-1]
    store = ArtifactStore(workspace)
    manifest = store.manifest(artifact)
    evaluations = {row[2] for row in rows if row[0].startswith("evaluate[")}
    # identical policies (sft, whatever the seed) give one identical evaluation artifact
    assert manifest.kind == "ablation" and set(manifest.parents) == evaluations
    summary = json.loads((store.path(artifact) / "ablation.json").read_text())["summary"]
    assert {s["variant"] for s in summary} == {"rlmec", "no_token_reward", "sft"}
    assert all(s["n_seeds"] == 2 for s in summary)
