"""The RLMEC policy objective (stage 5): token-level clipped policy gradient + imitation.

``L = L_RL + λ · L_IM`` with

* ``ρ_t = exp(log π_θ(y_t) - log π_ref(y_t))`` and
  ``A_t = min(ρ_t · r_t, clip(ρ_t, 1-ε, 1+ε) · r_t)``, both without gradient;
* ``L_RL = -Σ_t A_t · log π_θ(y_t) / N_r``, ``N_r`` = tokens with ``r_t ≠ 0`` (at least 1),
  or, an option outside the method (``rl_normalizer="response_tokens"``), every response
  token of the batch: then L_RL's weight against L_IM no longer depends on how many tokens
  the rewards leave at zero (docs/results.md §3);
* ``L_IM = Σ_t w_t · (-log π_θ(ŷ_t)) / N_w``, ``N_w`` = tokens with ``w_t ≠ 0`` (at least 1).

Padding is marked by a zero reward (for ``y``) or a zero weight (for ``ŷ``); whatever
log-prob sits at a padded position never reaches the loss.
"""

from __future__ import annotations

from typing import Any

import torch

from rlmec_core.loss_settings import DEFAULT_EPSILON, DEFAULT_IMITATION_COEF, check_loss_settings


def _check_pair(a: torch.Tensor, b: torch.Tensor, names: str) -> None:
    if a.shape != b.shape:
        raise ValueError(
            f"{names} must have the same shape, got {tuple(a.shape)} and {tuple(b.shape)}"
        )


def _wide(x: torch.Tensor) -> torch.Tensor:
    # bf16/fp16 log-probs lose the small differences ρ depends on; float64 stays float64.
    return x if x.dtype == torch.float64 else x.float()


def _rl_terms(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    rewards: torch.Tensor,
    epsilon: float,
    n_response_tokens: torch.Tensor | int | None = None,
) -> dict[str, torch.Tensor]:
    active = rewards != 0
    n_r = active.sum().clamp(min=1)
    divisor = n_r if n_response_tokens is None else torch.as_tensor(n_response_tokens).clamp(min=1)
    with torch.no_grad():
        # The ratio only scales the reward; the gradient flows through log π_θ alone.
        ratio = torch.exp(_wide(logp.detach()) - _wide(ref_logp.detach()))
        ratio = torch.where(active, ratio, torch.ones_like(ratio))
        r = _wide(rewards.detach())
        advantage = torch.minimum(ratio * r, ratio.clamp(1 - epsilon, 1 + epsilon) * r)
        clipped = active & ((ratio < 1 - epsilon) | (ratio > 1 + epsilon))
        clip_fraction = clipped.sum() / n_r
        mean_ratio = torch.where(active, ratio, torch.zeros_like(ratio)).sum() / n_r
    # where(): a padded position may hold any log-prob (even -inf) without poisoning the sum.
    per_token = torch.where(active, -advantage * _wide(logp), torch.zeros_like(advantage))
    return {
        "l_rl": per_token.sum() / divisor,
        "clip_fraction": clip_fraction,
        "mean_ratio": mean_ratio,
        "n_reward_tokens": active.sum(),
    }


def _imitation_terms(
    target_logp: torch.Tensor, target_weights: torch.Tensor
) -> dict[str, torch.Tensor]:
    active = target_weights != 0
    n_w = active.sum().clamp(min=1)
    w = _wide(target_weights.detach())
    per_token = torch.where(active, w * -_wide(target_logp), torch.zeros_like(w))
    return {"l_im": per_token.sum() / n_w, "n_weight_tokens": active.sum()}


def rlmec_loss_terms(
    logp: torch.Tensor,
    ref_logp: torch.Tensor,
    rewards: torch.Tensor,
    target_logp: torch.Tensor | None,
    target_weights: torch.Tensor | None,
    *,
    epsilon: float = DEFAULT_EPSILON,
    imitation_coef: float = DEFAULT_IMITATION_COEF,
    n_response_tokens: torch.Tensor | int | None = None,
) -> dict[str, torch.Tensor]:
    """The loss and its parts, for training and logging.

    ``logp``, ``ref_logp``, ``rewards``: ``[B, T]`` over the sampled tokens ``y`` (reward 0
    at padding). ``target_logp``, ``target_weights``: ``[B, T']`` over the rewrite ``ŷ``
    (weight 0 at padding); both may be ``None`` when ``imitation_coef == 0`` (the
    no-imitation ablation needs no forward pass over ``ŷ``).

    Returns ``loss``, ``l_rl`` and ``l_im`` (with gradient) and the detached diagnostics
    ``clip_fraction`` (share of rewarded tokens whose ratio lies outside ``[1-ε, 1+ε]``),
    ``mean_ratio`` (mean ``ρ`` over rewarded tokens), ``n_reward_tokens``, ``n_weight_tokens``.

    ``n_response_tokens``: divide L_RL by this count (the batch's response tokens) instead
    of the method's ``N_r``; None keeps ``N_r``.
    """
    check_loss_settings(epsilon, imitation_coef)
    _check_pair(logp, ref_logp, "logp and ref_logp")
    _check_pair(logp, rewards, "logp and rewards")
    terms = _rl_terms(logp, ref_logp, rewards, epsilon, n_response_tokens)

    if target_logp is None or target_weights is None:
        if target_logp is not None or target_weights is not None:
            raise ValueError("target_logp and target_weights must be given together")
        if imitation_coef != 0:
            raise ValueError("target_logp and target_weights are required when imitation_coef != 0")
        zero = terms["l_rl"].new_zeros(())
        terms.update(l_im=zero, n_weight_tokens=torch.zeros((), dtype=torch.long))
    else:
        _check_pair(target_logp, target_weights, "target_logp and target_weights")
        terms.update(_imitation_terms(target_logp, target_weights))

    terms["loss"] = terms["l_rl"] + imitation_coef * terms["l_im"]
    return terms


def rlmec_loss(*args: Any, **kwargs: Any) -> torch.Tensor:
    """The scalar RLMEC loss ``L_RL + λ · L_IM``: :func:`rlmec_loss_terms`' ``loss``, with
    its arguments (the five tensors, then ``epsilon`` and ``imitation_coef`` by keyword)."""
    return rlmec_loss_terms(*args, **kwargs)["loss"]
