"""Wrong solutions with a known first error, made from right ones.

Two kinds of error a small policy makes, each in one step whose later steps faithfully
use the wrong value (recomputed, so they stay true arithmetic):

- ``slip``: one number of one equation is wrong (an operand copied badly, or a result
  miscomputed);
- ``misread``: a number the question states is copied wrongly into an equation (a digit
  dropped, ``10`` -> ``1``; one digit off by one, ``36`` -> ``37``; or another number of
  the question) and restated the same way in the step's prose: "She uses 1, so she has
  60 - 1 = 59 eggs." where the question says 10. ``misread+slip`` also gets that step's
  result wrong.

Perturbing gold solutions this way gives test cases whose first error step is known.
"""

from __future__ import annotations

import random
from fractions import Fraction
from typing import Literal

from rlmec_core.answers import answers_match, extract_answer
from rlmec_core.teachers.arith_parse import (
    Equation,
    Number,
    carry_forward,
    read_step,
    values_in,
)
from rlmec_core.teachers.base import split_steps

Kind = Literal["slip", "misread", "misread+slip"]
KINDS: tuple[Kind, ...] = ("slip", "misread", "misread+slip")

_ATTEMPTS = 8
_DELTAS = (1, 2, 3, 4, 5, 10)


def perturb_solution(
    solution: str, rng: random.Random, kind: Kind = "slip", question: str = ""
) -> tuple[str, int] | None:
    """(perturbed solution, index of the perturbed step), or None if none can be made.

    ``slip``: one number of one equation is changed (an operand, with the result
    recomputed, or the result itself, making the arithmetic false). ``misread`` (needs
    the ``question``): an operand the question states is misread, see the module
    docstring. Later steps carry the wrong value and the final answer changes. Returns
    None when the solution has no usable equation or no change reaches the final answer.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    steps = split_steps(solution)
    gold_answer = extract_answer(solution)
    answer_line = _answer_line(steps)
    if gold_answer is None or answer_line is None:
        return None
    if kind != "slip":
        return _misread(steps, answer_line, gold_answer, question, rng, kind == "misread+slip")
    choices = [
        (i, eq)
        for i in range(answer_line)
        for eq in read_step(steps[i]).equations
        if eq.result is not None and eq.holds()
    ]
    if not choices:
        return None
    for _ in range(_ATTEMPTS):
        i, eq = rng.choice(choices)
        change = _change_one_number(eq, rng)
        if change is None:
            continue
        fixes = {n.value: v for n, v in change.items() if n is eq.result}
        perturbed = "\n".join(carry_forward(steps, i, fixes, False, start_edits=change))
        if not answers_match(perturbed, gold_answer):
            return perturbed, i
    return None


def _answer_line(steps: list[str]) -> int | None:
    """Index of the last ``The answer is`` line, if it is the last step."""
    if steps and "the answer is" in steps[-1].lower():
        return len(steps) - 1
    return None


def _change_one_number(eq: Equation, rng: random.Random) -> dict[Number, Fraction] | None:
    """A wrong value for one number of ``eq``: its result, or an operand (then the result
    follows, see ``carry_forward``); None when that would not make a plausible slip."""
    result = eq.result
    assert result is not None
    target = rng.choice([result, *eq.operands])
    new_value = _nudge(target, rng)
    if target is result:
        return {result: new_value}
    if not _plausible(eq, {target: new_value}):
        return None
    return {target: new_value}


def _plausible(eq: Equation, change: dict[Number, Fraction]) -> bool:
    """Whether ``eq`` with ``change`` still computes a result a model might write: a new
    one, not negative where it was not, not a fraction where it was whole."""
    result = eq.result
    assert result is not None
    new_result = eq.computed(change)
    if new_result is None or new_result == result.value or (new_result < 0 <= result.value):
        return False
    # Models rarely slip into fractions where the result was whole.
    return not (result.value.denominator == 1 and new_result.denominator != 1)


def _nudge(number: Number, rng: random.Random) -> Fraction:
    """A nearby wrong value in the same style: off by a few units of its last digit."""
    shown = number.shown
    unit = Fraction(1, 10**number.decimals)
    # Below one, whole steps would change how the number looks (".25" -> "5.25").
    whole_step = shown >= 1 and rng.random() < 0.5
    delta = rng.choice(_DELTAS) * (Fraction(1) if whole_step else unit)
    if shown >= 100 and rng.random() < 0.5:
        delta = max(delta, Fraction(round(shown / 10)))
    new = shown - delta if rng.random() < 0.5 and shown - delta > 0 else shown + delta
    return new / 100 if number.percent else new


def _misread(
    steps: list[str],
    answer_line: int,
    gold_answer: str,
    question: str,
    rng: random.Random,
    slip: bool,
) -> tuple[str, int] | None:
    """A question number copied wrongly into one equation (and its step's prose)."""
    stated = sorted({n.shown for n in read_step(question).numbers if n.shown.denominator == 1})
    computed: set[Fraction] = set()
    choices: list[tuple[int, Equation, Number]] = []
    for i in range(answer_line):
        step = read_step(steps[i])
        in_step = [n.value for eq in step.equations for n in eq.numbers]
        for eq in step.equations:
            if eq.result is None or not eq.holds():
                continue
            # A question number the solution has not computed, written once in the
            # step's equations (so a prose number with its value restates this one).
            choices += [
                (i, eq, n)
                for n in eq.operands
                if n.shown in stated and n.value not in computed and in_step.count(n.value) == 1
            ]
        computed |= {eq.result.value for eq in step.equations if eq.result is not None}
    if not choices:
        return None
    for _ in range(_ATTEMPTS):
        i, eq, operand = rng.choice(choices)
        shown = _misread_value(operand.shown, stated, rng)
        if shown is None:
            continue
        change = {operand: shown / 100 if operand.percent else shown}
        if not _plausible(eq, change):
            continue
        step = read_step(steps[i])
        change |= {n: change[operand] for n in step.prose_numbers if n.value == operand.value}
        fixes: dict[Fraction, Fraction] = {}
        if slip:
            assert eq.result is not None
            if eq.result.percent:
                continue
            miscomputed = eq.computed(change)
            assert miscomputed is not None
            off = rng.choice(_DELTAS) * Fraction(1, 10**eq.result.decimals)
            low = rng.random() < 0.5 and miscomputed - off > 0
            change[eq.result] = fixes[eq.result.value] = miscomputed + (-off if low else off)
        # Later steps restate the question's numbers as they are ("Each of 2 charities").
        keep = frozenset(values_in(question))
        wrong_steps = carry_forward(steps, i, fixes, False, change, keep_in_prose=keep)
        perturbed = "\n".join(wrong_steps)
        if not answers_match(perturbed, gold_answer) and not _goes_negative(steps, wrong_steps):
            return perturbed, i
    return None


def _goes_negative(steps: list[str], wrong_steps: list[str]) -> bool:
    """Whether a value turns negative (a count below zero: a model would notice)."""
    return any(
        n.value < 0 <= min((m.value for m in read_step(old).numbers), default=0)
        for old, new in zip(steps, wrong_steps, strict=True)
        for n in read_step(new).numbers
    )


def _misread_value(shown: Fraction, stated: list[Fraction], rng: random.Random) -> Fraction | None:
    """How a whole number may be copied wrongly: a digit dropped, a digit off by one, or
    another number the question states. None when the pick gives nothing new."""
    if shown.denominator != 1 or shown <= 0:
        return None
    digits = str(shown.numerator)
    how = rng.choice(("drop", "digit", "other") if len(digits) > 1 else ("digit", "other"))
    if how == "drop":
        k = rng.randrange(len(digits))
        text = digits[:k] + digits[k + 1 :]
    elif how == "digit":
        k = rng.randrange(len(digits))
        digit = int(digits[k]) + rng.choice((-1, 1))
        text = digits[:k] + str(digit) + digits[k + 1 :] if 0 <= digit <= 9 else ""
    else:
        others = [v for v in stated if v != shown and v > 0]
        text = str(rng.choice(others)) if others else ""
    if not text or (len(text) > 1 and text[0] == "0"):
        return None
    new = Fraction(int(text))
    return new if new > 0 and new != shown else None
