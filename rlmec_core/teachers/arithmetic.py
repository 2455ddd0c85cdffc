"""An offline teacher for arithmetic word problems: it checks every step's arithmetic.

The first error step is the first step whose equation is false, or (when the final
answer is wrong) whose equation uses a number found neither in the question, the gold
solution nor an earlier result; failing both, the first step whose result the gold
solution never reaches. The rewrite keeps the steps before it verbatim, corrects the
wrong number and recomputes the later steps that used it, keeping their wording. When
that does not reach the gold answer it continues from the gold solution instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction

from rlmec_core.answers import answers_match, extract_answer
from rlmec_core.teachers.arith_parse import (
    Equation,
    Number,
    Step,
    carry_forward,
    close_as_written,
    read_step,
    replace_numbers,
    values_in,
)
from rlmec_core.teachers.base import Rewrite, split_steps

# Conversions a solution may use without the question stating them (week, dozen, hour...).
# (Small numbers such as 1, 2, 10 are left out: a slip to them would go unnoticed.)
_CONSTANTS = frozenset(Fraction(v) for v in (7, 12, 24, 52, 60, 100, 365, 1000))
_ANSWER_LINE = re.compile(r"the answer is", re.IGNORECASE)
_PLAIN_NUMBER = re.compile(r"^-?\$?\d[\d,]*(?:\.\d+)?%?$")


@dataclass(frozen=True)
class _Verdict:
    step: int
    kind: str  # "arithmetic", "operand", "value" or "answer"
    equation: Equation | None


class ArithmeticTeacher:
    """A program that plays the teacher of stage 2 for numeric word problems."""

    name = "arithmetic"

    def rewrite(self, question: str, gold_solution: str, prediction: str) -> Rewrite | None:
        gold_answer = extract_answer(gold_solution)
        if gold_answer is None or not _PLAIN_NUMBER.match(gold_answer.strip()):
            return None  # QA options, symbolic answers: not a domain this teacher reads
        if "\nOptions:" in question:
            return None
        steps = split_steps(prediction)
        if not steps:
            return None
        parsed = [read_step(step) for step in steps]
        answer_ok = answers_match(prediction, gold_answer)
        grounded = values_in(question) | values_in(gold_solution) | _CONSTANTS
        gold = [read_step(step) for step in split_steps(gold_solution)]
        verdict = _first_error(parsed, gold, grounded, answer_ok)
        if verdict is None and answer_ok:
            return Rewrite(-1, prediction)
        if verdict is None:
            return None
        return _repair(steps, verdict, question, gold_solution, gold_answer)


def _answer_line(steps: list[str]) -> int | None:
    """Index of the last step that states the final answer, if any."""
    lines = [i for i, step in enumerate(steps) if _ANSWER_LINE.search(step)]
    return lines[-1] if lines else None


def _states(number: Number, values: set[Fraction] | frozenset[Fraction]) -> bool:
    return number.value in values or number.shown in values


def _first_error(
    parsed: list[Step], gold: list[Step], grounded: frozenset[Fraction], answer_ok: bool
) -> _Verdict | None:
    """Where the prediction first goes wrong; None when nothing is wrong or readable."""
    answer_line = _answer_line([step.text for step in parsed])
    body = parsed[:answer_line] if answer_line is not None else parsed
    known = set(grounded)
    for i, step in enumerate(body):
        for eq in step.equations:
            if not eq.holds():
                return _Verdict(i, "arithmetic", eq)
            # A right answer may take its own route; only a wrong one is checked for
            # numbers that come from nowhere (an operand copied wrongly).
            if not answer_ok and not all(_states(n, known) for n in eq.operands):
                return _Verdict(i, "operand", eq)
            if eq.result is not None:
                known |= {eq.result.value, eq.result.shown}
    if answer_ok or not any(step.equations for step in body):
        return None
    gold_results, gold_equations = _results_and_equations(gold)
    equations = [(i, eq) for i, step in enumerate(body) for eq in step.equations]
    # A computation the gold solution never makes: a result it never reaches, or a
    # reached value by a different computation (e.g. "1 * 2 = 2" where gold has "4 / 2 = 2").
    for i, eq in equations:
        if eq.result is None:
            continue
        if not _states(eq.result, gold_results) or _signature(eq) not in gold_equations:
            return _Verdict(i, "value", eq)
    if answer_line is None:
        return None
    return _Verdict(answer_line, "answer", None)


_Signature = tuple[tuple[Fraction, ...], Fraction]


def _signature(eq: Equation) -> _Signature:
    """An equation by value: its sorted operands and its result."""
    assert eq.result is not None
    return tuple(sorted(n.value for n in eq.operands)), eq.result.value


def _results_and_equations(gold: list[Step]) -> tuple[set[Fraction], set[_Signature]]:
    results: set[Fraction] = set()
    signatures = set()
    for step in gold:
        for eq in step.equations:
            if eq.result is not None:
                results |= {eq.result.value, eq.result.shown}
                signatures.add(_signature(eq))
    return results, signatures


def _repair(
    steps: list[str], verdict: _Verdict, question: str, gold_solution: str, gold_answer: str
) -> Rewrite | None:
    """The first candidate rewrite that reaches the gold answer, most minimal first."""
    i, eq = verdict.step, verdict.equation
    gold_steps = split_steps(gold_solution)
    question_values = frozenset(values_in(question))
    candidates: list[list[str]] = []
    if verdict.kind == "arithmetic":
        candidates.append(carry_forward(steps, i, {}, True, keep_in_prose=question_values))
    elif verdict.kind in ("operand", "value") and eq is not None:
        start = eq.numbers[0].start
        before = [e for e in read_step(steps[i]).equations if e.numbers[0].start < start]
        done = _signatures(steps[:i]) | {_signature(e) for e in before if e.result is not None}
        swap = _swap_from_gold(eq, [read_step(s) for s in gold_steps], done)
        if swap is not None and eq.result is not None:
            fixes = {eq.result.value: swap[eq.result]}
            candidates.append(
                carry_forward(steps, i, fixes, True, swap, keep_in_prose=question_values)
            )
    elif verdict.kind == "answer":
        candidates.append([*steps[:i], _with_answer(steps[i], gold_answer)])
    if candidates and verdict.kind != "answer":
        # The corrected step, then the gold solution's remaining steps.
        kept = candidates[0][: i + 1]
        candidates.append(kept + _gold_continuation(kept, gold_steps))
    candidates.append(steps[:i] + _gold_continuation(steps[:i], gold_steps))
    for candidate in candidates:
        text = "\n".join(candidate)
        if answers_match(text, gold_answer):
            return Rewrite(i, text)
    return None


def _swap_from_gold(
    eq: Equation, gold: list[Step], done: set[_Signature]
) -> dict[Number, Fraction] | None:
    """New values for one operand and the result of ``eq``, from a gold equation.

    A gold equation with as many operands, all but one equal in value to ``eq``'s, whose
    missing value put in place of ``eq``'s odd one out gives the gold result. Gold
    equations the prediction has already ``done`` are not the one it was attempting.
    """
    result = eq.result
    if result is None:
        return None
    operands = eq.operands
    for step in gold:
        for gold_eq in step.equations:
            gold_result = gold_eq.result
            if gold_result is None or len(gold_eq.operands) != len(operands):
                continue
            if _signature(gold_eq) in done:
                continue
            # Match operands in place first ("3 * 3" against "8 * 3": the first is odd).
            pairs = list(zip(operands, gold_eq.operands, strict=True))
            odd = [n for n, g in pairs if n.value != g.value]
            unmatched = [g.value for n, g in pairs if n.value != g.value]
            for n in list(odd):
                if n.value in unmatched:
                    unmatched.remove(n.value)
                    odd.remove(n)
            if len(odd) != 1:
                continue
            swap = {odd[0]: unmatched[0]}
            value = eq.computed(swap)
            if value is not None and close_as_written(value, gold_result):
                return {**swap, result: gold_result.value}
    return None


def _signatures(prefix: list[str]) -> set[_Signature]:
    return {
        _signature(eq)
        for text in prefix
        for eq in read_step(text).equations
        if eq.result is not None
    }


def _gold_continuation(prefix: list[str], gold_steps: list[str]) -> list[str]:
    """The gold steps from the first one with a computation the kept prefix has not done."""
    done = _signatures(prefix)
    for j, text in enumerate(gold_steps[:-1]):
        equations = [eq for eq in read_step(text).equations if eq.result is not None]
        if any(_signature(eq) not in done for eq in equations):
            return gold_steps[j:]
    return gold_steps[-1:]


def _with_answer(line: str, gold_answer: str) -> str:
    """The answer line stating the gold answer, in its own wording where it has one number."""
    numbers = read_step(line).numbers
    if len(numbers) == 1:
        value = Fraction(gold_answer.replace(",", "").replace("$", "").rstrip("%"))
        return replace_numbers(line, {numbers[0]: value / 100 if numbers[0].percent else value})
    return f"The answer is {gold_answer}"
