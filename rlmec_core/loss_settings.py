"""The RLMEC objective's two settings, ε and λ: their defaults and bounds, declared once.

``config.TrainPolicySection`` bounds a config's values with them; ``losses`` and the trainer,
which may be called without a config, check theirs with ``check_loss_settings``. No torch
here, so the config loads without it.
"""

from __future__ import annotations

DEFAULT_EPSILON = 0.3
DEFAULT_IMITATION_COEF = 1.0
# ε clips the importance ratio to [1-ε, 1+ε]: it lies strictly between these.
EPSILON_BOUNDS = (0, 1)
# λ weighs L_IM against L_RL: 0 turns imitation off, a negative weight would reward errors.
MIN_IMITATION_COEF = 0


def check_loss_settings(epsilon: float, imitation_coef: float) -> None:
    """Raise ValueError, naming the setting, for an ε or λ outside its bounds."""
    low, high = EPSILON_BOUNDS
    if not low < epsilon < high:
        raise ValueError(f"epsilon must lie in ({low}, {high}), got {epsilon!r}")
    if imitation_coef < MIN_IMITATION_COEF:
        raise ValueError(f"imitation_coef must be >= {MIN_IMITATION_COEF}, got {imitation_coef!r}")
