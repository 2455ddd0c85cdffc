"""The last lines of `rlmec run` say what its table shows, and for which profile."""

from __future__ import annotations

import shutil

import yaml

from flows.end_of_run import DOCUMENTED, GENERIC, end_of_run_lines
from rlmec_core.config import load_config
from tests.pipeline_helpers import REPO

CONFIGS = REPO / "configs"


def test_the_tiny_profile_says_it_is_smoke_scale_and_where_the_effect_is_shown() -> None:
    lines = end_of_run_lines(load_config(CONFIGS / "tiny.yaml"))
    assert lines == DOCUMENTED["tiny"]
    assert "smoke-scale" in lines[0]
    assert "+6.6" in lines[1] and "rlmec ablate --config configs/small.yaml --seeds 3" in lines[1]


def test_every_shipped_profile_named_in_the_catalog_is_recognised() -> None:
    for name in DOCUMENTED:
        assert end_of_run_lines(load_config(CONFIGS / f"{name}.yaml")) == DOCUMENTED[name], name


def test_a_copy_naming_the_same_files_elsewhere_is_the_same_profile(tmp_path) -> None:
    raw = yaml.safe_load((CONFIGS / "tiny.yaml").read_text())
    for item in raw["data"]["eval_files"]:
        item["path"] = str((CONFIGS / item["path"]).resolve())
    raw["tracking"] = {"mlflow_tracking_uri": "http://127.0.0.1:5000"}  # where, not what
    copy = tmp_path / "copy.yaml"
    copy.write_text(yaml.safe_dump(raw))
    assert end_of_run_lines(load_config(copy)) == DOCUMENTED["tiny"]


def test_a_changed_profile_is_told_the_documented_figure_does_not_apply(tmp_path) -> None:
    raw = yaml.safe_load((CONFIGS / "small.yaml").read_text())
    raw["collect"]["k"] = raw["collect"]["k"] + 1
    for item in raw["data"]["eval_files"]:
        item["path"] = str((CONFIGS / item["path"]).resolve())
    changed = tmp_path / "small.yaml"
    changed.write_text(yaml.safe_dump(raw))
    lines = end_of_run_lines(load_config(changed))
    assert "differs from configs/small.yaml" in lines[0]
    assert not any("+6.6" in line for line in lines)
    assert lines[1:] == GENERIC


def test_a_config_of_its_own_is_told_how_an_effect_is_measured(tmp_path) -> None:
    own = tmp_path / "mine.yaml"
    shutil.copy(CONFIGS / "micro.yaml", own)
    own.write_text(own.read_text().replace("name: micro", "name: mine"))
    assert end_of_run_lines(load_config(own)) == GENERIC
