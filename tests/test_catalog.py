"""The catalog of artifact files: entries read back what they wrote, and no module outside
the catalog names an artifact file by a literal."""

import ast
import json
from pathlib import Path

import pytest
from datasets import Dataset

from storage import catalog

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tasks", "flows", "report", "storage", "rlmec_core")


def _entries() -> list[catalog.ArtifactFile]:
    fixed = [value for value in vars(catalog).values() if isinstance(value, catalog.ArtifactFile)]
    return [*fixed, *catalog.PROBLEMS.values()]


def test_each_format_reads_back_what_it_wrote(tmp_path):
    rows = Dataset.from_list([{"problem_id": "p1", "answer": 3.0}])
    catalog.SAMPLES.write(tmp_path, rows)
    assert list(catalog.SAMPLES.read(tmp_path)) == [{"problem_id": "p1", "answer": 3.0}]
    catalog.RESULTS.write(tmp_path, [{"accuracy": 0.5}])
    assert json.loads((tmp_path / "results.json").read_text()) == [{"accuracy": 0.5}]
    assert catalog.RESULTS.read(tmp_path) == [{"accuracy": 0.5}]
    catalog.RESULTS_TABLE.write(tmp_path, "| a |\n")
    assert catalog.RESULTS_TABLE.read(tmp_path) == "| a |\n"
    with pytest.raises(TypeError, match="save_pretrained"):
        catalog.MODEL_FOLDER.write(tmp_path, object())


def test_eval_sets_are_listed_from_the_data_artifact(tmp_path):
    for name in ("svamp", "gsm8k"):
        catalog.eval_set(name).write(tmp_path, Dataset.from_list([{"question": name}]))
    assert catalog.eval_set_names(tmp_path) == ["gsm8k", "svamp"]
    assert list(catalog.eval_set("svamp").read(tmp_path)) == [{"question": "svamp"}]


def test_study_files_are_named_by_their_kind(tmp_path):
    catalog.study_summary("ablation").write(tmp_path, {"summary": []})
    catalog.study_table("ablation").write(tmp_path, "table")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ablation.json", "ablation.md"]


def test_no_module_names_an_artifact_file_by_a_literal():
    names = {entry.name for entry in _entries()} | {
        catalog.EXTERNAL_MODEL_KIND,
        "ablation.json",
        "tuning.json",
    }
    names -= {catalog.MODEL_FOLDER.name}  # "model" is also an ordinary word in messages
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path == ROOT / "storage" / "catalog.py":
                continue
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Constant) and node.value in names:
                    found.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.value!r}")
    assert found == []
