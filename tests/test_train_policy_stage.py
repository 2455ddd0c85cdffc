"""The train_policy stage trains its variant at that variant's own learning rate."""

from __future__ import annotations

import json

from tasks import train_policy as _registers_the_stage  # noqa: F401
from tasks.stage import raw_stage_function
from tests.tiny_rl import policy_stage

RATES = {"rft": 3e-3, "rlmec": 5e-4}


def test_the_stage_trains_at_its_variants_own_learning_rate(tmp_path):
    section = {"variant": "rft", "learning_rate": 1e-2, "variant_learning_rates": RATES}
    ctx, io = policy_stage(tmp_path, {**section, "max_steps": 1, "batch_size": 4})
    result = raw_stage_function("train_policy")(ctx, io)
    assert result.metrics["learning_rate"] == 3e-3
    assert json.loads((io.out / "training.json").read_text())["learning_rate"] == 3e-3
    # the cache key names the rate the stage trains at
    assert ctx.config.train_policy.semantic()["learning_rate"] == 3e-3


def test_a_resolved_section_keeps_its_rate_when_resolved_again(tmp_path):
    ctx, _ = policy_stage(tmp_path, {"learning_rate": 1e-2, "variant_learning_rates": RATES})
    section = ctx.config.train_policy
    assert section.resolved().learning_rate == 5e-4  # rlmec, the default variant
    assert section.for_variant("gold_sft").learning_rate == 1e-2  # no rate of its own
    # a tuning grid's rate set on a resolved section survives the stage's resolution
    tuned = section.for_variant("rft").model_copy(update={"learning_rate": 1e-4})
    assert tuned.resolved().learning_rate == 1e-4
    assert tuned.semantic()["learning_rate"] == 1e-4
