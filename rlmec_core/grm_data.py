"""Stage 3 data: the GRM's two prompts and its supervised training set.

The GRM learns two tasks from the distilled samples of stage 2:

- error-step: problem, reference solution and the prediction with numbered steps
  -> ``The first error step is [k]`` (or ``The prediction is correct``);
- rewrite: problem, reference solution and the prediction -> the minimum-edit rewrite,
  after the fixed line ``Correct prediction:``.

Stage 4 reuses these prompts verbatim: it teacher-forces ``y`` right after
``rewrite_prompt(...)`` to read token rewards, and completes a rewrite from the kept
steps placed after it. So both prompts are pure functions of their inputs and a
``PromptStyle`` (plain text, or the chat template with the response prefix opening the
assistant turn; see ``rlmec_core.prompt_format``).
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Mapping
from typing import Any

from datasets import Dataset, Features, Value

from rlmec_core.prompt_format import PLAIN, PromptStyle
from rlmec_core.teachers.base import number_steps, split_steps

# The line that ends every rewrite prompt; the response (ŷ, or y when scoring) follows it.
REWRITE_RESPONSE_PREFIX = "Correct prediction:\n"
# The line that ends every error-step prompt; the verdict follows it.
ERROR_STEP_RESPONSE_PREFIX = "Judgement:\n"
# The verdict for a prediction with no wrong step (error_step == -1).
CORRECT_RESPONSE = "The prediction is correct"
ERROR_STEP_TEMPLATE = "The first error step is [{step}]"

GRM_EXAMPLE_KINDS = ("error_step", "rewrite", "identity")
GRM_EXAMPLE_FEATURES = Features(
    {
        "kind": Value("string"),
        "sample_id": Value("string"),
        "prompt": Value("string"),
        "response": Value("string"),
    }
)

_ERROR_STEP_INSTRUCTION = (
    "Below are a problem, its reference solution and a prediction whose steps are "
    "numbered from [0]. Name the first wrong step of the prediction, or say that the "
    "prediction is correct."
)
_REWRITE_INSTRUCTION = (
    "Below are a problem, its reference solution and a prediction. Rewrite the prediction "
    "into a correct solution with as few edits as possible: copy every step that is right "
    "and change only what is wrong."
)


def _solution_block(solution: str) -> str:
    """A solution as shown inside a prompt: its steps, one per line, no blank lines."""
    return "\n".join(step.strip() for step in split_steps(solution))


def _styled(body: str, response_prefix: str, style: PromptStyle | None) -> str:
    """Plain: the body, a blank line, the response prefix. Chat: the body as the user
    message, the prefix opening the assistant turn."""
    return (style or PLAIN).wrap(body, response_prefix, plain=f"{body}\n\n{response_prefix}")


# Per GRM task: its instruction, how the prediction is shown (steps numbered for the
# error step), and the response prefix the answer follows.
_GRM_PROMPTS = {
    "error_step": (_ERROR_STEP_INSTRUCTION, number_steps, ERROR_STEP_RESPONSE_PREFIX),
    "rewrite": (_REWRITE_INSTRUCTION, _solution_block, REWRITE_RESPONSE_PREFIX),
}


def _grm_prompt(
    kind: str, question: str, gold_solution: str, prediction: str, style: PromptStyle | None
) -> str:
    instruction, show_prediction, response_prefix = _GRM_PROMPTS[kind]
    body = (
        f"{instruction}\n\n"
        f"Problem:\n{question.strip()}\n\n"
        f"Reference solution:\n{_solution_block(gold_solution)}\n\n"
        f"Prediction:\n{show_prediction(prediction)}"
    )
    return _styled(body, response_prefix, style)


def error_step_prompt(
    question: str, gold_solution: str, prediction: str, style: PromptStyle | None = None
) -> str:
    """Prompt asking for the first wrong step of ``prediction``; ends with the verdict line."""
    return _grm_prompt("error_step", question, gold_solution, prediction, style)


def error_step_response(step: int) -> str:
    """The GRM's verdict: ``The first error step is [k]``, or CORRECT_RESPONSE for -1."""
    if step == -1:
        return CORRECT_RESPONSE
    if step < 0:
        raise ValueError(f"error step must be -1 (correct) or >= 0, got {step}")
    return ERROR_STEP_TEMPLATE.format(step=step)


_STEP_AFTER_PHRASE = re.compile(
    r"first\s+error\s+step\s*(?:is|:)?\s*(?:step\s*)?\[?\s*(\d+)", re.IGNORECASE
)
_BRACKETED_STEP = re.compile(r"\[\s*(\d+)\s*\]")
_SAYS_CORRECT = re.compile(r"\bcorrect\b", re.IGNORECASE)
_NEGATED_CORRECT = re.compile(r"\bnot\s+correct\b|\bincorrect\b", re.IGNORECASE)


def parse_error_step(text: str) -> int | None:
    """The step a generated verdict names; -1 for "correct"; None if it names neither.

    Tolerates extra words around the verdict ("I think the first error step is [2].").
    """
    match = _STEP_AFTER_PHRASE.search(text) or _BRACKETED_STEP.search(text)
    if match:
        return int(match.group(1))
    if _SAYS_CORRECT.search(text) and not _NEGATED_CORRECT.search(text):
        return -1
    return None


def rewrite_prompt(
    question: str, gold_solution: str, prediction: str, style: PromptStyle | None = None
) -> str:
    """Prompt for a minimum-edit rewrite; ends with REWRITE_RESPONSE_PREFIX, ŷ follows."""
    return _grm_prompt("rewrite", question, gold_solution, prediction, style)


def kept_prefix(prediction: str, error_step: int) -> str:
    """Steps ``0..error_step-1`` of ``prediction``, each ending in a newline.

    Stage 4 appends this to ``rewrite_prompt`` and lets the GRM complete the rest.
    Empty when the first step is wrong; the whole prediction when it is correct (-1).
    """
    steps = split_steps(prediction)
    if error_step == -1:
        error_step = len(steps)
    if error_step < 0:
        raise ValueError(f"error step must be -1 (correct) or >= 0, got {error_step}")
    return "".join(f"{step}\n" for step in steps[:error_step])


def identity_subset_size(n_correct: int, n_kept_erroneous: int, n_all: int) -> int:
    """How many correct samples become identity rewrites.

    The subset's share of the correct samples equals n_kept_erroneous / n_all, rounded
    half up (not Python's banker's rounding, so hand counts agree).
    """
    if n_all <= 0:
        return 0
    return min(n_correct, (2 * n_correct * n_kept_erroneous + n_all) // (2 * n_all))


def _example(kind: str, row: Mapping[str, Any], prompt: str, response: str) -> dict[str, str]:
    return {"kind": kind, "sample_id": row["sample_id"], "prompt": prompt, "response": response}


def build_grm_examples(
    distilled: Iterable[Mapping[str, Any]] | Dataset, seed: int, style: PromptStyle | None = None
) -> Dataset:
    """The GRM's SFT set from stage-2 rows (DISTILLED_FEATURES), prompts in ``style``.

    - every kept erroneous sample (teacher_status "kept") gives an error-step example
      (``The first error step is [k]``) and a rewrite example (response ŷ);
    - a seeded random subset of the correct samples, sized by ``identity_subset_size``,
      gives identity rewrites (response ŷ = y) and error-step examples with the response
      CORRECT_RESPONSE, so the GRM also learns to recognise a right solution;
    - abstained and wrong_answer samples give nothing, but count in "all samples".

    Order: the kept erroneous samples in input order, then the identity subset in input
    order, each as its error-step example followed by its rewrite. The trainer shuffles.
    """
    rows = list(distilled)
    kept = [row for row in rows if row["teacher_status"] == "kept"]
    correct = [i for i, row in enumerate(rows) if row["teacher_status"] == "correct"]
    n_identity = identity_subset_size(len(correct), len(kept), len(rows))
    chosen = sorted(random.Random(seed).sample(correct, n_identity))

    examples = []
    for row in kept:
        if row["error_step"] < 0:
            raise ValueError(
                f"sample {row['sample_id']!r}: kept rewrite has error_step "
                f"{row['error_step']}; a kept erroneous sample needs a step >= 0"
            )
        args = (row["question"], row["gold_solution"], row["prediction"], style)
        examples.append(
            _example(
                "error_step", row, error_step_prompt(*args), error_step_response(row["error_step"])
            )
        )
        examples.append(_example("rewrite", row, rewrite_prompt(*args), row["rewrite"]))
    for i in chosen:
        row = rows[i]
        args = (row["question"], row["gold_solution"], row["prediction"], style)
        examples.append(_example("error_step", row, error_step_prompt(*args), CORRECT_RESPONSE))
        # ŷ = y verbatim: stage 4 teacher-forces exactly this text after the same prompt.
        examples.append(_example("identity", row, rewrite_prompt(*args), row["prediction"]))
    # from_dict, not from_list: from_list drops the columns of an empty list.
    columns = {name: [ex[name] for ex in examples] for name in GRM_EXAMPLE_FEATURES}
    return Dataset.from_dict(columns, features=GRM_EXAMPLE_FEATURES)
