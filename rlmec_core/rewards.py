"""Token-level rewards from the generative reward model (stage 4b).

``p_t`` is the GRM's probability of the sampled token ``y_t`` when it rewrites ``y``. A token
the GRM would keep (``p_t > 0.5``) is fine; one it would not produce is a likely culprit.
Correct solutions only earn rewards, wrong ones only pay small penalties.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

KEEP_THRESHOLD = 0.5  # p_t above this means the GRM would keep the token
MAX_REWARD = 0.5  # cap for a token of a correct solution (p_t - 0.5 <= 0.5 anyway)
MAX_PENALTY = 0.1  # a token of a wrong solution loses at most this much

# The `no_token_reward` ablation: one instance-level value broadcast over every token.
INSTANCE_REWARD_CORRECT = 0.5
INSTANCE_REWARD_INCORRECT = -0.1


def _as_probs(token_probs: torch.Tensor | Sequence[float]) -> torch.Tensor:
    probs = torch.as_tensor(token_probs)
    if not torch.is_floating_point(probs):
        probs = probs.to(torch.float32)
    if not torch.isfinite(probs).all():
        raise ValueError("token_probs contains NaN or infinite values")
    if probs.numel() and (probs.min() < 0 or probs.max() > 1):
        bad = probs[(probs < 0) | (probs > 1)][0].item()
        raise ValueError(f"token_probs must lie in [0, 1]; found {bad!r}")
    return probs


def token_rewards(token_probs: torch.Tensor | Sequence[float], correct: bool) -> torch.Tensor:
    """Per-token rewards ``r_t`` from GRM probabilities ``p_t``.

    correct ``y``: ``clip(p_t - 0.5, 0, 0.5)``; incorrect ``y``: ``clip(p_t - 0.5, -0.1, 0)``.
    The result has the shape and (floating) dtype of the input and carries no gradient.
    """
    probs = _as_probs(token_probs).detach()
    centred = probs - KEEP_THRESHOLD
    if correct:
        return centred.clamp(min=0.0, max=MAX_REWARD)
    return centred.clamp(min=-MAX_PENALTY, max=0.0)


def instance_rewards(length: int, correct: bool) -> torch.Tensor:
    """The instance-level reward of the `no_token_reward` ablation, one value per token."""
    if isinstance(length, bool) or not isinstance(length, int) or length < 0:
        raise ValueError(f"length must be a non-negative int, got {length!r}")
    value = INSTANCE_REWARD_CORRECT if correct else INSTANCE_REWARD_INCORRECT
    return torch.full((length,), value, dtype=torch.float32)
