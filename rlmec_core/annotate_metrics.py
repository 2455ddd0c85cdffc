"""What annotate's rows say about the GRM's rewards: counts, mean rewards, and whether the
most penalised token sits in the teacher's first error step."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from transformers import PreTrainedTokenizerBase

from rlmec_core.editing import EDITED_WEIGHT
from rlmec_core.response_tokens import token_steps
from rlmec_core.rewards import KEEP_THRESHOLD


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def annotation_metrics(
    rows: Sequence[Mapping[str, Any]],
    token_probs: Sequence[Sequence[float]],
    tokenizer: PreTrainedTokenizerBase,
) -> dict[str, float]:
    """Metrics over annotated rows (RL_FEATURES) and the GRM's ``p_t`` of their tokens.

    - counts: ``n_kept``, ``n_kept_correct``, ``n_kept_incorrect``, ``n_response_tokens``;
    - ``mean_reward_{correct,incorrect}_token`` (over all their tokens) and ``_sample``
      (the mean of per-sample means); ``mean_ref_logprob``; ``edited_token_fraction``
      (target tokens of weight 1.0, incorrect samples);
    - reward quality, over kept incorrect samples whose teacher named a step ``k >= 0``
      (``reward_quality_n`` of them): ``reward_quality`` is how often the token with the
      lowest ``p_t`` (the most negative reward before clipping, which ties at -0.1) lies in
      step ``k``; ``reward_quality_first`` how often the first token with ``p_t < 0.5``
      (the first penalised one) does; ``grm_step_agreement`` how often the GRM's step is k.
    """
    if len(rows) != len(token_probs):
        raise ValueError(f"{len(rows)} rows but {len(token_probs)} probability lists")
    correct = [r for r in rows if r["correct"]]
    incorrect = [r for r in rows if not r["correct"]]

    def token_mean(group: list[Mapping[str, Any]]) -> float:
        return _mean([v for r in group for v in r["rewards"]])

    def sample_mean(group: list[Mapping[str, Any]]) -> float:
        return _mean([_mean(r["rewards"]) for r in group])

    hits, first_hits, agree, n_quality = 0, 0, 0, 0
    for row, probs in zip(rows, token_probs, strict=True):
        k = int(row["teacher_error_step"])
        if row["correct"] or k < 0 or not probs:
            continue
        n_quality += 1
        steps = token_steps(tokenizer, row["prediction"], row["response_ids"])
        lowest = min(range(len(probs)), key=probs.__getitem__)
        hits += steps[lowest] == k
        first = next((t for t, p in enumerate(probs) if p < KEEP_THRESHOLD), None)
        first_hits += first is not None and steps[first] == k
        agree += int(row["grm_error_step"]) == k

    edited = [w == EDITED_WEIGHT for r in incorrect for w in r["target_weights"]]
    return {
        "n_kept": float(len(rows)),
        "n_kept_correct": float(len(correct)),
        "n_kept_incorrect": float(len(incorrect)),
        "n_response_tokens": float(sum(len(r["response_ids"]) for r in rows)),
        "mean_reward_correct_token": token_mean(correct),
        "mean_reward_incorrect_token": token_mean(incorrect),
        "mean_reward_correct_sample": sample_mean(correct),
        "mean_reward_incorrect_sample": sample_mean(incorrect),
        "mean_ref_logprob": _mean([v for r in rows for v in r["ref_logprobs"]]),
        "edited_token_fraction": _mean([float(e) for e in edited]),
        "reward_quality_n": float(n_quality),
        "reward_quality": hits / n_quality if n_quality else 0.0,
        "reward_quality_first": first_hits / n_quality if n_quality else 0.0,
        "grm_step_agreement": agree / n_quality if n_quality else 0.0,
    }
