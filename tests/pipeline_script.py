"""Run `rlmec` several times in one process, editing files between the runs.

    python -P tests/pipeline_script.py STEPS.json RESULTS.json

STEPS is a list of ``{"run": [cli args]}``, ``{"append": [path, text]}`` and
``{"write": [path, text]}``. RESULTS gets one entry per run: its exit code, its stdout and
the file of every project module loaded so far, so a test can check which copy of the
code ran. One process pays for the imports and the Prefect server once; the code
fingerprint reads the files on every run, so edits between runs are seen.

Run it with ``-P`` and PYTHONPATH set to the project copy under test: nothing here
imports from the checkout this file lives in.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
from pathlib import Path


def loaded_project_modules() -> dict[str, str]:
    from tasks.fingerprint import project_packages

    packages = set(project_packages())
    return {
        name: module.__file__
        for name, module in sorted(sys.modules.items())
        if name.split(".")[0] in packages and getattr(module, "__file__", None)
    }


def run_cli(args: list[str]) -> dict:
    from flows.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(args)
    return {"code": code, "stdout": out.getvalue(), "modules": loaded_project_modules()}


def run_steps(steps: list[dict]) -> list[dict]:
    results = []
    for step in steps:
        if "run" in step:
            results.append(run_cli(step["run"]))
        elif "append" in step:
            path, text = step["append"]
            with open(path, "a", encoding="utf-8") as handle:
                handle.write(text)
        else:
            path, text = step["write"]
            Path(path).write_text(text, encoding="utf-8")
    return results


if __name__ == "__main__":
    steps_path, results_path = sys.argv[1:3]
    results = run_steps(json.loads(Path(steps_path).read_text(encoding="utf-8")))
    Path(results_path).write_text(json.dumps(results), encoding="utf-8")
