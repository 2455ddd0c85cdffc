"""Confidence intervals and paired comparisons, checked against answers known in closed form."""

from __future__ import annotations

import math

import numpy as np
import pytest

from rlmec_core.statistics import (
    accuracy_interval,
    mcnemar_p,
    paired_difference,
    per_problem_scores,
)


def test_all_right_or_all_wrong_has_a_degenerate_interval():
    assert accuracy_interval([True] * 50).to_json() == {
        "value": 1.0, "low": 1.0, "high": 1.0, "n": 50, "p_value": None,
    }  # fmt: skip
    estimate = accuracy_interval([False] * 50)
    assert (estimate.value, estimate.low, estimate.high) == (0.0, 0.0, 0.0)


@pytest.mark.parametrize(("n", "p"), [(400, 0.3), (1200, 0.5), (1000, 0.1)])
def test_bootstrap_interval_matches_the_normal_approximation(n: int, p: float):
    # For large n the percentile bootstrap of a proportion is p ± 1.96 sqrt(p(1-p)/n).
    outcomes = [i < round(n * p) for i in range(n)]
    estimate = accuracy_interval(outcomes)
    half = 1.96 * math.sqrt(p * (1 - p) / n)
    assert estimate.value == pytest.approx(p)
    assert estimate.low == pytest.approx(p - half, abs=0.15 * half)
    assert estimate.high == pytest.approx(p + half, abs=0.15 * half)


def test_seeds_are_pooled_per_problem():
    # Problem scores are the share of seeds that solved them; the problems are resampled.
    seeds = [[1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0]]
    assert per_problem_scores(seeds).tolist() == pytest.approx([1.0, 2 / 3, 1 / 3, 0.0])
    assert accuracy_interval(seeds).value == pytest.approx(0.5)
    assert accuracy_interval(seeds).n == 4


def test_paired_difference_of_identical_policies_is_zero_with_p_one():
    outcomes = [i % 3 == 0 for i in range(300)]
    diff = paired_difference(outcomes, outcomes)
    assert (diff.value, diff.low, diff.high) == (0.0, 0.0, 0.0)
    assert diff.p_value == 1.0


def test_paired_difference_known_case():
    # b is a; a additionally solves 60 problems b misses, and b 20 that a misses: +40/1000.
    n = 1000
    b = np.zeros(n, dtype=bool)
    b[:300] = True
    a = b.copy()
    a[300:360] = True
    a[:20] = False
    diff = paired_difference(a.tolist(), b.tolist())
    assert diff.value == pytest.approx(0.04)
    # Paired standard error: sqrt(discordant / n^2 - mean^2 / n) ≈ sqrt(80/1e6 - 1.6e-6).
    se = math.sqrt((80 / n - 0.04**2) / n)
    assert diff.low == pytest.approx(0.04 - 1.96 * se, abs=0.2 * se)
    assert diff.high == pytest.approx(0.04 + 1.96 * se, abs=0.2 * se)
    assert diff.low > 0
    # The sign-flip test agrees with the exact McNemar test on this many discordant pairs.
    assert diff.p_value == pytest.approx(mcnemar_p(a.tolist(), b.tolist()), abs=2e-3)
    assert diff.p_value < 0.001


def test_mcnemar_exact_values():
    # 6 discordant pairs, all one way: 2 * (1/2)^6.
    assert mcnemar_p([True] * 6 + [False] * 4, [False] * 10) == pytest.approx(2 / 64)
    # 3 vs 1 discordant pairs: 2 * P(X <= 1), X ~ Bin(4, 1/2) = 2 * 5/16.
    a = [True, True, True, False, True]
    b = [False, False, False, True, True]
    assert mcnemar_p(a, b) == pytest.approx(10 / 16)
    assert mcnemar_p([True, False], [True, False]) == 1.0


def test_results_are_reproducible_and_inputs_checked():
    outcomes = [i % 7 < 3 for i in range(500)]
    assert accuracy_interval(outcomes) == accuracy_interval(outcomes)
    with pytest.raises(ValueError, match="same problems"):
        paired_difference([True, False], [True])
    with pytest.raises(ValueError, match="at least one problem"):
        accuracy_interval([])
    with pytest.raises(ValueError, match="booleans"):
        accuracy_interval([0.5, 1.0])
    with pytest.raises(ValueError, match="same problems"):
        mcnemar_p([True], [True, False])


def test_one_problem_resamples_to_itself():
    assert accuracy_interval([True]).to_json() == {
        "value": 1.0, "low": 1.0, "high": 1.0, "n": 1, "p_value": None,
    }  # fmt: skip
    diff = paired_difference([[True], [True]], [[False], [True]])
    assert (diff.value, diff.low, diff.high, diff.n) == (0.5, 0.5, 0.5, 1)
