"""`rlmec ablate` and `rlmec tune`: variants, seeds and learning rates share every upstream
artifact, and the tables carry CIs and paired comparisons."""

from __future__ import annotations

import json

import pytest
import yaml

from flows.ablation import bootstrap_configs
from rlmec_core.config import load_config
from rlmec_core.eval_table import ablation_summary
from storage.store import ArtifactStore
from tests.pipeline_helpers import REPO, markdown_artifacts, run_in_process

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """One micro workspace for ablate and tune: the upstream stages run once (cached after)."""
    return tmp_path_factory.mktemp("ablation") / "ws"


def test_ablate_trains_each_variant_and_seed_on_shared_data(workspace):
    args = ["--config", str(REPO / "configs" / "micro.yaml"), "--workspace", str(workspace)]
    variants = ["rlmec", "gold_sft"]
    result = run_in_process("ablate", *args, "--seeds", "2", "--variants", *variants)
    assert result.returncode == 0, result.stdout[-3000:]
    out = result.stdout
    assert "accuracy % [95% CI]" in out and "Δ vs initial [95% CI]" in out
    for variant in ("initial", *variants):
        assert f"| synthetic_test | {variant} |" in out
    rows = [line.split() for line in out.splitlines() if line.strip()]
    upstream = [row for row in rows if row[0] in ("data", "bootstrap", "annotate")]
    assert len(upstream) == 3  # each shared stage ran once for all variants and seeds
    trained = [row for row in rows if row[0].startswith("train_policy[")]
    # ran, or cached if tune trained the same (variant, seed, rate) in this workspace first
    assert {row[1] for row in trained} <= {"ran", "cached"} and len(trained) == 4
    assert len({row[2] for row in trained}) == 4  # one policy per variant and seed
    # The initial policy was evaluated once for every variant and seed (tasks/evaluate.py).
    assert len(list((workspace / "scratch" / "evaluate-memo").glob("initial-*.json"))) == 1

    artifact = out.strip().splitlines()[-1].split()[-1]
    store = ArtifactStore(workspace)
    manifest = store.manifest(artifact)
    evaluations = {row[2] for row in rows if row[0].startswith("evaluate[")}
    assert manifest.kind == "ablation" and set(manifest.parents) == evaluations
    table = (store.path(artifact) / "ablation.md").read_text()  # also the run's Prefect artifact
    assert markdown_artifacts(manifest.prefect_flow_run_id) == {"rlmec-micro-ablation": table}
    payload = json.loads((store.path(artifact) / "ablation.json").read_text())
    summary = payload["summary"]
    assert {s["variant"] for s in summary} == {"initial", *variants}
    assert all(s["n_seeds"] == 2 for s in summary if s["variant"] != "initial")
    # The summary is the pooled statistics of the stored per-seed outcomes.
    initial = {s["eval_set"]: None for s in summary}
    for run in payload["runs"]:
        rows_of_run = json.loads(
            (store.path(run["evaluation_artifact"]) / "results.json").read_text()
        )
        for row in rows_of_run:
            if row["policy"] == "initial":
                initial[row["eval_set"]] = row["outcomes"]
    assert ablation_summary(payload["results"], initial) == summary
    # Each variant and seed names its trained policy; gold_sft took as many steps as rlmec.
    steps = {}
    for run in payload["runs"]:
        training = json.loads((store.path(run["policy_artifact"]) / "training.json").read_text())
        steps.setdefault(run["variant"], set()).add(training["steps"])
    assert steps["gold_sft"] == steps["rlmec"] and len(steps["rlmec"]) == 1

    # --json lists, per variant and seed, the trained policy's artifact id.
    again = run_in_process("ablate", *args, "--seeds", "2", "--variants", *variants, "--json")
    listed = json.loads(again.stdout[again.stdout.index("{") :])
    assert [(r["variant"], r["seed"]) for r in listed["runs"]] == [
        ("rlmec", 0), ("rlmec", 1), ("gold_sft", 0), ("gold_sft", 1),
    ]  # fmt: skip
    assert {r["policy_artifact"] for r in listed["runs"]} == {row[2] for row in trained}


def test_tune_chooses_each_variants_learning_rate_on_dev(workspace):
    args = ["--config", str(REPO / "configs" / "micro.yaml"), "--workspace", str(workspace)]
    result = run_in_process(
        "tune", *args, "--variants", "rlmec", "--learning-rates", "1e-4", "3e-3", "--json"
    )
    assert result.returncode == 0, result.stdout[-3000:]
    payload = json.loads(result.stdout[result.stdout.index('{\n  "artifact"') :])
    summary = payload["summary"]
    assert [(s["variant"], s["learning_rate"]) for s in summary] == [
        ("rlmec", 1e-4),
        ("rlmec", 3e-3),
    ]
    best = max(summary, key=lambda s: (s["accuracy"]["value"], -s["learning_rate"]))
    assert payload["chosen"] == {"rlmec": best["learning_rate"]}
    assert [s["chosen"] for s in summary] == [s is best for s in summary]
    # Chosen on dev: the evaluations scored the dev split, never test.
    store = ArtifactStore(workspace)
    for parent in store.manifest(payload["artifact"]).parents:
        rows = json.loads((store.path(parent) / "results.json").read_text())
        assert {r["eval_set"] for r in rows} == {"synthetic_dev"}


def test_bootstrap_configs_keep_the_first_and_seed_the_others_from_it():
    config = load_config(REPO / "configs" / "micro.yaml")
    first, second, third = bootstrap_configs(config, 3)
    assert first is config  # its upstream is the one `rlmec run` caches
    assert (second.bootstrap.seed, third.bootstrap.seed) == (1, 2)  # run.seed 0, + 1, + 2
    # Only bootstrap's seed moves: the data and every other section stay the same.
    assert second.model_dump(exclude={"bootstrap"}) == config.model_dump(exclude={"bootstrap"})
    assert second.bootstrap.model_dump(exclude={"seed"}) == config.bootstrap.model_dump(
        exclude={"seed"}
    )
    seeded = config.model_copy(
        update={"bootstrap": config.bootstrap.model_copy(update={"seed": 7})}
    )
    assert [c.bootstrap.seed for c in bootstrap_configs(seeded, 2)] == [7, 8]
    assert bootstrap_configs(config, 1) == [config]
    with pytest.raises(ValueError, match="at least 1"):
        bootstrap_configs(config, 0)


def test_ablate_refuses_bootstrap_seeds_without_bootstrap_training(tmp_path, capsys):
    raw = yaml.safe_load((REPO / "configs" / "micro.yaml").read_text())
    raw["bootstrap"] = {"model_path": str(tmp_path), "epochs": 0}
    raw["data"].pop("eval_files", None)
    config = tmp_path / "untrained.yaml"
    config.write_text(yaml.safe_dump(raw))
    workspace = tmp_path / "ws"
    result = run_in_process(
        "ablate", "--config", str(config), "--workspace", str(workspace), "--bootstrap-seeds", "2"
    )
    assert result.returncode == 2
    assert (
        "--bootstrap-seeds: bootstrap_seeds > 1 needs bootstrap to train" in capsys.readouterr().err
    )
    assert not workspace.exists()  # refused before anything ran
