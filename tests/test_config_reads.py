"""The shared part of each stage's cache key, derived from what its code reads.

A stage that reads a section its cache key leaves out reuses a stale artifact when that
section changes. tasks.config_reads finds the sections in the stage's import closure; these
tests check that the search sees reads, refuses names it cannot follow, and that a change
to any section a stage reads moves that stage's key and no other stage's.
"""

from __future__ import annotations

import pytest

from rlmec_core.config import STAGES, ChatTeacherSection, PipelineConfig, SyntheticSection
from tasks.config_reads import (
    NEVER_SHARED,
    ConfigNamingError,
    sections_read,
    shared_sections,
    stage_hash,
)
from tasks.fingerprint import project_closure


def test_the_search_finds_reads(tmp_path):
    path = tmp_path / "stage.py"
    path.write_text("def f(ctx, config):\n    ctx.config.prompts.format\n    config.evaluate\n")
    assert sections_read(path) == {"prompts", "evaluate"}


@pytest.mark.parametrize(
    "source",
    [
        "def f(settings: PipelineConfig):\n    settings.prompts\n",
        "def f(ctx):\n    cfg = ctx.config\n    cfg.prompts\n",
        "def f(ctx):\n    c: PipelineConfig = load()\n    c.prompts\n",
        "def f(self, ctx):\n    self.cfg = ctx.config\n    self.cfg.prompts\n",
        "def f(ctx):\n    if (cfg := ctx.config):\n        cfg.prompts\n",
    ],
)
def test_a_config_under_another_name_stops_the_search_with_its_line(tmp_path, source):
    path = tmp_path / "stage.py"
    path.write_text(source)
    with pytest.raises(ConfigNamingError, match=r"stage\.py:[1-3]: .*name it 'config'"):
        sections_read(path)


def test_a_models_config_under_any_name_is_not_the_pipelines(tmp_path):
    path = tmp_path / "stage.py"
    path.write_text("def f(model, ctx):\n    cfg = model.config\n    config = ctx.config\n")
    assert sections_read(path) == set()


@pytest.mark.parametrize("stage", STAGES)
def test_each_stage_is_seen_reading_its_own_section(stage):
    # The search works on the real code: every stage reads its own section somewhere.
    files = project_closure(f"tasks.{stage}")
    assert any(stage in sections_read(path) for path in files.values())
    assert not set(shared_sections(f"tasks.{stage}", stage)) & (NEVER_SHARED | {stage})


def test_what_the_stages_are_known_to_read_is_found():
    # Facts of the method, read by hand from the stages' code.
    assert {"generation", "prompts"} <= set(shared_sections("tasks.collect", "collect"))
    assert "verification" in shared_sections("tasks.distill", "distill")
    assert "train_grm" in shared_sections("tasks.annotate", "annotate")  # the GRM's verdict
    assert "prompts" in shared_sections("tasks.train_policy", "train_policy")
    # A variant is named by its policy artifact: every variant shares the initial policy's rows.
    assert "train_policy" not in shared_sections("tasks.evaluate", "evaluate")


# One field of each section that is part of what it computes, and a value it does not have.
CHANGES = {
    "data": {"synthetic": SyntheticSection(n_train=123)},
    "bootstrap": {"epochs": 7.0},
    "collect": {"k": 3},
    "distill": {"teacher": ChatTeacherSection(base_url="http://127.0.0.1:9/v1", model="m")},
    "train_grm": {"epochs": 9.0},
    "annotate": {"max_new_tokens": 7},
    "train_policy": {"epochs": 9.0},
    "evaluate": {"split": "dev"},
    "generation": {"backend": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "m"},
    "prompts": {"format": "chat"},
    "verification": {"teacher_judges_correct": True},
}


def moved_keys(section: str, update: dict) -> set[str]:
    base = PipelineConfig()
    changed = base.model_copy(update={section: getattr(base, section).model_copy(update=update)})
    return {s for s in STAGES if stage_hash(base, s) != stage_hash(changed, s)}


@pytest.mark.parametrize("section", sorted(CHANGES))
def test_a_change_to_a_section_moves_exactly_the_keys_of_the_stages_that_read_it(section):
    readers = {s for s in STAGES if s == section or section in shared_sections(f"tasks.{s}", s)}
    assert readers  # every section is read by some stage
    assert moved_keys(section, CHANGES[section]) == readers


def test_the_seed_moves_every_key_and_tracking_none():
    assert moved_keys("run", {"seed": 5}) == set(STAGES)
    assert moved_keys("tracking", {"experiment": "elsewhere"}) == set()


def test_every_section_is_covered():
    assert set(CHANGES) | NEVER_SHARED == set(PipelineConfig.model_fields)
