"""Token rewards from GRM probabilities (stage 4b) and the instance-level ablation."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlmec_core.rewards import instance_rewards, token_rewards

probs = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)


def test_correct_solution_rewards_confident_tokens():
    # p - 0.5 = [-0.5, -0.1, 0.0, 0.2, 0.5] -> clip to [0, 0.5] -> [0, 0, 0, 0.2, 0.5]
    r = token_rewards([0.0, 0.4, 0.5, 0.7, 1.0], correct=True)
    assert torch.allclose(r, torch.tensor([0.0, 0.0, 0.0, 0.2, 0.5]))


def test_incorrect_solution_penalises_unlikely_tokens_by_at_most_point_one():
    # p - 0.5 = [-0.5, -0.45, -0.05, 0.0, 0.3] -> clip to [-0.1, 0] -> [-0.1, -0.1, -0.05, 0, 0]
    r = token_rewards([0.0, 0.05, 0.45, 0.5, 0.8], correct=False)
    assert torch.allclose(r, torch.tensor([-0.1, -0.1, -0.05, 0.0, 0.0]))


def test_tensor_input_keeps_shape_and_dtype_and_has_no_grad():
    p = torch.tensor([[0.9, 0.1], [0.6, 0.3]], dtype=torch.float64, requires_grad=True)
    r = token_rewards(p, correct=True)
    assert r.shape == (2, 2)
    assert r.dtype == torch.float64
    assert not r.requires_grad


def test_probabilities_outside_unit_interval_are_rejected():
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        token_rewards([0.2, 1.5], correct=True)
    with pytest.raises(ValueError, match="NaN"):
        token_rewards([float("nan")], correct=False)


def test_instance_rewards():
    assert torch.equal(instance_rewards(3, correct=True), torch.full((3,), 0.5))
    assert torch.equal(instance_rewards(2, correct=False), torch.full((2,), -0.1))
    assert instance_rewards(0, correct=True).shape == (0,)
    with pytest.raises(ValueError, match="length"):
        instance_rewards(-1, correct=True)


@settings(max_examples=100, deadline=None)
@given(st.lists(probs, min_size=1, max_size=20), st.booleans())
def test_rewards_lie_within_clip_bounds(values, correct):
    r = token_rewards(values, correct=correct)
    low, high = (0.0, 0.5) if correct else (-0.1, 0.0)
    assert bool(((r >= low - 1e-7) & (r <= high + 1e-7)).all())


@settings(max_examples=100, deadline=None)
@given(probs, probs, st.booleans())
def test_rewards_are_monotone_in_probability(p, q, correct):
    lo, hi = sorted((p, q))
    r = token_rewards([lo, hi], correct=correct)
    assert r[0] <= r[1]
