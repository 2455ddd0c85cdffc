"""A training section's settings reach Hugging Face's TrainingArguments, each by one name."""

from __future__ import annotations

from rlmec_core.config import TRAINING_ARGUMENTS, TrainingSection
from rlmec_core.trainers.sft import training_arguments

# A value other than the default for every setting TrainingArguments takes as it is.
CHANGED = {
    "epochs": 2.5,
    "learning_rate": 1e-3,
    "batch_size": 3,
    "gradient_accumulation_steps": 2,
    "lr_scheduler": "linear",
    "weight_decay": 0.1,
    "adam_beta2": 0.95,
    "save_steps": 7,
    "save_total_limit": 4,
    "logging_steps": 3,
}
# The settings training_arguments converts, and those the stages use themselves.
CONVERTED = {"max_steps", "warmup_ratio", "precision", "gradient_checkpointing"}
STAGES_OWN = {"max_length", "lora", "retries", "retry_delay_seconds", "timeout_seconds"}


def test_every_training_setting_has_one_place():
    assert set(TrainingSection.model_fields) == set(TRAINING_ARGUMENTS) | CONVERTED | STAGES_OWN
    assert not set(TRAINING_ARGUMENTS) & (CONVERTED | STAGES_OWN)


def test_every_setting_reaches_its_training_argument(tmp_path):
    assert set(CHANGED) == set(TRAINING_ARGUMENTS)
    defaults = TrainingSection()
    assert all(value != getattr(defaults, name) for name, value in CHANGED.items())
    args = training_arguments(TrainingSection(**CHANGED, max_steps=9), tmp_path, seed=0)
    for name, argument in TRAINING_ARGUMENTS.items():
        value = getattr(args, argument)
        assert getattr(value, "value", value) == CHANGED[name], name  # an enum's value
    assert args.max_steps == 9
    assert training_arguments(defaults, tmp_path, seed=0).max_steps == -1  # None: epochs
