"""Early stopping on a dev metric measured after every epoch, keeping the best epoch.

Supervised training "until dev accuracy stops improving" (the method's converged initial
policy): after each epoch ``evaluate(model)`` gives a number (greedy dev accuracy for
bootstrap); training stops when ``patience`` epochs in a row have not beaten the best, and
the best epoch's weights are put back at the end.

Resumable by construction: checkpoints are written at epoch ends (``save_strategy``
``epoch``), the curve is kept in ``state.log_history`` and the best epoch in
``state.best_model_checkpoint`` / ``best_metric``, all of which the Trainer writes into every
checkpoint and restores from it, and rotation never deletes the best checkpoint. An
interrupted run resumes from its last epoch with the curve it had then.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback

from rlmec_core.trainers.lora import is_lora

logger = logging.getLogger(__name__)

CURVE_KEY = "dev_accuracy"  # the log_history entries of the curve: {"epoch", "step", CURVE_KEY}


def dev_curve(log_history: list[dict[str, Any]]) -> list[tuple[int, float, float]]:
    """``(step, epoch, value)`` of every dev measurement in a Trainer's log history."""
    return [
        (int(entry["step"]), float(entry["epoch"]), float(entry[CURVE_KEY]))
        for entry in log_history
        if CURVE_KEY in entry
    ]


def epochs_since_best(curve: list[tuple[int, float, float]]) -> int:
    """Measurements after the best one (the first best: a tie does not count as better)."""
    if not curve:
        return 0
    values = [value for _, _, value in curve]
    return len(values) - 1 - values.index(max(values))


def stopped_early(checkpoint: str | Path, patience: int) -> bool:
    """Whether the run that wrote ``checkpoint`` had stopped: resumed, the Trainer would
    take one more step before it looks at the stop flag, so the caller ends it there."""
    state = json.loads((Path(checkpoint) / "trainer_state.json").read_text())
    return epochs_since_best(dev_curve(state.get("log_history", []))) >= patience


class DevEarlyStopping(TrainerCallback):
    """``evaluate(model) -> float`` after every epoch; stop after ``patience`` epochs without
    a new best; load the best epoch's checkpoint back at the end (``evaluate`` gets the
    plain model: LoRA's adapters live inside it)."""

    def __init__(self, evaluate: Callable[[torch.nn.Module], float], patience: int) -> None:
        if patience < 1:
            raise ValueError(f"patience must be >= 1, got {patience}")
        self.evaluate = evaluate
        self.patience = patience

    def on_epoch_end(self, args, state, control, model=None, **kwargs):
        plain = model.get_base_model() if is_lora(model) else model
        value = float(self.evaluate(plain))
        state.log_history.append(
            {"epoch": state.epoch, "step": state.global_step, CURVE_KEY: value}
        )
        if state.best_metric is None or value > state.best_metric:
            # This epoch's checkpoint, which the Trainer writes right after this call.
            state.best_metric = value
            state.best_global_step = state.global_step
            state.best_model_checkpoint = str(
                Path(args.output_dir) / f"checkpoint-{state.global_step}"
            )
        curve = dev_curve(state.log_history)
        logger.info(
            "epoch %.0f: %s %.4f (best %.4f, %d epoch(s) without improvement)",
            state.epoch, CURVE_KEY, value, state.best_metric, epochs_since_best(curve),
        )  # fmt: skip
        if epochs_since_best(curve) >= self.patience:
            control.should_training_stop = True
        return control

    def on_train_end(self, args, state, control, model=None, **kwargs):
        best = state.best_model_checkpoint
        last = Path(args.output_dir) / f"checkpoint-{state.global_step}"
        if best is None or Path(best) == last:
            return control
        load_checkpoint_weights(model, Path(best))
        logger.info("restored the best epoch's weights from %s", best)
        return control


def load_checkpoint_weights(model: torch.nn.Module, checkpoint: Path) -> None:
    """Load a Trainer checkpoint's weights into ``model`` (full weights, or LoRA adapters)."""
    from safetensors.torch import load_file

    if is_lora(model):
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(checkpoint / "adapter_model.safetensors"))
        return
    state = load_file(checkpoint / "model.safetensors")
    missing, unexpected = model.load_state_dict(state, strict=False)
    # Tied weights are saved once: the output head shares the embedding's tensor.
    tied = set(getattr(model, "_tied_weights_keys", None) or [])
    missing = [key for key in missing if key not in tied]
    if missing or unexpected:
        raise ValueError(
            f"{checkpoint}: weights do not match the model (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]})"
        )
