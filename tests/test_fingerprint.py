"""Code fingerprints derived from the code: the import closure of each stage's module."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tasks.fingerprint import (
    fingerprint_files,
    import_closure,
    module_file,
    project_packages,
)
from tests.pipeline_helpers import REPO, stage_table

UPSTREAM = ("data", "bootstrap", "collect")


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return root


def closure(root: Path, module: str = "app.stage") -> list[str]:
    return import_closure(module, root, packages=["app"])


# -- the closure on a small fake package -----------------------------------------------


def test_import_inside_a_function_is_followed(tmp_path):
    write_tree(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/stage.py": "def run():\n    import app.lazy\n    return app.lazy\n",
            "app/lazy.py": "",
            "app/unused.py": "",
        },
    )
    assert closure(tmp_path) == ["app", "app.lazy", "app.stage"]


def test_relative_imports_are_resolved(tmp_path):
    write_tree(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/stage.py": "from .sub.leaf import VALUE\n",
            "app/sub/__init__.py": "from . import sibling\n",
            "app/sub/leaf.py": "from ..shared import helper\nVALUE = helper()\n",
            "app/sub/sibling.py": "",
            "app/shared.py": "def helper():\n    return 1\n",
        },
    )
    assert closure(tmp_path) == [
        "app",
        "app.shared",
        "app.stage",
        "app.sub",
        "app.sub.leaf",
        "app.sub.sibling",
    ]


def test_from_package_import_submodule_counts_the_submodule(tmp_path):
    write_tree(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/stage.py": "from app.tools import prompts, NAME\nfrom app.models import Model\n",
            "app/tools/__init__.py": "NAME = 'tools'\n",
            "app/tools/prompts.py": "",
            "app/tools/other.py": "",
            "app/models.py": "class Model: ...\n",
        },
    )
    # `NAME` and `Model` are names, not modules; `other` is never imported.
    assert closure(tmp_path) == ["app", "app.models", "app.stage", "app.tools", "app.tools.prompts"]


def test_an_import_cycle_is_followed_once(tmp_path):
    write_tree(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/stage.py": "import app.a\n",
            "app/a.py": "import app.b\n",
            "app/b.py": "from app import a\n",
        },
    )
    assert closure(tmp_path) == ["app", "app.a", "app.b", "app.stage"]


def test_third_party_and_other_packages_are_ignored(tmp_path):
    write_tree(
        tmp_path,
        {
            "app/__init__.py": "",
            "app/stage.py": (
                "import json\nimport numpy as np\nfrom torch import nn\n"
                "import other.thing\nfrom app import core\n"
            ),
            "app/core.py": "",
            "other/__init__.py": "",
            "other/thing.py": "",
        },
    )
    assert closure(tmp_path) == ["app", "app.core", "app.stage"]


def test_the_stage_module_itself_may_live_outside_the_packages(tmp_path):
    write_tree(
        tmp_path,
        {"app/__init__.py": "", "app/core.py": "", "helpers/stage.py": "import app.core\n"},
    )
    assert closure(tmp_path, "helpers.stage") == ["app", "app.core", "helpers.stage"]


def test_fingerprint_covers_paths_and_bytes_in_a_stable_order(tmp_path):
    write_tree(tmp_path, {"app/__init__.py": "", "app/stage.py": "import app.core\n"})
    core = write_tree(tmp_path, {"app/core.py": "X = 1\n"}) / "app" / "core.py"
    files = [module_file(m, tmp_path) for m in closure(tmp_path)]
    before = fingerprint_files(files, tmp_path)
    assert fingerprint_files(reversed(files), tmp_path) == before
    core.write_text("X = 1\n# a comment\n")
    assert fingerprint_files(files, tmp_path) != before


def test_missing_stage_module_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no source file"):
        closure(tmp_path, "app.nothing")


# -- the real project --------------------------------------------------------------------


def test_project_packages_are_pyprojects_include():
    assert {"rlmec_core", "storage", "tasks", "flows"} <= set(project_packages())


@pytest.mark.parametrize(
    ("task_module", "covered"),
    [
        ("tasks.collect", ["rlmec_core.policy_prompt", "rlmec_core.answers"]),
        ("tasks.evaluate", ["rlmec_core.policy_prompt", "rlmec_core.answers"]),
        ("tasks.annotate", ["rlmec_core.policy_prompt", "rlmec_core.answers"]),
        ("tasks.bootstrap", ["rlmec_core.policy_prompt", "rlmec_core.answers"]),
        ("tasks.train_grm", ["rlmec_core.answers", "rlmec_core.teachers.base"]),
        ("tasks.data", ["rlmec_core.teachers.base", "rlmec_core.teachers"]),
        ("tasks.distill", ["rlmec_core.teachers.arithmetic", "rlmec_core.teachers.chat"]),
    ],
)
def test_stage_closures_cover_what_the_old_module_lists_missed(task_module, covered):
    modules = import_closure(task_module)
    assert set(covered) <= set(modules)
    # every stage runs the stage machinery, which is fingerprinted with it
    assert {"tasks", "tasks.stage", "tasks.fingerprint", "storage.store"} <= set(modules)


def test_data_stage_does_not_cover_the_policy_prompt():
    assert "rlmec_core.policy_prompt" not in import_closure("tasks.data")


def test_every_pipeline_task_names_the_module_its_fingerprint_covers():
    from flows import pipeline
    from tasks.fingerprint import code_closure

    tasks = [v for v in vars(pipeline).values() if hasattr(v, "code_module")]
    assert len(tasks) == 8
    for task in tasks:
        assert task.code_module in code_closure(task.code_module)


# -- through the real flow, on a copy of the project --------------------------------------


def copy_project(target: Path) -> Path:
    """The project's packages, configs and test fixtures, without bytecode caches."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for name in (*project_packages(), "configs"):
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, target / name, ignore=ignore)
    shutil.copytree(REPO / "tests" / "fixtures", target / "tests" / "fixtures")
    shutil.copy(REPO / "pyproject.toml", target / "pyproject.toml")
    return target


def cheap_config(project: Path) -> Path:
    """micro.yaml, cut down further: this test is about which stages run, not what they learn."""
    raw = yaml.safe_load((project / "configs" / "micro.yaml").read_text())
    raw["data"]["synthetic"].update(n_train=32, n_dev=4, n_test=4)
    raw["bootstrap"].update(epochs=1, eval_batch_size=4, eval_max_new_tokens=8)
    raw["collect"].update(k=1, max_problems=4, max_new_tokens=8)
    path = project / "configs" / "fingerprint.yaml"  # beside micro.yaml: same relative paths
    path.write_text(yaml.safe_dump(raw))
    return path


def run_script(steps: list[dict], project: Path, scratch: Path) -> list[dict]:
    """tests/pipeline_script.py in one subprocess that can import only the copy."""
    steps_path, results_path = scratch / "steps.json", scratch / "results.json"
    steps_path.write_text(json.dumps(steps))
    env = {
        **os.environ,
        "PYTHONPATH": str(project),
        "PREFECT_HOME": str(scratch / "prefect"),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    script = REPO / "tests" / "pipeline_script.py"
    done = subprocess.run(
        # -P: neither the script's folder (this checkout's tests/) nor the working
        # directory goes on sys.path, so PYTHONPATH (the copy) comes before the editable
        # install of the original checkout.
        [sys.executable, "-P", str(script), str(steps_path), str(results_path)],
        cwd=scratch,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-6000:]
    return json.loads(results_path.read_text())


def statuses(result: dict) -> dict[str, str]:
    done = subprocess.CompletedProcess([], result["code"], result["stdout"], "")
    return {stage: report["status"] for stage, report in stage_table(done).items()}


@pytest.mark.slow
def test_code_edits_rerun_exactly_the_stages_that_import_them(tmp_path):
    project = copy_project(tmp_path / "project")
    config = cheap_config(project)
    run = {
        "run": [
            *("run", "--config", str(config), "--until", "collect"),
            *("--workspace", str(tmp_path / "ws"), "--json"),
        ]
    }
    steps = [
        run,
        {"append": [str(project / "rlmec_core" / "policy_prompt.py"), "# an edit\n"]},
        run,
        {"write": [str(project / "rlmec_core" / "nobody_imports_this.py"), "X = 1\n"]},
        {"append": [str(project / "rlmec_core" / "teachers" / "arithmetic.py"), "# distill's\n"]},
        run,
    ]
    started = time.monotonic()
    first, after_prompt_edit, after_unused_edits = run_script(steps, project, tmp_path)
    print(f"three runs through collect in one process: {time.monotonic() - started:.1f}s")

    for result in (first, after_prompt_edit, after_unused_edits):
        loaded = result["modules"]
        assert "rlmec_core.policy_prompt" in loaded and "tasks.fingerprint" in loaded
        outside = {name: path for name, path in loaded.items() if not path.startswith(str(project))}
        assert not outside, f"modules imported from outside the copy: {outside}"

    assert [statuses(first)[s] for s in UPSTREAM] == ["ran", "ran", "ran"]
    edited = statuses(after_prompt_edit)
    assert [edited[s] for s in UPSTREAM] == ["cached", "ran", "ran"]
    assert all(status == "not reached" for s, status in edited.items() if s not in UPSTREAM)
    assert [statuses(after_unused_edits)[s] for s in UPSTREAM] == ["cached"] * 3
