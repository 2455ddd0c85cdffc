"""Confidence intervals and paired comparisons of accuracies measured on the same problems.

Every policy is evaluated on the same problems, so two policies are compared problem by
problem (a *paired* comparison), which is far more sensitive than comparing two independent
accuracies. Several training seeds of one variant are *pooled*: each problem's score is the
share of seeds that solved it, and problems (not seeds) are resampled, because the problems
are the sample the claim is about.

- ``accuracy_interval``: mean accuracy with a percentile bootstrap interval over problems;
- ``paired_difference``: mean difference of two policies with a paired bootstrap interval
  and a two-sided sign-flip permutation p-value;
- ``mcnemar_p``: the exact McNemar test for two single-seed evaluations (known-answer tests).

Everything is seeded, so a table is reproducible to the last digit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

CONFIDENCE = 0.95
RESAMPLES = 10_000
_SEED = 20240112  # any fixed number: the same data always gives the same interval
_CHUNK = 1_000  # resamples per vectorised block (bounded memory for large sets)


@dataclass(frozen=True)
class Estimate:
    """A point estimate with its confidence interval (``low``, ``high``) and, for a
    difference, the two-sided p-value of "no difference"; ``n`` problems."""

    value: float
    low: float
    high: float
    n: int
    p_value: float | None = None

    def to_json(self) -> dict[str, float | int | None]:
        return asdict(self)


def per_problem_scores(correct: Sequence[Sequence[bool]] | Sequence[bool]) -> np.ndarray:
    """Each problem's share of seeds that solved it, from ``[seeds][problems]`` booleans
    (or one seed's ``[problems]``)."""
    matrix = np.asarray(correct, dtype=float)
    if matrix.ndim == 1:
        matrix = matrix[None, :]
    if matrix.ndim != 2 or matrix.shape[1] == 0:
        raise ValueError(
            f"need [seeds][problems] outcomes for at least one problem, got {matrix.shape}"
        )
    if not np.isin(matrix, (0.0, 1.0)).all():
        raise ValueError("outcomes must be booleans (1 solved, 0 not)")
    return matrix.mean(axis=0)


def _bootstrap_means(scores: np.ndarray, resamples: int, seed: int) -> np.ndarray:
    """Means of ``resamples`` resamples of the problems (scipy's bootstrap distribution)."""
    if scores.shape[0] == 1:  # scipy needs two problems; one resamples only to itself
        return np.repeat(scores, resamples)
    from scipy import stats  # here, not at import: scipy.stats takes ~0.5 s to load

    return stats.bootstrap(
        (scores,),
        np.mean,
        n_resamples=resamples,
        batch=_CHUNK,
        method="percentile",
        rng=np.random.default_rng(seed),
    ).bootstrap_distribution


def _interval(samples: np.ndarray, confidence: float) -> tuple[float, float]:
    # np.quantile, not scipy's interval: scipy.stats.quantile rounds some bounds differently
    # in the last bit, and published tables must reproduce to the last digit.
    tail = (1 - confidence) / 2
    low, high = np.quantile(samples, [tail, 1 - tail])
    return float(low), float(high)


def accuracy_interval(
    correct: Sequence[Sequence[bool]] | Sequence[bool],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = _SEED,
) -> Estimate:
    """Mean accuracy over problems (seeds pooled) and its percentile bootstrap interval."""
    scores = per_problem_scores(correct)
    low, high = _interval(_bootstrap_means(scores, resamples, seed), confidence)
    return Estimate(float(scores.mean()), low, high, int(scores.shape[0]))


def paired_difference(
    a: Sequence[Sequence[bool]] | Sequence[bool],
    b: Sequence[Sequence[bool]] | Sequence[bool],
    *,
    confidence: float = CONFIDENCE,
    resamples: int = RESAMPLES,
    seed: int = _SEED,
) -> Estimate:
    """Accuracy of ``a`` minus accuracy of ``b`` on the same problems, seeds pooled.

    The interval resamples problems with their paired scores; the p-value is the share of
    random sign flips of the per-problem differences whose mean is at least as far from 0
    as the observed one (two-sided, with the +1 correction so it is never exactly 0).
    """
    score_a, score_b = per_problem_scores(a), per_problem_scores(b)
    if score_a.shape != score_b.shape:
        raise ValueError(
            f"a covers {score_a.shape[0]} problems and b {score_b.shape[0]}; "
            "a paired comparison needs the same problems"
        )
    diff = score_a - score_b
    low, high = _interval(_bootstrap_means(diff, resamples, seed), confidence)
    observed = abs(diff.mean())
    # Not scipy.stats.permutation_test: it draws its sign flips differently (and goes exact
    # below 14 problems), which would move published p-values.
    rng = np.random.default_rng(seed + 1)
    extreme = 0
    for start in range(0, resamples, _CHUNK):
        size = min(_CHUNK, resamples - start)
        signs = rng.choice((-1.0, 1.0), size=(size, diff.shape[0]))
        extreme += int((np.abs((signs * diff).mean(axis=1)) >= observed - 1e-12).sum())
    p_value = (extreme + 1) / (resamples + 1)
    return Estimate(float(diff.mean()), low, high, int(diff.shape[0]), p_value)


def mcnemar_p(a: Sequence[bool], b: Sequence[bool]) -> float:
    """Exact two-sided McNemar p-value for two single evaluations on the same problems:
    a binomial test of the discordant pairs (``a`` right and ``b`` wrong, or the reverse)."""
    if len(a) != len(b):
        raise ValueError(f"a has {len(a)} outcomes and b {len(b)}; need the same problems")
    only_a = sum(bool(x) and not bool(y) for x, y in zip(a, b, strict=True))
    only_b = sum(bool(y) and not bool(x) for x, y in zip(a, b, strict=True))
    if only_a + only_b == 0:
        return 1.0
    from scipy import stats  # here, not at import: scipy.stats takes ~0.5 s to load

    return float(stats.binomtest(min(only_a, only_b), only_a + only_b).pvalue)
