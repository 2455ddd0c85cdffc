"""The generative reward model at inference time (stages 3 and 4a).

The GRM rewrites a prediction with the teacher's two-step protocol: it first names the
first wrong step ``k``, then, given steps ``0..k-1`` of the prediction verbatim, completes
the rest of a correct solution. Both steps are greedy and batched.

Prompts are tokenised the way the GRM was trained (``trainers.sft.tokenize_example``):
the prompt with the tokenizer's special tokens, text after it without any. The kept prefix
is response-side text, so it is tokenised on its own and appended to the prompt ids, which
keeps its token boundaries the ones the GRM saw in training.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlmec_core.answers import answers_match
from rlmec_core.decoding import decode, left_padded
from rlmec_core.generation_server import ServedModel
from rlmec_core.grm_data import (
    error_step_prompt,
    kept_prefix,
    parse_error_step,
    rewrite_prompt,
)
from rlmec_core.progress import progress as report_progress
from rlmec_core.prompt_format import PromptStyle
from rlmec_core.rewards import KEEP_THRESHOLD
from rlmec_core.teachers.base import split_steps
from rlmec_core.verification import Verifier

_ROW_FIELDS = ("question", "gold_solution", "prediction")


@dataclass(frozen=True)
class GrmVerdict:
    """The GRM's judgement of one prediction.

    ``error_step``: the first wrong step (-1: "correct"), None when the verdict named
    neither. ``text``: the rewrite (steps ``0..k-1`` of the prediction, then the GRM's
    completion); the prediction itself for -1; None when there is nothing to rewrite from
    (no parsable step, or a step past the prediction's last one).
    """

    error_step: int | None
    text: str | None


def _check_rows(rows: Sequence[Mapping[str, Any]], fields: Iterable[str]) -> None:
    for index, row in enumerate(rows):
        for name in fields:
            if not isinstance(row.get(name), str):
                raise ValueError(f"row {index} has no string field {name!r}")


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> list[int]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    if eos is None:
        raise ValueError("neither the model nor the tokenizer defines an eos token")
    return sorted(set(eos)) if isinstance(eos, list) else [eos]


@torch.no_grad()
def greedy_continuations(
    model: PreTrainedModel | ServedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompt_ids: Sequence[Sequence[int]],
    *,
    max_new_tokens: int,
    batch_size: int,
    progress: bool = True,
    desc: str = "grm",
) -> list[str]:
    """Greedy continuation text of each prompt (given as token ids), up to the first EOS.

    Prompts are sorted by length and left-padded in batches of ``batch_size`` so a batch
    wastes little on padding, and a finished row leaves its batch (``rlmec_core.decoding``);
    results come back in input order. Special tokens are
    dropped from the decoded text. A ``ServedModel`` gets the same ids, one greedy request
    per prompt, and its completion text is cut at EOS the same way.
    """
    if batch_size < 1 or max_new_tokens < 1:
        raise ValueError(
            f"batch_size and max_new_tokens must be >= 1, got {batch_size}, {max_new_tokens}"
        )
    pad_id = tokenizer.pad_token_id
    if pad_id is None:
        raise ValueError("tokenizer has no pad token; load it with rlmec_core.modeling.load_policy")
    for index, ids in enumerate(prompt_ids):
        if not ids:
            raise ValueError(f"prompt {index} is empty; generation needs at least one token")
    if isinstance(model, ServedModel):
        texts, _ = model.complete(
            prompt_ids,
            n=1,
            temperature=0.0,
            top_p=1.0,
            max_tokens=max_new_tokens,
            seed=None,
            progress=progress,
            desc=desc,
        )
        return [group[0] for group in texts]
    eos_ids = _eos_ids(model, tokenizer)

    was_training = model.training
    model.eval()
    texts: list[str] = [""] * len(prompt_ids)
    order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]), reverse=True)
    starts = range(0, len(order), batch_size)
    for start in report_progress(starts, desc, enabled=progress):
        batch = order[start : start + batch_size]
        ids, mask = left_padded([list(prompt_ids[i]) for i in batch], pad_id, model.device)
        new = decode(model, ids, mask, max_new_tokens=max_new_tokens, eos_ids=eos_ids)
        for row, i in enumerate(batch):
            cut = next((j for j, t in enumerate(new[row]) if t in eos_ids), len(new[row]))
            texts[i] = tokenizer.decode(new[row][:cut], skip_special_tokens=True)
    if was_training:
        model.train()
    return texts


def grm_rewrites(
    grm_model: PreTrainedModel | ServedModel,
    tokenizer: PreTrainedTokenizerBase,
    rows: Sequence[Mapping[str, Any]] | Dataset,
    *,
    batch_size: int,
    max_new_tokens: int,
    progress: bool = True,
    style: PromptStyle | None = None,
    error_steps: Sequence[int | None] | None = None,
) -> list[GrmVerdict]:
    """The GRM's verdict and minimum-edit rewrite for every row (question, gold_solution,
    prediction), in row order.

    Step 1 generates the first-error-step verdict for all rows (or takes ``error_steps``,
    one per row, e.g. ``first_unkept_step``'s); step 2 completes a rewrite after
    ``rewrite_prompt + kept_prefix(prediction, k)`` for the rows with a step ``k`` inside
    the prediction. The rewrite is the kept prefix plus the completion, trailing whitespace
    removed.
    """
    rows = list(rows)
    _check_rows(rows, _ROW_FIELDS)
    # style: plain or chat-template prompts (rlmec_core.prompt_format), as the GRM was trained.
    args = [(r["question"], r["gold_solution"], r["prediction"], style) for r in rows]
    if error_steps is not None:
        if len(error_steps) != len(rows):
            raise ValueError(f"{len(error_steps)} error steps for {len(rows)} rows")
        steps = list(error_steps)
    else:
        judge_ids = [tokenizer(error_step_prompt(*a))["input_ids"] for a in args]
        judgements = greedy_continuations(
            grm_model,
            tokenizer,
            judge_ids,
            max_new_tokens=max_new_tokens,
            batch_size=batch_size,
            progress=progress,
            desc="grm error step",
        )
        steps = [parse_error_step(text) for text in judgements]

    # Only a step that exists in the prediction leaves a prefix to continue from.
    todo = [
        i
        for i, k in enumerate(steps)
        if k is not None and 0 <= k < len(split_steps(rows[i]["prediction"]))
    ]
    prefixes = {i: kept_prefix(rows[i]["prediction"], steps[i]) for i in todo}
    rewrite_ids = [
        tokenizer(rewrite_prompt(*args[i]))["input_ids"]
        + (tokenizer(prefixes[i], add_special_tokens=False)["input_ids"] if prefixes[i] else [])
        for i in todo
    ]
    completions = greedy_continuations(
        grm_model,
        tokenizer,
        rewrite_ids,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        progress=progress,
        desc="grm rewrite",
    )
    rewritten = {i: (prefixes[i] + c).rstrip() for i, c in zip(todo, completions, strict=True)}

    verdicts = []
    for i, k in enumerate(steps):
        if k == -1:
            verdicts.append(GrmVerdict(-1, rows[i]["prediction"]))
        else:
            verdicts.append(GrmVerdict(k, rewritten.get(i)))
    return verdicts


def first_unkept_step(token_probs: Sequence[float], token_steps: Sequence[int | None]) -> int:
    """The first error step as the GRM's likelihoods name it: the step of the first response
    token the GRM would not keep after the rewrite prompt (``p_t < KEEP_THRESHOLD``: the
    first token annotate penalises), or -1 ("correct") when it would keep every token.

    ``token_steps``: each token's step (``response_tokens.token_steps``); tokens in no step (blank
    lines, the end token) do not count, so a solution judged only by its end is "correct".
    """
    if len(token_probs) != len(token_steps):
        raise ValueError(f"{len(token_probs)} probabilities for {len(token_steps)} tokens")
    return next(
        (
            step
            for p, step in zip(token_probs, token_steps, strict=True)
            if step is not None and p < KEEP_THRESHOLD
        ),
        -1,
    )


def rewrite_reaches_gold(verdict: GrmVerdict, gold_answer: str) -> bool:
    """Whether the verdict names a wrong step and its rewrite states ``gold_answer``."""
    return (
        verdict.error_step is not None
        and verdict.error_step >= 0
        and verdict.text is not None
        and answers_match(verdict.text, gold_answer)
    )


def rewrite_is_kept(
    verdict: GrmVerdict, row: Mapping[str, Any], verifier: Verifier | None = None
) -> bool:
    """Whether annotate keeps the rewrite: it reaches the row's gold answer and ``verifier``
    (where given) does not reject a step."""
    return rewrite_reaches_gold(verdict, row["gold_answer"]) and (
        verifier is None or verifier.check(row, verdict.text or "") is not False
    )


def grm_metrics(
    verdicts: Sequence[GrmVerdict],
    rows: Sequence[Mapping[str, Any]] | Dataset,
    verifier: Verifier | None = None,
) -> dict[str, float]:
    """GRM quality against the teacher on stage-2 rows (DISTILLED_FEATURES).

    - ``error_step_accuracy``: the GRM names the teacher's step, over the rows whose
      teacher verdict is known (teacher_status "kept" or "correct");
      ``error_step_accuracy_incorrect``: the same over the "kept" rows only;
    - ``parse_rate``: verdicts naming a step or "correct", over all rows;
    - ``rewrite_gold_rate``: rewrites reaching the gold answer, over the incorrect rows;
      ``rewrite_gold_rate_kept``: the same over the rows the teacher could rewrite;
    - ``keep_rate``: rewrites annotate would keep (reaching gold, every step checked by
      ``verifier`` where it applies), over the incorrect rows; ``rewrite_verified_rate_kept``:
      the same over the rows the teacher could rewrite.
    """
    rows = list(rows)
    if len(verdicts) != len(rows):
        raise ValueError(f"{len(verdicts)} verdicts for {len(rows)} rows")
    _check_rows(rows, ("gold_answer", "teacher_status"))

    known = [
        (v, r)
        for v, r in zip(verdicts, rows, strict=True)
        if r["teacher_status"] in ("kept", "correct")
    ]
    kept = [(v, r) for v, r in known if r["teacher_status"] == "kept"]
    incorrect = [(v, r) for v, r in zip(verdicts, rows, strict=True) if not r["correct"]]

    def rate(hits: int, n: int) -> float:
        return hits / n if n else 0.0

    def step_hits(pairs: list[tuple[GrmVerdict, Mapping[str, Any]]]) -> int:
        return sum(v.error_step == int(r["error_step"]) for v, r in pairs)

    def gold_hits(pairs: list[tuple[GrmVerdict, Mapping[str, Any]]]) -> int:
        return sum(rewrite_reaches_gold(v, r["gold_answer"]) for v, r in pairs)

    def verified_hits(pairs: list[tuple[GrmVerdict, Mapping[str, Any]]]) -> int:
        return sum(rewrite_is_kept(v, r, verifier) for v, r in pairs)

    return {
        "n_rows": float(len(rows)),
        "n_known": float(len(known)),
        "n_incorrect": float(len(incorrect)),
        "error_step_accuracy": rate(step_hits(known), len(known)),
        "error_step_accuracy_incorrect": rate(step_hits(kept), len(kept)),
        "parse_rate": rate(sum(v.error_step is not None for v in verdicts), len(rows)),
        "rewrite_gold_rate": rate(gold_hits(incorrect), len(incorrect)),
        "rewrite_gold_rate_kept": rate(gold_hits(kept), len(kept)),
        "keep_rate": rate(verified_hits(incorrect), len(incorrect)),
        "rewrite_verified_rate_kept": rate(verified_hits(kept), len(kept)),
    }
