"""benchmarks/readme_figures.py reads the README's headline figures as the README prints
them, and measures the same figures from a run's artifacts."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import pytest

from rlmec_core.config import load_config

ROOT = Path(__file__).resolve().parents[1]


def _script():
    spec = importlib.util.spec_from_file_location(
        "readme_figures", ROOT / "benchmarks" / "readme_figures.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


figures = _script()


def test_the_readme_states_every_headline_figure_of_tiny():
    block = figures.readme_block((ROOT / "README.md").read_text(encoding="utf-8"), "tiny")
    variant = load_config(ROOT / "configs" / "tiny.yaml").train_policy.variant
    found = figures.readme_figures(block, variant)
    assert set(found) == {"bootstrap dev accuracy", "initial policy", variant}
    # The kernels they were measured with, which the re-measurement uses.
    assert figures.readme_kernels(block) in {"default", "avx2", "avx512", "zvector", "vsx"}
    for value in found.values():
        assert all(float(part) == float(part) for part in value.split())


def test_figures_are_read_with_their_signs_and_intervals_across_line_breaks():
    block = (
        "ends with bootstrap dev accuracy 46.2%, initial policy 55.8% [53.0,\n"
        "58.7] and rlmec 55.6% (Δ −0.2 [−1.5, +1.0]) on the test split"
    )
    assert figures.readme_figures(block, "rlmec") == {
        "bootstrap dev accuracy": "46.2",
        "initial policy": "55.8 53.0 58.7",
        "rlmec": "55.6 -0.2 -1.5 1.0",
    }


def test_the_kernels_are_read_from_the_block_and_reach_torch():
    assert figures.readme_kernels("torch's kernels: `ATEN_CPU_CAPABILITY=avx2`)") == "avx2"
    assert figures.readme_kernels("no kernels named") is None
    # torch takes the variable; "default" (no vector extension) is there on every CPU.
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "default"}
    assert figures.torch_kernels(env) == "DEFAULT"


def test_a_missing_figure_or_block_is_named():
    with pytest.raises(SystemExit, match="no 'rlmec' figure"):
        figures.readme_figures(
            "bootstrap dev accuracy 46.2%, initial policy 1.0% [0.5, 2.0]", "rlmec"
        )
    with pytest.raises(SystemExit, match="figures:small"):
        figures.readme_block("no block here", "small")


def test_measured_figures_come_from_the_bootstrap_manifest_and_the_evaluation(tmp_path):
    from storage.manifest import Provenance
    from storage.store import ArtifactStore

    store = ArtifactStore(tmp_path)

    def commit(kind, metrics, files):
        with store.staging() as staged:
            for name, text in files.items():
                (staged / name).write_text(text, encoding="utf-8")
            provenance = Provenance(stage=kind, kind=kind, extra={"metrics": metrics})
            manifest = store.commit(staged, provenance)
        return manifest.id

    interval = lambda v, lo, hi: {"value": v, "low": lo, "high": hi, "n": 10}  # noqa: E731
    results = [
        {
            "policy": "initial",
            "eval_set": "synthetic_test",
            "interval": interval(0.558, 0.53, 0.587),
        },
        {
            "policy": "rlmec",
            "eval_set": "synthetic_test",
            "interval": interval(0.556, 0.5, 0.6),
            "vs_baseline": interval(-0.002, -0.015, 0.01),
        },
        {"policy": "rlmec", "eval_set": "gsm8k", "interval": interval(0.9, 0.8, 1.0)},
    ]
    stages = [
        {
            "stage": "bootstrap",
            "artifact": commit("policy", {"dev_accuracy": 0.462}, {"model.txt": "weights"}),
        },
        {
            "stage": "evaluate",
            "artifact": commit("evaluation", {}, {"results.json": json.dumps(results)}),
        },
    ]
    assert figures.measured_figures(tmp_path, stages, "rlmec") == {
        "bootstrap dev accuracy": "46.2",
        "initial policy": "55.8 53.0 58.7",
        "rlmec": "55.6 -0.2 -1.5 1.0",
    }
