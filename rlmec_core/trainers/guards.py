"""Stop training as soon as the loss or the gradients stop being finite numbers.

Hugging Face's Trainer, by default, leaves a NaN or infinite loss out of its logged
averages and steps the optimizer anyway: a diverged run would train on to a model of
NaNs and commit it. ``NonFiniteGuard`` raises ``NonFiniteLossError`` instead, before the
optimizer applies a non-finite gradient, so the stage fails and nothing is committed.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from transformers import TrainerCallback

from rlmec_core.errors import RlmecError


class NonFiniteLossError(RlmecError, ArithmeticError):
    """Training diverged: a loss or gradient is NaN or infinite."""

    hint = "nothing was committed"


class NonFiniteGuard(TrainerCallback):
    def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        if getattr(args, "fp16", False):
            return  # fp16's loss scaler skips overflowing steps itself
        grads = [p.grad for p in kwargs["model"].parameters() if p.grad is not None]
        if grads and not torch.isfinite(torch.nn.utils.get_total_norm(grads)):
            _diverged(state.global_step + 1, "the gradient norm is not finite")

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any):
        for name in ("loss", "grad_norm"):
            value = (logs or {}).get(name)
            if isinstance(value, int | float) and not math.isfinite(value):
                _diverged(state.global_step, f"the {name.replace('_', ' ')} is {value}")

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        model = kwargs.get("model")
        if model is not None and not all(torch.isfinite(p).all() for p in model.parameters()):
            _diverged(state.global_step, "the trained weights are not finite")


def _diverged(step: int, what: str) -> None:
    raise NonFiniteLossError(
        f"training diverged at step {step}: {what}; lower the learning rate (or check the "
        "data) and run again"
    )
