"""A step checker for arithmetic solutions: does every step hold, is every number grounded?

A solution whose final answer matches gold can still be wrong on the way (``60 - 1 = 59``
after misreading 10 as 1, then a lucky answer), and a rewrite that reaches gold can still
keep a false step. Training on either teaches the error. The checker reads each step with
the ArithmeticTeacher's parser and has two strengths:

- ``equations``: every equation holds (``close_as_written`` allows a result rounded as
  written) and the final answer matches gold. Safe on free-form solutions: it rejects 3 of
  the 1,267 GSM8K test gold solutions it can read, two of them real slips in the gold;
- ``grounded``: besides, every number the solution writes is stated by the question
  (digits or number words) or computed by one of the solution's own equations (never taken
  from the reference solution: the text is judged on its own). This catches a misread
  question number, but free-form solutions restate implied numbers ("half an hour is 30
  minutes"), so it is only for tasks that state every number, like the synthetic one.

It applies to numeric answers (not QA options) and to solutions with at least one
equation; where it does not apply, ``check_steps`` says so instead of guessing.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

from rlmec_core.answers import answers_match
from rlmec_core.config import VerificationSection
from rlmec_core.teachers.arith_parse import Number, read_step, values_in
from rlmec_core.teachers.base import split_steps

Strength = Literal["equations", "grounded"]
_PLAIN_NUMBER = re.compile(r"^-?\$?\d[\d,]*(?:\.\d+)?%?$")


@dataclass(frozen=True)
class StepCheck:
    """The checker's verdict. ``applies``: the checker could judge the solution at all.
    ``ok``: it did and found nothing wrong. ``step``: the first step it rejects (0-based,
    ``split_steps`` numbering), else None. ``reason``: why, in words."""

    applies: bool
    ok: bool
    step: int | None = None
    reason: str = ""


def checker_applies(question: str, gold_answer: str) -> bool:
    """Whether the step checker can judge solutions of this problem: a plain numeric
    answer, and not a multiple-choice question."""
    return bool(_PLAIN_NUMBER.match(gold_answer.strip())) and "\nOptions:" not in question


def _grounded(number: Number, known: set[Fraction]) -> bool:
    return number.value in known or number.shown in known


def check_steps(
    question: str, gold_answer: str, solution: str, strength: Strength = "equations"
) -> StepCheck:
    """Judge ``solution`` step by step (see the module docstring)."""
    if strength not in ("equations", "grounded"):
        raise ValueError(f"strength must be 'equations' or 'grounded', got {strength!r}")
    if not checker_applies(question, gold_answer):
        return StepCheck(False, False, reason="not a numeric problem")
    steps = split_steps(solution)
    parsed = [read_step(step) for step in steps]
    if not any(step.equations for step in parsed):
        return StepCheck(False, False, reason="no equation to check")
    # Explanations may state a value before the equation that computes it ("He spent
    # $160 because 8 x 20 = 160"), so a value computed anywhere in the solution counts.
    known = set(values_in(question))
    for step in parsed:
        for eq in step.equations:
            if eq.result is not None:
                known |= {eq.result.value, eq.result.shown}
    for i, step in enumerate(parsed):
        for eq in step.equations:
            if not eq.holds():
                return StepCheck(True, False, i, f"step {i} has a false equation")
        if strength == "grounded":
            for number in step.numbers:
                if not _grounded(number, known):
                    return StepCheck(
                        True, False, i, f"step {i} writes {number.shown}, which nothing states"
                    )
    if not answers_match(solution, gold_answer):
        return StepCheck(True, False, len(steps) - 1, "the final answer is not the gold answer")
    return StepCheck(True, True)


class Verifier:
    """The step checker as configured (``VerificationSection``), for one row at a time.

    ``steps="auto"`` picks ``grounded`` for synthetic problems (they state every number)
    and ``equations`` for other numeric ones; ``off`` never checks.
    """

    def __init__(self, section: VerificationSection) -> None:
        self.section = section

    def strength(self, row: Mapping[str, Any]) -> Strength | None:
        """How a row's solutions are checked, or None where no check applies."""
        mode = self.section.steps
        if mode == "off" or not checker_applies(row["question"], row["gold_answer"]):
            return None
        if mode == "auto":
            return "grounded" if row.get("source") == "synthetic" else "equations"
        return mode

    def check(self, row: Mapping[str, Any], text: str) -> bool | None:
        """True: every step of ``text`` checks; False: one does not; None: not checkable."""
        strength = self.strength(row)
        if strength is None:
            return None
        verdict = check_steps(row["question"], row["gold_answer"], text, strength)
        return verdict.ok if verdict.applies else None
