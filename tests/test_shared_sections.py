"""SHARED_SECTIONS against what each stage's code reads of the config.

A stage that reads a section its cache key leaves out reuses a stale artifact when that
section changes; one that lists a section it no longer reads reruns for nothing. What a
stage reads is found as its code fingerprint finds its code: the modules of its import
closure, here searched for ``<...>config.<section>``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from rlmec_core.config import SHARED_SECTIONS, STAGES, PipelineConfig
from tasks.fingerprint import PROJECT_ROOT, closure_files, project_packages

SECTIONS = frozenset(PipelineConfig.model_fields)
# In every stage's key anyway (run.seed), or never part of what a stage computes.
NEVER_SHARED = {"run", "tracking"}
# Sections a stage reads that reach its key through a parent artifact's key instead:
# evaluate names the trained policy's row by train_policy.variant, and that policy's own
# key holds the whole train_policy section.
THROUGH_PARENTS = {"evaluate": {"train_policy"}}


def sections_read(path: Path) -> set[str]:
    """The top-level sections ``path`` reads off an object named ``config``/``*.config``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Attribute) and node.attr in SECTIONS:
            owner = node.value
            name = owner.id if isinstance(owner, ast.Name) else getattr(owner, "attr", "")
            if name.endswith("config"):
                found.add(node.attr)
    return found


def read_by_stage(stage: str) -> set[str]:
    modules = closure_files(f"tasks.{stage}", PROJECT_ROOT, project_packages())
    return set().union(
        *(sections_read(path) for name, path in modules.items() if name != "rlmec_core.config")
    )


def test_the_search_finds_reads(tmp_path):
    path = tmp_path / "stage.py"
    path.write_text("def f(ctx, config):\n    ctx.config.prompts.format\n    config.evaluate\n")
    assert sections_read(path) == {"prompts", "evaluate"}


@pytest.mark.parametrize("stage", STAGES)
def test_shared_sections_are_what_the_stage_reads(stage):
    read = read_by_stage(stage)
    assert stage in read  # each stage reads its own section: the search works there
    shared = read - {stage} - NEVER_SHARED - THROUGH_PARENTS.get(stage, set())
    assert set(SHARED_SECTIONS.get(stage, ())) == shared
    assert THROUGH_PARENTS.get(stage, set()) <= read  # an exception still needed
