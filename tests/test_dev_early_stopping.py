"""Early stopping on dev (bootstrap.dev_patience): training stops once dev stops improving,
the best epoch's weights come back, and a resumed run neither loses the curve nor trains a
step more than the run it continues."""

from __future__ import annotations

import shutil

import pytest
import torch
from safetensors.torch import load_file

from rlmec_core.bootstrap import bootstrap_policy
from rlmec_core.config import BootstrapSection, TrainingSection
from rlmec_core.trainers.dev_curve import DevEarlyStopping, epochs_since_best
from rlmec_core.trainers.sft import train_sft
from tests.micro_sft import MICRO, one_layer_llama, sft_examples

TRAINING = TrainingSection(
    epochs=5.0, learning_rate=3e-3, batch_size=8, max_length=512, logging_steps=1,
    save_total_limit=1, lr_scheduler="constant",
)  # fmt: skip
STEPS_PER_EPOCH = 2  # 16 examples, batch 8


class Scripted:
    """A dev metric that reads its values off a list, one per epoch, and keeps the weights
    it was shown (to compare with what training returns)."""

    def __init__(self, values):
        self.values, self.seen = list(values), []

    def __call__(self, model):
        self.seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return self.values[len(self.seen) - 1]


def _same_weights(model, weights):
    return all(torch.equal(v, weights[k]) for k, v in model.state_dict().items())


def test_epochs_since_best_counts_from_the_first_best():
    curve = [(1, 1.0, 0.2), (2, 2.0, 0.5), (3, 3.0, 0.5), (4, 4.0, 0.4)]
    assert epochs_since_best(curve) == 2
    assert epochs_since_best(curve[:2]) == 0
    assert epochs_since_best([]) == 0


def test_stops_after_patience_and_keeps_the_best_epoch(micro_splits, micro_tokenizer, tmp_path):
    examples = sft_examples(micro_splits, 16)
    metric = Scripted([0.2, 0.5, 0.4, 0.3, 0.9])
    model = one_layer_llama(micro_tokenizer)
    result = train_sft(
        model, micro_tokenizer, examples, tmp_path / "run", TRAINING, seed=0,
        early_stopping=DevEarlyStopping(metric, patience=2),
    )  # fmt: skip
    # Epoch 2 is best; epochs 3 and 4 do not beat it: stop after 4 of the 5 epochs.
    assert len(metric.seen) == 4
    assert result["steps"] == 4 * STEPS_PER_EPOCH
    assert [round(e) for _, e, _ in result["dev_curve"]] == [1, 2, 3, 4]
    assert [v for _, _, v in result["dev_curve"]] == [0.2, 0.5, 0.4, 0.3]
    assert result["best_epoch"] == 2
    assert _same_weights(model, metric.seen[1])  # the best epoch's weights, not the last
    assert not _same_weights(model, metric.seen[3])
    # Rotation kept the best checkpoint next to the last one.
    best = tmp_path / "run" / f"checkpoint-{2 * STEPS_PER_EPOCH}"
    assert best.is_dir() and (tmp_path / "run" / f"checkpoint-{4 * STEPS_PER_EPOCH}").is_dir()

    # Run again: it had stopped, so it trains no step more and gives the same weights back.
    again_metric = Scripted([1.0])
    again = one_layer_llama(micro_tokenizer)
    rerun = train_sft(
        again, micro_tokenizer, examples, tmp_path / "run", TRAINING, seed=0,
        early_stopping=DevEarlyStopping(again_metric, patience=2),
    )  # fmt: skip
    assert again_metric.seen == [] and rerun["steps"] == 4 * STEPS_PER_EPOCH
    assert rerun["best_epoch"] == 2
    assert _same_weights(again, metric.seen[1])


def test_a_resumed_run_keeps_the_curve_it_had(micro_splits, micro_tokenizer, tmp_path):
    examples = sft_examples(micro_splits, 16)
    full_metric = Scripted([0.2, 0.5, 0.4, 0.3])
    train_sft(
        one_layer_llama(micro_tokenizer), micro_tokenizer, examples, tmp_path / "full", TRAINING,
        seed=0, early_stopping=DevEarlyStopping(full_metric, patience=2),
    )  # fmt: skip
    # Killed during epoch 3: only epoch 2's checkpoint (the best, with the curve) survives.
    step = 2 * STEPS_PER_EPOCH
    shutil.copytree(
        tmp_path / "full" / f"checkpoint-{step}", tmp_path / "run" / f"checkpoint-{step}"
    )
    metric = Scripted([0.4, 0.3])
    model = one_layer_llama(micro_tokenizer)
    resumed = train_sft(
        model, micro_tokenizer, examples, tmp_path / "run", TRAINING, seed=0,
        early_stopping=DevEarlyStopping(metric, patience=2),
    )  # fmt: skip
    assert resumed["resumed_from"].endswith(f"checkpoint-{step}")
    assert len(metric.seen) == 2  # epochs 3 and 4 only
    assert [v for _, _, v in resumed["dev_curve"]] == [0.2, 0.5, 0.4, 0.3]
    assert resumed["best_epoch"] == 2
    saved = load_file(tmp_path / "run" / f"checkpoint-{step}" / "model.safetensors")
    for name, value in model.state_dict().items():
        if name in saved:
            assert torch.equal(value, saved[name]), name


def test_bootstrap_reports_the_curve(micro_splits, tmp_path):
    cfg = MICRO.model_copy(update={"epochs": 2.0, "dev_patience": 1})
    splits = micro_splits
    result = bootstrap_policy(splits, tmp_path / "model", cfg, seed=0)
    assert 1 <= len(result["dev_curve"]) <= 2
    assert result["best_epoch"] in (1, 2)
    best = max(v for _, _, v in result["dev_curve"])
    # The kept model is the best epoch's: the final dev measurement gives its accuracy.
    assert result["dev_accuracy"] == pytest.approx(best)


def test_dev_patience_needs_whole_epochs():
    with pytest.raises(ValueError, match="dev_patience"):
        BootstrapSection(dev_patience=1, max_steps=10)
