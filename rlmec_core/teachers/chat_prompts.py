"""The two chat prompts of stage 2 (first error step, minimal correction) and their parsers.

Each prompt carries one worked example, as in the reference (Claude 2, one-shot). The task
fields sit under fixed ``### ...`` headings so that a test server can read them back.
"""

from __future__ import annotations

import re

from rlmec_core.teachers.base import number_steps, split_steps

# Section headings of the task messages; the test server parses on them.
QUESTION_HEADING = "### Question"
REFERENCE_HEADING = "### Reference solution"
PREDICTION_HEADING = "### Prediction"
KEPT_HEADING = "### Kept steps"
INSTRUCTION_HEADING = "### Instruction"
# Written under KEPT_HEADING when the first step is already wrong (k = 0).
NO_KEPT_STEPS = "(none)"

ERROR_STEP_ANSWER = "The first error step is [{k}]"
CORRECT_ANSWER = "The prediction is correct"

_SYSTEM_PROMPT = (
    "You are a careful teacher checking a student's step-by-step solution against a "
    "reference solution. Solutions are written one step per line and end with the line "
    "'The answer is <answer>'."
)

_FIRST_ERROR_INSTRUCTION = (
    "Compare the prediction with the reference solution and find the first step of the "
    "prediction that is wrong. Steps are numbered from [0]. Reply with exactly one line: "
    "'" + ERROR_STEP_ANSWER.format(k="k") + "' where k is that step's number, or "
    "'" + CORRECT_ANSWER + "' if every step is right."
)

_CORRECTION_INSTRUCTION = (
    "The kept steps are the prediction's steps before its first error, copied verbatim. "
    "Continue the solution from step [{k}] so that it reaches the correct answer, making "
    "the smallest possible changes to the prediction: reuse its wording and only change "
    "what is wrong. Write only the new steps, one per line, without step numbers and "
    "without repeating the kept steps. The last line must be 'The answer is <answer>'."
)

# One worked example: a short word problem whose prediction goes wrong at step [1].
_EXAMPLE_QUESTION = (
    "A baker makes 24 muffins. She sells 15 of them and then bakes 8 more. "
    "How many muffins does she have now?"
)
_EXAMPLE_GOLD = (
    "She has 24 - 15 = 9 muffins left after selling.\n"
    "After baking she has 9 + 8 = 17 muffins.\n"
    "The answer is 17"
)
_EXAMPLE_PREDICTION = (
    "She starts with 24 muffins.\n"
    "After selling she has 24 - 15 = 11 muffins.\n"
    "After baking she has 11 + 8 = 19 muffins.\n"
    "The answer is 19"
)
_EXAMPLE_ERROR_STEP = 1
_EXAMPLE_CONTINUATION = (
    "After selling she has 24 - 15 = 9 muffins.\n"
    "After baking she has 9 + 8 = 17 muffins.\n"
    "The answer is 17"
)


def _task_fields(question: str, gold_solution: str, prediction: str) -> list[str]:
    return [
        QUESTION_HEADING,
        question.strip(),
        "",
        REFERENCE_HEADING,
        gold_solution.strip(),
        "",
        PREDICTION_HEADING,
        number_steps(prediction),
        "",
    ]


def _first_error_task(question: str, gold_solution: str, prediction: str) -> str:
    lines = _task_fields(question, gold_solution, prediction)
    lines += [INSTRUCTION_HEADING, _FIRST_ERROR_INSTRUCTION]
    return "\n".join(lines)


def _correction_task(
    question: str, gold_solution: str, prediction: str, kept_steps: list[str]
) -> str:
    lines = _task_fields(question, gold_solution, prediction)
    lines += [KEPT_HEADING, "\n".join(kept_steps) if kept_steps else NO_KEPT_STEPS, ""]
    lines += [INSTRUCTION_HEADING, _CORRECTION_INSTRUCTION.format(k=len(kept_steps))]
    return "\n".join(lines)


def first_error_messages(question: str, gold_solution: str, prediction: str) -> list[dict]:
    """Chat messages for stage 2a: which step of ``prediction`` is the first wrong one."""
    return [
        {"role": "system", "content": _SYSTEM_PROMPT},
        {
            "role": "user",
            "content": _first_error_task(_EXAMPLE_QUESTION, _EXAMPLE_GOLD, _EXAMPLE_PREDICTION),
        },
        {"role": "assistant", "content": ERROR_STEP_ANSWER.format(k=_EXAMPLE_ERROR_STEP)},
        {"role": "user", "content": _first_error_task(question, gold_solution, prediction)},
    ]


def correction_messages(
    question: str, gold_solution: str, prediction: str, kept_steps: list[str]
) -> list[dict]:
    """Chat messages for stage 2b: continue from the kept prefix with minimal edits."""
    example_kept = split_steps(_EXAMPLE_PREDICTION)[:_EXAMPLE_ERROR_STEP]
    return [
        {"role": "system", "content": _SYSTEM_PROMPT},
        {
            "role": "user",
            "content": _correction_task(
                _EXAMPLE_QUESTION, _EXAMPLE_GOLD, _EXAMPLE_PREDICTION, example_kept
            ),
        },
        {"role": "assistant", "content": _EXAMPLE_CONTINUATION},
        {
            "role": "user",
            "content": _correction_task(question, gold_solution, prediction, kept_steps),
        },
    ]


# "first error step is [2]", "first error step: **Step 2**", "first erroneous step is 2", ...
_EXPLICIT_STEP = re.compile(
    r"first\s+(?:error|erroneous|wrong|incorrect)\s+step\W{0,12}?(?:is\W{0,6})?"
    r"(?:step\W{0,4})?(\d+)",
    re.IGNORECASE,
)
_CORRECT = re.compile(
    r"\b(?:prediction|solution|it)\s+is\s+(?:fully\s+|entirely\s+|already\s+)?correct\b"
    r"|\bno\s+(?:error|mistake)s?\b",
    re.IGNORECASE,
)
_ANY_STEP = re.compile(r"\[\s*(\d+)\s*\]|\bstep\s*\[?\s*(\d+)", re.IGNORECASE)


def parse_first_error_step(text: str) -> int | None:
    """The step index a teacher named, -1 for "correct", None when it cannot be read.

    Tolerates chatter and markdown. An explicit "first error step is ..." wins; otherwise a
    verdict of "correct" counts only when no step is named, and a bare step ("Step 2",
    "[2]") only when it is the single one mentioned.
    """
    text = text.replace("*", "").replace("`", "")
    explicit = _EXPLICIT_STEP.search(text)
    if explicit:
        return int(explicit.group(1))
    named = {int(a or b) for a, b in _ANY_STEP.findall(text)}
    if _CORRECT.search(text):
        return -1 if not named else None
    if len(named) == 1:
        return named.pop()
    return None


_FENCE = re.compile(r"```[^\n]*\n(.*?)```", re.DOTALL)
_ANSWER_LINE = re.compile(r"the answer is", re.IGNORECASE)
_ACKNOWLEDGEMENT = re.compile(r"^(?:sure|okay|ok|certainly|of course)\b[\s\S]{0,40}$", re.I)
_STEP_NUMBER = re.compile(r"^\[\d+\]\s*")


def parse_continuation(text: str) -> str | None:
    """The continuation steps in a teacher's reply, or None without a final answer line.

    Keeps the first fenced block that has an answer line, drops leading chatter
    ("Here is the corrected solution:") and anything after the last answer line, and
    strips step numbers when every line carries one.
    """
    for block in _FENCE.findall(text):
        if _ANSWER_LINE.search(block):
            text = block
            break
    lines = [line.strip() for line in split_steps(text.replace("```", ""))]
    while lines and not _ANSWER_LINE.search(lines[0]):
        if not (lines[0].endswith(":") or _ACKNOWLEDGEMENT.match(lines[0])):
            break
        lines.pop(0)
    answer_rows = [i for i, line in enumerate(lines) if _ANSWER_LINE.search(line)]
    if not answer_rows:
        return None
    lines = lines[: answer_rows[-1] + 1]
    if all(_STEP_NUMBER.match(line) for line in lines):
        lines = [_STEP_NUMBER.sub("", line) for line in lines]
    # "**The answer is 17**" -> "The answer is 17": emphasis is not part of the answer.
    lines[-1] = lines[-1].strip("*").strip()
    return "\n".join(lines)
