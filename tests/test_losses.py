"""The stage-5 objective: clipped token-level policy gradient + weighted imitation."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlmec_core.losses import rlmec_loss, rlmec_loss_terms


def _hand_batch(requires_grad: bool = False) -> dict[str, torch.Tensor]:
    # Row 0: two sampled tokens + one padded slot; row 1: one token + two padded slots.
    logp = torch.tensor([[-1.0, -2.0, -7.0], [-2.5, 0.0, 0.0]], requires_grad=requires_grad)
    ref = torch.tensor([[-1.5, -2.0, 0.0], [-2.0, 0.0, 0.0]], requires_grad=requires_grad)
    rewards = torch.tensor([[0.2, -0.05, 0.0], [-0.1, 0.0, 0.0]])
    target_logp = torch.tensor([[-0.5, -1.0, -3.0], [-2.0, 0.0, 0.0]], requires_grad=requires_grad)
    weights = torch.tensor([[0.5, 1.0, 0.5], [1.0, 0.0, 0.0]])
    return {
        "logp": logp,
        "ref_logp": ref,
        "rewards": rewards,
        "target_logp": target_logp,
        "target_weights": weights,
    }


def test_hand_computed_terms():
    terms = rlmec_loss_terms(**_hand_batch())
    # ρ = exp(logp - ref) on rewarded tokens: e^0.5 = 1.6487, e^0 = 1, e^-0.5 = 0.6065.
    # A1 = min(1.6487*0.2, 1.3*0.2) = 0.26          (positive reward, ratio clipped above)
    # A2 = min(1*-0.05, 1*-0.05)     = -0.05
    # A3 = min(0.6065*-0.1, 0.7*-0.1) = -0.07        (negative reward, ratio clipped below)
    # Σ A·logp = 0.26*-1 + -0.05*-2 + -0.07*-2.5 = -0.26 + 0.1 + 0.175 = 0.015; N_r = 3
    # L_RL = -0.015 / 3 = -0.005
    assert terms["l_rl"].item() == pytest.approx(-0.005, abs=1e-6)
    # Σ w·(-logp̂) = 0.5*0.5 + 1*1 + 0.5*3 + 1*2 = 4.75; N_w = 4 -> L_IM = 1.1875
    assert terms["l_im"].item() == pytest.approx(1.1875, abs=1e-6)
    assert terms["loss"].item() == pytest.approx(-0.005 + 1.1875, abs=1e-6)
    # Two of the three rewarded ratios lie outside [0.7, 1.3].
    assert terms["clip_fraction"].item() == pytest.approx(2 / 3, abs=1e-6)
    mean_ratio = (math.exp(0.5) + 1.0 + math.exp(-0.5)) / 3
    assert terms["mean_ratio"].item() == pytest.approx(mean_ratio, abs=1e-6)
    assert terms["n_reward_tokens"].item() == 3
    assert terms["n_weight_tokens"].item() == 4


def test_response_token_normaliser_divides_l_rl_by_the_given_count():
    # As if row 0's third slot were a real token with reward 0: 4 response tokens, N_r = 3.
    batch = _hand_batch()
    spec = rlmec_loss_terms(**batch)
    terms = rlmec_loss_terms(**batch, n_response_tokens=4)
    assert terms["l_rl"].item() == pytest.approx(-0.015 / 4, abs=1e-7)
    assert terms["l_im"].item() == pytest.approx(spec["l_im"].item())  # L_IM untouched
    assert terms["n_reward_tokens"].item() == 3  # the diagnostics stay per rewarded token
    assert terms["clip_fraction"].item() == pytest.approx(spec["clip_fraction"].item())
    # Equal to N_r, it is the method's loss.
    assert rlmec_loss(**batch, n_response_tokens=3).item() == pytest.approx(spec["loss"].item())


def test_scalar_loss_is_the_terms_loss_and_lambda_scales_imitation():
    batch = _hand_batch()
    assert rlmec_loss(**batch).item() == pytest.approx(1.1825, abs=1e-6)
    # λ = 0.5: -0.005 + 0.5 * 1.1875 = 0.58875
    assert rlmec_loss(**batch, imitation_coef=0.5).item() == pytest.approx(0.58875, abs=1e-6)
    # ε = 0.7: A1 = min(0.32974, 0.34) = 0.32974, A3 = min(-0.06065, -0.03) = -0.06065
    # L_RL = -(0.32974*-1 + 0.1 + -0.06065*-2.5) / 3
    a1, a3 = 0.2 * math.exp(0.5), -0.1 * math.exp(-0.5)
    expected = -(a1 * -1 + 0.1 + a3 * -2.5) / 3 + 1.1875
    assert rlmec_loss(**batch, epsilon=0.7).item() == pytest.approx(expected, abs=1e-6)


def test_gradients_flow_through_logp_only():
    batch = _hand_batch(requires_grad=True)
    rlmec_loss(**batch).backward()
    # dL/dlogp = -A / N_r on rewarded tokens, 0 on padding.
    expected = torch.tensor([[-0.26, 0.05, 0.0], [0.07, 0.0, 0.0]]) / 3
    assert torch.allclose(batch["logp"].grad, expected, atol=1e-6)
    # dL/dlogp̂ = -λ w / N_w.
    assert torch.allclose(batch["target_logp"].grad, -batch["target_weights"] / 4, atol=1e-7)
    # ρ is a constant: nothing reaches the reference log-probs.
    assert batch["ref_logp"].grad is None or not batch["ref_logp"].grad.any()


def test_all_zero_rewards_and_weights_are_guarded():
    z = torch.zeros(2, 4)
    terms = rlmec_loss_terms(z, z, z, z, z)
    for key in ("loss", "l_rl", "l_im", "clip_fraction", "mean_ratio"):
        assert torch.isfinite(terms[key]) and terms[key].item() == 0.0


def test_garbage_at_padding_does_not_reach_the_loss():
    batch = _hand_batch(requires_grad=True)
    with torch.no_grad():
        batch["logp"][0, 2] = float("-inf")
        batch["target_logp"][1, 2] = float("-inf")
    terms = rlmec_loss_terms(**batch)
    assert terms["loss"].item() == pytest.approx(1.1825, abs=1e-6)
    terms["loss"].backward()
    assert torch.isfinite(batch["logp"].grad).all()
    assert torch.isfinite(batch["target_logp"].grad).all()


def test_imitation_can_be_switched_off_without_targets():
    batch = _hand_batch()
    batch.update(target_logp=None, target_weights=None)
    terms = rlmec_loss_terms(**batch, imitation_coef=0.0)
    assert terms["loss"].item() == pytest.approx(-0.005, abs=1e-6)
    assert terms["l_im"].item() == 0.0
    with pytest.raises(ValueError, match="imitation_coef"):
        rlmec_loss_terms(**batch)


def test_bad_arguments_are_rejected():
    batch = _hand_batch()
    with pytest.raises(ValueError, match="logp and rewards"):
        rlmec_loss_terms(**{**batch, "rewards": torch.zeros(2, 2)})
    with pytest.raises(ValueError, match="target_logp and target_weights"):
        rlmec_loss_terms(**{**batch, "target_weights": torch.zeros(3)})
    with pytest.raises(ValueError, match="epsilon"):
        rlmec_loss_terms(**batch, epsilon=1.5)


@st.composite
def _batches(draw):
    b, t, t2 = draw(st.integers(1, 3)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    seed = draw(st.integers(0, 2**31 - 1))
    g = torch.Generator().manual_seed(seed)
    logp = -torch.rand(b, t, generator=g, dtype=torch.float64) * 5
    ref = logp + (torch.rand(b, t, generator=g, dtype=torch.float64) - 0.5) * 2
    rewards = (torch.rand(b, t, generator=g, dtype=torch.float64) - 0.3) * 0.6
    rewards[torch.rand(b, t, generator=g) < draw(st.floats(0, 1))] = 0.0
    target_logp = -torch.rand(b, t2, generator=g, dtype=torch.float64) * 5
    weights = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)[
        torch.randint(0, 3, (b, t2), generator=g)
    ]
    eps = draw(st.floats(0.05, 0.9))
    lam = draw(st.floats(0.0, 2.0))
    n_response = draw(st.one_of(st.none(), st.integers(0, b * t)))
    return logp, ref, rewards, target_logp, weights, eps, lam, n_response


@settings(max_examples=80, deadline=None)
@given(_batches())
def test_gradient_matches_the_formula(batch):
    logp, ref, rewards, target_logp, weights, eps, lam, n_response = batch
    logp.requires_grad_(True)
    target_logp.requires_grad_(True)
    loss = rlmec_loss(
        logp,
        ref,
        rewards,
        target_logp,
        weights,
        epsilon=eps,
        imitation_coef=lam,
        n_response_tokens=n_response,
    )
    assert torch.isfinite(loss)
    loss.backward()

    ratio = torch.exp(logp.detach() - ref)
    advantage = torch.minimum(ratio * rewards, ratio.clamp(1 - eps, 1 + eps) * rewards)
    n_r = max(int((rewards != 0).sum()) if n_response is None else n_response, 1)
    n_w = max(int((weights != 0).sum()), 1)
    assert torch.allclose(logp.grad.double(), -advantage / n_r, atol=1e-6)
    assert torch.allclose(target_logp.grad.double(), -lam * weights / n_w, atol=1e-6)
    expected = (
        -(advantage * logp.detach()).sum() / n_r
        + lam * (weights * -target_logp.detach()).sum() / n_w
    )
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
