"""Stage 4: annotate every collected sample with token rewards, reference log-probs and
imitation weights for policy training.

Per sample ``y`` of problem ``x`` (gold solution ``s*``, gold answer ``a*``):

a. the GRM rewrites an incorrect ``y`` into ``ŷ``; a rewrite that misses ``a*`` (or a GRM
   that calls ``y`` correct, or names no step) drops the sample. A correct ``y`` is its own
   rewrite, error step -1;
b. ``p_t = P_GRM(y_t | rewrite_prompt(x, s*, y), y_<t)`` for every token of ``y`` + EOS,
   turned into rewards by ``rewards.token_rewards``;
c. ``log π_ref(y_t | policy prompt, y_<t)`` under the initial policy;
d. imitation weights over ``ŷ`` + EOS from the minimum-edit alignment to ``y`` + EOS;
e. correct samples of a problem that differ only in spaces, newlines and full stops are
   kept once.

Prompt and response are tokenised separately and concatenated, exactly as
``trainers.sft.tokenize_example`` does (``response_tokens.split_tokenize``), so the response
ids scored here are the ones the policy is trained on. Both models are run through
``response_logprobs.batched_response_logprobs``; ``annotate_metrics`` says what the rows
show of the rewards. (The ``no_token_reward`` ablation's instance-level rewards are the
trainer's: ``trainers.rlmec_trainer``.)
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlmec_core.annotate_metrics import annotation_metrics
from rlmec_core.config import ErrorStepSource
from rlmec_core.data.schema import RL_FEATURES
from rlmec_core.editing import KEPT_WEIGHT, minimum_edit_weights
from rlmec_core.grm import GrmVerdict, first_unkept_step, grm_rewrites, rewrite_reaches_gold
from rlmec_core.grm_data import rewrite_prompt
from rlmec_core.logprobs import DEFAULT_CHUNK_SIZE
from rlmec_core.policy_prompt import format_policy_prompt
from rlmec_core.prompt_format import PLAIN, PromptStyle
from rlmec_core.response_logprobs import batched_response_logprobs
from rlmec_core.response_tokens import split_tokenize, token_steps
from rlmec_core.rewards import token_rewards
from rlmec_core.verification import Verifier

_SAMPLE_FIELDS = (
    "sample_id",
    "problem_id",
    "question",
    "gold_solution",
    "gold_answer",
    "prediction",
    "correct",
    "error_step",
)
# What "the same text" means for correct duplicates: spaces, newlines, full stops ignored.
_DEDUP_IGNORED = re.compile(r"[\s.]")
_MISS_REASONS = ("unparsed", "judged_correct", "step_out_of_range", "wrong_answer", "unverified")


# ---------------------------------------------------------------- selection (a, e)


def dedup_key(text: str) -> str:
    """The text with spaces, newlines and full stops removed (all whitespace, in fact)."""
    return _DEDUP_IGNORED.sub("", text)


def dedup_correct(rows: Sequence[Mapping[str, Any]]) -> tuple[list[Mapping[str, Any]], int]:
    """Keep the first of the correct samples of a problem sharing a ``dedup_key``.

    Incorrect samples are never merged: each carries its own error. Returns the rows in
    input order and how many were dropped.
    """
    seen: set[tuple[str, str]] = set()
    kept = []
    for row in rows:
        if row["correct"]:
            key = (row["problem_id"], dedup_key(row["prediction"]))
            if key in seen:
                continue
            seen.add(key)
        kept.append(row)
    return kept, len(rows) - len(kept)


def _miss_reason(verdict: GrmVerdict, gold_answer: str) -> str | None:
    """Why the GRM's verdict cannot annotate an incorrect sample, or None if it can."""
    if verdict.error_step is None:
        return "unparsed"
    if verdict.error_step == -1:
        return "judged_correct"
    if verdict.text is None:
        return "step_out_of_range"
    if not rewrite_reaches_gold(verdict, gold_answer):
        return "wrong_answer"
    return None


# ---------------------------------------------------------------- the stage


@dataclass
class _Pending:
    """A selected sample on its way to becoming an RL_FEATURES row."""

    row: Mapping[str, Any]
    rewrite: str
    grm_error_step: int
    prompt_ids: list[int]
    grm_prompt_ids: list[int]
    response_ids: list[int]
    target_ids: list[int]


def _check_samples(rows: Sequence[Mapping[str, Any]]) -> None:
    for index, row in enumerate(rows):
        missing = [name for name in _SAMPLE_FIELDS if name not in row]
        if missing:
            raise ValueError(f"sample {index} lacks field {missing[0]!r} (DISTILLED_FEATURES)")


def grm_scoring_ids(
    tokenizer: PreTrainedTokenizerBase, row: Mapping[str, Any], style: PromptStyle = PLAIN
) -> tuple[list[int], list[int]]:
    """``(rewrite prompt ids, response ids + end token)``: what the GRM scores ``y`` after."""
    y = row["prediction"]
    prompt = rewrite_prompt(row["question"], row["gold_solution"], y, style)
    return split_tokenize(tokenizer, prompt, y, style.response_end(tokenizer))


def likelihood_error_steps(
    grm_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[Mapping[str, Any]],
    *,
    batch_size: int,
    style: PromptStyle | None = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    progress: bool = True,
) -> tuple[list[int], list[list[float]]]:
    """The GRM's first error step of each row read off its likelihoods (``first_unkept_step``
    over ``P_GRM(y_t | rewrite prompt, y_<t)``), and those log-probs, the ones annotate's
    token rewards are made of."""
    style = style or PLAIN
    pairs = [grm_scoring_ids(tokenizer, row, style) for row in rows]
    logprobs = batched_response_logprobs(
        grm_model,
        [prompt for prompt, _ in pairs],
        [response for _, response in pairs],
        pad_id=tokenizer.pad_token_id,
        batch_size=batch_size,
        chunk_size=chunk_size,
        progress=progress,
        desc="grm error step (likelihood)",
    )
    steps = [
        first_unkept_step(
            [math.exp(v) for v in lp], token_steps(tokenizer, row["prediction"], response)
        )
        for row, (_, response), lp in zip(rows, pairs, logprobs, strict=True)
    ]
    return steps, logprobs


def _prepare(
    tokenizer: PreTrainedTokenizerBase,
    row: Mapping[str, Any],
    rewrite: str,
    step: int,
    style: PromptStyle = PLAIN,
) -> _Pending:
    y = row["prediction"]
    end = style.response_end(tokenizer)
    prompt_ids, response_ids = split_tokenize(
        tokenizer, format_policy_prompt(row["question"], style), y, end
    )
    grm_prompt_ids, grm_response_ids = grm_scoring_ids(tokenizer, row, style)
    if grm_response_ids != response_ids:  # separate tokenisation makes this impossible
        raise AssertionError(f"sample {row['sample_id']!r}: response ids depend on the prompt")
    if rewrite == y:
        target_ids = response_ids
    else:  # the response side of tokenize_example: no special tokens, then EOS
        target_ids = [*tokenizer(rewrite, add_special_tokens=False)["input_ids"], end]
    return _Pending(row, rewrite, step, prompt_ids, grm_prompt_ids, response_ids, target_ids)


def rows_for_grm(samples: Sequence[Mapping[str, Any]] | Dataset) -> list[Mapping[str, Any]]:
    """The rows ``annotate_samples`` has the GRM rewrite: the incorrect samples left after
    de-duplication, in input order."""
    rows = list(samples)
    _check_samples(rows)
    return [row for row in dedup_correct(rows)[0] if not row["correct"]]


def annotate_samples(
    samples: Sequence[Mapping[str, Any]] | Dataset,
    grm_model: PreTrainedModel,
    ref_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    *,
    batch_size: int,
    max_new_tokens: int,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    verifier: Verifier | None = None,
    progress: bool = True,
    verdicts: Sequence[GrmVerdict] | None = None,
    scored: Mapping[str, list[float]] | None = None,
    style: PromptStyle | None = None,
    error_step: ErrorStepSource = "generated",
) -> tuple[Dataset, dict[str, float]]:
    """Stage 4 over stage-2 rows (DISTILLED_FEATURES): RL_FEATURES rows and metrics.

    ``style``: the prompts' format (``rlmec_core.prompt_format``; default plain) for the
    GRM's prompts and the policy's, and the token that ends every response.

    A GRM rewrite is kept when it names a wrong step, reaches the gold answer and, where
    ``verifier`` applies, every step checks (else the sample is dropped as "unverified").
    Rows keep the input order. See ``annotate_metrics.annotation_metrics`` for the metrics.

    ``verdicts``: the GRM's verdicts on ``rows_for_grm(samples)``, when they were generated
    elsewhere (a generation server); else ``grm_model`` makes them here, its first error
    step per ``error_step`` (``config.TrainGrmSection``): generated, or read off the
    likelihoods (``likelihood_error_steps``), whose pass then also gives every row's token
    rewards. ``scored``: with ``verdicts``, the GRM's log-probs by sample id that such a
    pass already made (of the incorrect rows), not computed again. Rewards and reference
    log-probs are always this process's HF forward passes.
    """
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError("tokenizer needs pad and eos tokens; load it with load_policy")
    started = time.perf_counter()
    rows = list(samples)
    _check_samples(rows)
    unique, n_dedup = dedup_correct(rows)
    style = style or PLAIN
    scoring = {"batch_size": batch_size, "chunk_size": chunk_size, "progress": progress}

    # a. Only incorrect samples need the GRM: a correct y is its own rewrite.
    incorrect = [row for row in unique if not row["correct"]]
    # sample_id -> the GRM's log-probs of its tokens, where a likelihood pass made them
    known: dict[str, list[float]] = dict(scored or {})
    if verdicts is None:
        verdicts, known = _grm_verdicts(
            grm_model, tokenizer, unique, style, error_step, max_new_tokens, **scoring
        )
    if len(verdicts) != len(incorrect):
        raise ValueError(f"{len(verdicts)} GRM verdicts for {len(incorrect)} incorrect samples")
    pending, misses = _select(tokenizer, unique, verdicts, verifier, style)

    # b, c. One batched pass of each model over the same response ids.
    grm_logprobs, ref_logprobs = _score(grm_model, ref_model, tokenizer, pending, known, scoring)
    out_rows, probs = [], []
    for p, grm_lp, ref_lp in zip(pending, grm_logprobs, ref_logprobs, strict=True):
        token_probs = [min(1.0, math.exp(v)) for v in grm_lp]
        probs.append(token_probs)
        out_rows.append(_rl_row(p, token_probs, ref_lp))

    columns = {name: [r[name] for r in out_rows] for name in RL_FEATURES}
    dataset = Dataset.from_dict(columns, features=RL_FEATURES)
    metrics = annotation_metrics(out_rows, probs, tokenizer)
    dropped = sum(misses.values())
    metrics.update(
        {
            "n_samples_in": float(len(rows)),
            "n_dedup_dropped": float(n_dedup),
            "n_grm_judged": float(len(incorrect)),
            "n_dropped_grm_miss": float(dropped),
            **{f"n_grm_miss_{reason}": float(misses.get(reason, 0)) for reason in _MISS_REASONS},
            "grm_keep_rate": (len(incorrect) - dropped) / len(incorrect) if incorrect else 0.0,
            "seconds": time.perf_counter() - started,
        }
    )
    return dataset, metrics


def _grm_verdicts(
    grm_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    unique: list[Mapping[str, Any]],
    style: PromptStyle,
    error_step: ErrorStepSource,
    max_new_tokens: int,
    *,
    batch_size: int,
    chunk_size: int,
    progress: bool,
) -> tuple[list[GrmVerdict], dict[str, list[float]]]:
    """The GRM's verdicts on the incorrect rows, made here; with the likelihood verdict also
    every row's GRM log-probs by sample id (the pass that named the steps), else none."""
    incorrect = [row for row in unique if not row["correct"]]
    steps, scored = None, {}
    if error_step == "likelihood":  # one pass scores every row: verdicts, then rewards
        steps, logprobs = likelihood_error_steps(
            grm_model,
            tokenizer,
            unique,
            batch_size=batch_size,
            style=style,
            chunk_size=chunk_size,
            progress=progress,
        )
        scored = {row["sample_id"]: lp for row, lp in zip(unique, logprobs, strict=True)}
        steps = [k for row, k in zip(unique, steps, strict=True) if not row["correct"]]
    verdicts = grm_rewrites(
        grm_model,
        tokenizer,
        incorrect,
        batch_size=batch_size,
        max_new_tokens=max_new_tokens,
        progress=progress,
        style=style,
        error_steps=steps,
    )
    return verdicts, scored


def _select(
    tokenizer: PreTrainedTokenizerBase,
    unique: list[Mapping[str, Any]],
    verdicts: Sequence[GrmVerdict],
    verifier: Verifier | None,
    style: PromptStyle,
) -> tuple[list[_Pending], dict[str, int]]:
    """The rows to annotate (every correct one; an incorrect one whose GRM verdict holds),
    tokenised, and how many incorrect rows were dropped, by reason."""
    judged = iter(verdicts)
    misses: dict[str, int] = {}
    pending: list[_Pending] = []
    for row in unique:
        if row["correct"]:
            pending.append(_prepare(tokenizer, row, row["prediction"], -1, style))
            continue
        verdict = next(judged)
        reason = _miss_reason(verdict, row["gold_answer"])
        if reason is None and verifier is not None and verifier.check(row, verdict.text) is False:
            reason = "unverified"
        if reason is not None:
            misses[reason] = misses.get(reason, 0) + 1
            continue
        pending.append(_prepare(tokenizer, row, verdict.text, verdict.error_step, style))
    return pending, misses


def _score(
    grm_model: PreTrainedModel,
    ref_model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    pending: list[_Pending],
    scored: dict[str, list[float]],
    scoring: dict[str, Any],
) -> tuple[list[list[float]], list[list[float]]]:
    """The GRM's log-probs (those not ``scored`` already) and the reference policy's, of
    every pending row's response ids."""
    common = {"pad_id": tokenizer.pad_token_id, **scoring}
    unscored = [p for p in pending if p.row["sample_id"] not in scored]
    fresh = batched_response_logprobs(
        grm_model,
        [p.grm_prompt_ids for p in unscored],
        [p.response_ids for p in unscored],
        desc="grm rewards",
        **common,
    )
    scored = {**scored, **{p.row["sample_id"]: lp for p, lp in zip(unscored, fresh, strict=True)}}
    ref_logprobs = batched_response_logprobs(
        ref_model,
        [p.prompt_ids for p in pending],
        [p.response_ids for p in pending],
        desc="ref log-probs",
        **common,
    )
    return [scored[p.row["sample_id"]] for p in pending], ref_logprobs


def _rl_row(p: _Pending, token_probs: list[float], ref_logprobs: list[float]) -> dict[str, Any]:
    """One RL_FEATURES row; d. a correct sample imitates itself evenly."""
    correct = bool(p.row["correct"])
    if correct:
        weights = [KEPT_WEIGHT] * len(p.target_ids)
    else:
        weights = minimum_edit_weights(p.response_ids, p.target_ids)
    return {
        "sample_id": p.row["sample_id"],
        "problem_id": p.row["problem_id"],
        "correct": correct,
        "prediction": p.row["prediction"],
        "rewrite": p.rewrite,
        "grm_error_step": p.grm_error_step,
        "teacher_error_step": int(p.row["error_step"]),
        "prompt_ids": p.prompt_ids,
        "response_ids": p.response_ids,
        "rewards": token_rewards(token_probs, correct).tolist(),
        "ref_logprobs": ref_logprobs,
        "target_ids": p.target_ids,
        "target_weights": weights,
    }
