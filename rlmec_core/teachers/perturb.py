"""Wrong solutions with a known first error, made from right ones.

A model's typical arithmetic slip: one number in one step is wrong (an operand copied
badly, or a result miscomputed) and every later step faithfully uses the wrong value.
Perturbing gold solutions this way gives test cases whose first error step is known.
"""

from __future__ import annotations

import random
from fractions import Fraction

from rlmec_core.answers import answers_match, extract_answer
from rlmec_core.teachers.arith_parse import (
    Equation,
    Number,
    carry_forward,
    read_step,
)
from rlmec_core.teachers.base import split_steps

_ATTEMPTS = 8
_DELTAS = (1, 2, 3, 4, 5, 10)


def perturb_solution(solution: str, rng: random.Random) -> tuple[str, int] | None:
    """(perturbed solution, index of the perturbed step), or None if none can be made.

    One number of one equation is changed (an operand, with the result recomputed, or the
    result itself, making the arithmetic false); later steps carry the wrong value and the
    final answer changes. Returns None when the solution has no usable equation or no
    change reaches the final answer.
    """
    steps = split_steps(solution)
    gold_answer = extract_answer(solution)
    answer_line = _answer_line(steps)
    if gold_answer is None or answer_line is None:
        return None
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
    new_result = eq.computed({target: new_value})
    if new_result is None or new_result == result.value or (new_result < 0 <= result.value):
        return None
    if result.value.denominator == 1 and new_result.denominator != 1:
        return None  # models rarely slip into fractions where the result was whole
    return {target: new_value}


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
