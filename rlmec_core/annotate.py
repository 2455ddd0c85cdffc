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
``trainers.sft.tokenize_example`` does, so the response ids scored here are the ones the
policy is trained on. Both models are run over padded, length-sorted batches through the
lean target-token log-prob functions of ``rlmec_core.logprobs``.
"""

from __future__ import annotations

import math
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlmec_core.config import ErrorStepSource
from rlmec_core.data.schema import RL_FEATURES
from rlmec_core.editing import EDITED_WEIGHT, KEPT_WEIGHT, minimum_edit_weights
from rlmec_core.grm import GrmVerdict, first_unkept_step, grm_rewrites, rewrite_reaches_gold
from rlmec_core.grm_data import rewrite_prompt
from rlmec_core.logprobs import (
    DEFAULT_CHUNK_SIZE,
    prefix_cache,
    right_padded_response_logprobs,
    supports_prefix_cache,
)
from rlmec_core.policy_prompt import format_policy_prompt
from rlmec_core.progress import Progress
from rlmec_core.prompt_format import PLAIN, PromptStyle
from rlmec_core.rewards import KEEP_THRESHOLD, instance_rewards, token_rewards
from rlmec_core.trainers.sft import IGNORE_INDEX, tokenize_example
from rlmec_core.verification import Verifier

RewardMode = Literal["token", "instance"]

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


# ---------------------------------------------------------------- tokenisation


def split_tokenize(
    tokenizer: PreTrainedTokenizerBase, prompt: str, response: str, eos_id: int | None = None
) -> tuple[list[int], list[int]]:
    """``(prompt_ids, response_ids + [EOS])`` exactly as ``tokenize_example`` builds them
    (``eos_id``: the token ending the response, default the tokenizer's EOS)."""
    example = tokenize_example(tokenizer, prompt, response, max_length=sys.maxsize, eos_id=eos_id)
    n_prompt = sum(label == IGNORE_INDEX for label in example["labels"])
    return example["input_ids"][:n_prompt], example["input_ids"][n_prompt:]


# ---------------------------------------------------------------- log-probs


# A prompt prefix shared by several pairs is run once and cached when that saves at least
# this many token positions (pairs beyond the first x prefix tokens): below it, the extra
# forward and the smaller batches it leads to cost more than the positions saved.
SHARED_PREFIX_MIN_SAVING = 128
# Nesting of shared prefixes the planner follows; deeper sharing is left unused.
_MAX_PREFIX_DEPTH = 64
# Token positions per batch (rows x (cached prefix + longest row)). On CPU small batches keep
# the activations in cache and beat large ones; an accelerator wants large ones.
CPU_TOKEN_BUDGET = 2048
ACCELERATOR_TOKEN_BUDGET = 32768


@dataclass(frozen=True)
class _Prefix:
    """Run prompt tokens ``[start, end)`` of pair ``source`` after the cache of plan step
    ``parent`` (None: from the start) and cache them; every pair under it shares them."""

    parent: int | None
    source: int
    start: int
    end: int


@dataclass(frozen=True)
class _Batch:
    """Score ``pairs`` as one right-padded batch of ``prompt[start:] + response`` rows that
    continue the cache of plan step ``prefix`` (None and ``start == 0``: no cache)."""

    prefix: int | None
    start: int
    pairs: tuple[int, ...]
    width: int  # the longest row, padding included


def _common_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def _plan_batches(
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]],
    *,
    token_budget: int,
    max_rows: int,
    share_prefixes: bool = True,
) -> list[_Prefix | _Batch]:
    """Order the scoring of all pairs as cached prefixes and batches, in execution order.

    Prompts are sorted, so pairs sharing a prompt prefix are neighbours and form nested
    intervals (the GRM's instruction, shared by all pairs; then a problem and its reference
    solution, shared by that problem's samples; a policy prompt, by its problem's samples).
    An interval gets a ``_Prefix`` when running its shared tokens once saves at least
    ``SHARED_PREFIX_MIN_SAVING`` positions; each pair keeps at least its last prompt token
    out of any prefix, since the state there predicts its first response token. The pairs
    under a prefix (or under none) that no deeper prefix takes are cut, longest first, into
    ``_Batch``es of at most ``max_rows`` rows and ``token_budget`` positions (rows x
    (prefix + longest row)); a row longer than the budget goes alone.
    """
    n_pairs = len(prompt_ids)
    order = sorted(range(n_pairs), key=lambda i: (list(prompt_ids[i]), i))
    # shared[j]: prompt tokens order[j] and order[j + 1] share, leaving each one of its own.
    shared = [
        min(
            _common_length(prompt_ids[a], prompt_ids[b]),
            len(prompt_ids[a]) - 1,
            len(prompt_ids[b]) - 1,
        )
        for a, b in zip(order, order[1:], strict=False)
    ]
    plan: list[_Prefix | _Batch] = []

    def batches(pool: list[int], start: int, prefix: int | None) -> None:
        rows = {i: len(prompt_ids[i]) - start + len(response_ids[i]) for i in pool}
        batch: list[int] = []
        for i in sorted(pool, key=lambda i: (-rows[i], i)):
            width = rows[batch[0]] if batch else 0
            if batch and (
                len(batch) == max_rows or (len(batch) + 1) * (start + width) > token_budget
            ):
                plan.append(_Batch(prefix, start, tuple(batch), width))
                batch = []
            batch.append(i)
        if batch:
            plan.append(_Batch(prefix, start, tuple(batch), rows[batch[0]]))

    def interval(
        lo: int, hi: int, common: int, start: int, prefix: int | None, pool: list[int], depth: int
    ) -> None:
        # order[lo:hi] share `common` prompt tokens, the cache of plan step `prefix` the
        # first `start` of them; pairs no deeper prefix takes go to `pool`.
        j = lo
        while j < hi:
            k = j
            while k + 1 < hi and shared[k] > common:
                k += 1
            if k == j or not share_prefixes or depth >= _MAX_PREFIX_DEPTH:
                pool.extend(order[j : k + 1])
            else:
                deeper = min(shared[j:k])
                if (k - j) * (deeper - start) >= SHARED_PREFIX_MIN_SAVING:
                    plan.append(_Prefix(prefix, order[j], start, deeper))
                    index, own = len(plan) - 1, []
                    interval(j, k + 1, deeper, deeper, index, own, depth + 1)
                    batches(own, deeper, index)
                else:
                    interval(j, k + 1, deeper, start, prefix, pool, depth + 1)
            j = k + 1

    top: list[int] = []
    interval(0, n_pairs, 0, 0, None, top, 0)
    batches(top, 0, None)
    return plan


def _default_token_budget(device: torch.device) -> int:
    return CPU_TOKEN_BUDGET if device.type == "cpu" else ACCELERATOR_TOKEN_BUDGET


@torch.inference_mode()
def batched_response_logprobs(
    model: PreTrainedModel,
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]],
    *,
    pad_id: int,
    batch_size: int,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    token_budget: int | None = None,
    share_prefixes: bool = True,
    progress: bool = False,
    desc: str = "log-probs",
) -> list[list[float]]:
    """``log P(response_t | prompt, response_<t)`` per response token, per pair, in order.

    Equal to ``sequential_response_logprobs`` up to float rounding, but each prompt prefix
    that several pairs share is run once (``_plan_batches``; ``share_prefixes=False`` turns
    that off) and the rest goes in length-sorted, right-padded batches of at most
    ``batch_size`` rows and ``token_budget`` token positions (default: ``CPU_TOKEN_BUDGET``
    on CPU, ``ACCELERATOR_TOKEN_BUDGET`` elsewhere) through
    ``logprobs.right_padded_response_logprobs``, which needs no padding mask and projects
    only the response positions onto the vocabulary, ``chunk_size`` rows at a time.
    """
    if len(prompt_ids) != len(response_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(response_ids)} responses")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if token_budget is not None and token_budget < 1:
        raise ValueError(f"token_budget must be >= 1, got {token_budget}")
    for index, (prompt, response) in enumerate(zip(prompt_ids, response_ids, strict=True)):
        if not prompt:
            raise ValueError(f"pair {index}: empty prompt; the first response token needs one")
        if not response:
            raise ValueError(f"pair {index}: empty response")

    was_training = model.training
    model.eval()
    device = model.device
    plan = _plan_batches(
        prompt_ids,
        response_ids,
        token_budget=token_budget or _default_token_budget(device),
        max_rows=batch_size,
        share_prefixes=share_prefixes and supports_prefix_cache(model),
    )
    # A prefix's cache is dropped after the last step that continues it.
    last_use = {}
    for index, step in enumerate(plan):
        parent = step.parent if isinstance(step, _Prefix) else step.prefix
        if parent is not None:
            last_use[parent] = index
    caches: dict[int, Any] = {}
    out: list[list[float]] = [[] for _ in prompt_ids]
    with Progress(len(prompt_ids), desc, enabled=progress) as bar:
        for index, step in enumerate(plan):
            if isinstance(step, _Prefix):
                tokens = prompt_ids[step.source][step.start : step.end]
                ids = torch.tensor([tokens], dtype=torch.long, device=device)
                caches[index] = prefix_cache(model, ids, caches.get(step.parent))
                parent = step.parent
            else:
                ids = torch.full((len(step.pairs), step.width), pad_id, dtype=torch.long)
                attention = torch.zeros_like(ids)
                wanted = torch.zeros_like(ids)
                for row, i in enumerate(step.pairs):
                    own = prompt_ids[i][step.start :]
                    n = len(own) + len(response_ids[i])
                    ids[row, :n] = torch.tensor([*own, *response_ids[i]], dtype=torch.long)
                    attention[row, :n] = 1
                    wanted[row, len(own) : n] = 1
                packed = right_padded_response_logprobs(
                    model,
                    ids.to(device),
                    attention.to(device),
                    wanted.to(device),
                    past=None if step.prefix is None else caches[step.prefix],
                    chunk_size=chunk_size,
                ).cpu()
                for row, i in enumerate(step.pairs):
                    out[i] = packed[row, : len(response_ids[i])].tolist()
                bar.update(len(step.pairs))
                parent = step.prefix
            if parent is not None and last_use[parent] == index:
                del caches[parent]
    if was_training:
        model.train()
    return out


@torch.no_grad()
def sequential_response_logprobs(
    model: PreTrainedModel,
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]],
) -> list[list[float]]:
    """The straightforward reference: one unpadded sequence at a time, full float32
    log-softmax over the vocabulary. Used by the tests and the batching benchmark."""
    if len(prompt_ids) != len(response_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(response_ids)} responses")
    was_training = model.training
    model.eval()
    out = []
    for prompt, response in zip(prompt_ids, response_ids, strict=True):
        ids = torch.tensor([[*prompt, *response]], dtype=torch.long, device=model.device)
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
        # The logits at position t-1 predict token t.
        rows = torch.arange(len(prompt) - 1, len(prompt) + len(response) - 1)
        out.append(logp[rows, torch.tensor(list(response))].tolist())
    if was_training:
        model.train()
    return out


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


# ---------------------------------------------------------------- token → step (metrics)


def token_steps(
    tokenizer: PreTrainedTokenizerBase, text: str, token_ids: Sequence[int]
) -> list[int | None]:
    """The step (non-empty line index, as ``split_steps`` numbers them) of each token.

    ``token_ids`` is ``text``'s response ids, optionally ending with EOS (or another special
    token: a chat template's end of turn). A token belongs to the step of its first
    non-whitespace character; a whitespace-only token to the line it starts on (a step's
    closing newline belongs to that step). EOS and tokens on blank lines get None.
    """
    body = list(token_ids)
    if body and (body[-1] == tokenizer.eos_token_id or body[-1] in tokenizer.all_special_ids):
        body = body[:-1]
    spans = _token_spans(tokenizer, text, body)

    char_step: list[int | None] = []
    step = -1
    for line in text.splitlines(keepends=True):
        blank = not line.strip()
        if not blank:
            step += 1
        char_step.extend([None if blank else step] * len(line))

    steps: list[int | None] = []
    for start, end in spans:
        if start >= len(char_step):
            steps.append(None)
            continue
        visible = next((c for c in range(start, end) if not text[c].isspace()), start)
        steps.append(char_step[visible])
    return steps + [None] * (len(token_ids) - len(body))


def _token_spans(
    tokenizer: PreTrainedTokenizerBase, text: str, ids: list[int]
) -> list[tuple[int, int]]:
    """Character span of each token of ``ids`` (``text`` tokenised without special tokens)."""
    if tokenizer.is_fast:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if encoded["input_ids"] == ids:
            return [tuple(span) for span in encoded["offset_mapping"]]
    # Slow tokenizers have no offsets: the end of each token is the length of the decoded prefix.
    ends = [len(tokenizer.decode(ids[: n + 1])) for n in range(len(ids))]
    return list(zip([0, *ends[:-1]], ends, strict=True))


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


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


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
    reward_mode: RewardMode = "token",
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    verifier: Verifier | None = None,
    progress: bool = True,
    verdicts: Sequence[GrmVerdict] | None = None,
    style: PromptStyle | None = None,
    error_step: ErrorStepSource = "generated",
) -> tuple[Dataset, dict[str, float]]:
    """Stage 4 over stage-2 rows (DISTILLED_FEATURES): RL_FEATURES rows and metrics.

    ``style``: the prompts' format (``rlmec_core.prompt_format``; default plain) for the
    GRM's prompts and the policy's, and the token that ends every response.

    A GRM rewrite is kept when it names a wrong step, reaches the gold answer and, where
    ``verifier`` applies, every step checks (else the sample is dropped as "unverified").
    ``reward_mode="instance"`` writes the ``no_token_reward`` ablation's rewards (one
    instance-level value per token); the GRM still scores every token for the metrics.
    Rows keep the input order. See ``annotation_metrics`` for the metrics.

    ``verdicts``: the GRM's verdicts on ``rows_for_grm(samples)``, when they were generated
    elsewhere (a generation server); else ``grm_model`` makes them here, its first error
    step per ``error_step`` (``config.TrainGrmSection``): generated, or read off the
    likelihoods (``likelihood_error_steps``), whose pass then also gives every row's token
    rewards. Rewards and reference log-probs are always this process's HF forward passes.
    """
    if reward_mode not in ("token", "instance"):
        raise ValueError(f"reward_mode must be 'token' or 'instance', got {reward_mode!r}")
    if tokenizer.pad_token_id is None or tokenizer.eos_token_id is None:
        raise ValueError("tokenizer needs pad and eos tokens; load it with load_policy")
    started = time.perf_counter()
    rows = list(samples)
    _check_samples(rows)
    unique, n_dedup = dedup_correct(rows)

    # a. Only incorrect samples need the GRM: a correct y is its own rewrite.
    incorrect = [row for row in unique if not row["correct"]]
    style = style or PLAIN
    scored: dict[str, list[float]] = {}  # sample_id -> the GRM's log-probs of its tokens
    if verdicts is None:
        steps = None
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
    if len(verdicts) != len(incorrect):
        raise ValueError(f"{len(verdicts)} GRM verdicts for {len(incorrect)} incorrect samples")
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

    # b, c. One batched pass of each model over the same response ids.
    responses = [p.response_ids for p in pending]
    common = {
        "pad_id": tokenizer.pad_token_id,
        "batch_size": batch_size,
        "chunk_size": chunk_size,
        "progress": progress,
    }
    unscored = [p for p in pending if p.row["sample_id"] not in scored]
    fresh = batched_response_logprobs(
        grm_model,
        [p.grm_prompt_ids for p in unscored],
        [p.response_ids for p in unscored],
        desc="grm rewards",
        **common,
    )
    scored.update({p.row["sample_id"]: lp for p, lp in zip(unscored, fresh, strict=True)})
    grm_logprobs = [scored[p.row["sample_id"]] for p in pending]
    ref_logprobs = batched_response_logprobs(
        ref_model, [p.prompt_ids for p in pending], responses, desc="ref log-probs", **common
    )

    out_rows, probs = [], []
    for p, grm_lp, ref_lp in zip(pending, grm_logprobs, ref_logprobs, strict=True):
        correct = bool(p.row["correct"])
        token_probs = [min(1.0, math.exp(v)) for v in grm_lp]
        probs.append(token_probs)
        if reward_mode == "token":
            rewards = token_rewards(token_probs, correct).tolist()
        else:
            rewards = instance_rewards(len(p.response_ids), correct).tolist()
        # d. A correct sample imitates itself evenly.
        if correct:
            weights = [KEPT_WEIGHT] * len(p.target_ids)
        else:
            weights = minimum_edit_weights(p.response_ids, p.target_ids)
        out_rows.append(
            {
                "sample_id": p.row["sample_id"],
                "problem_id": p.row["problem_id"],
                "correct": correct,
                "prediction": p.row["prediction"],
                "rewrite": p.rewrite,
                "grm_error_step": p.grm_error_step,
                "teacher_error_step": int(p.row["error_step"]),
                "prompt_ids": p.prompt_ids,
                "response_ids": p.response_ids,
                "rewards": rewards,
                "ref_logprobs": ref_lp,
                "target_ids": p.target_ids,
                "target_weights": weights,
            }
        )

    columns = {name: [r[name] for r in out_rows] for name in RL_FEATURES}
    dataset = Dataset.from_dict(columns, features=RL_FEATURES)
    metrics = annotation_metrics(out_rows, probs, tokenizer)
    metrics.update(
        {
            "n_samples_in": float(len(rows)),
            "n_dedup_dropped": float(n_dedup),
            "n_grm_judged": float(len(incorrect)),
            "n_dropped_grm_miss": float(sum(misses.values())),
            **{
                f"n_grm_miss_{reason}": float(misses.get(reason, 0))
                for reason in (
                    "unparsed",
                    "judged_correct",
                    "step_out_of_range",
                    "wrong_answer",
                    "unverified",
                )
            },
            "grm_keep_rate": (len(incorrect) - sum(misses.values())) / len(incorrect)
            if incorrect
            else 0.0,
            "seconds": time.perf_counter() - started,
        }
    )
    return dataset, metrics


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
