"""An offline teacher for arithmetic word problems: it checks every step's arithmetic.

Two ways to find and fix the first error, tried in order:

1. **Step by step against the gold solution**, when the prediction follows the gold's
   steps: the same number of steps and, for most of them, the same wording with other
   numbers (what a policy trained on such solutions writes). Each step whose numbers
   differ gets the gold's numbers (a misread question number, a slip in the arithmetic
   and every value that follows from them: exactly the minimal edit), and a step that does
   something else (another operation) is replaced by the gold's step. The first step that
   changes is the first error.
2. **By reading the prediction's own arithmetic**, for solutions in their own words: the
   first error is the first step whose equation is false, or (when the final answer is
   wrong) whose equation uses a number found neither in the question, the gold solution
   nor an earlier result; failing both, the first step whose result the gold solution
   never reaches. The repair corrects the wrong number, in the step's prose as well, and
   recomputes the later steps that used it, keeping their wording; when that does not
   work it keeps the steps before the error that lie on the gold's path (a step whose
   value the gold never reaches is cut too) and continues with the gold's steps.

Every rewrite is checked before it is returned: every equation must hold and the final
answer must be gold's (``rlmec_core.verification``), so a wrong step is never kept.
"""

from __future__ import annotations

import re
from collections import Counter
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
from rlmec_core.verification import check_steps, checker_applies

# Conversions a solution may use without the question stating them (week, dozen, hour...).
# (Small numbers such as 1, 2, 10 are left out: a slip to them would go unnoticed.)
_CONSTANTS = frozenset(Fraction(v) for v in (7, 12, 24, 52, 60, 100, 365, 1000))
_ANSWER_LINE = re.compile(r"the answer is", re.IGNORECASE)
_DIGIT_RUN = re.compile(r"\d+(?:[.,]\d+)*")


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
        if gold_answer is None or not checker_applies(question, gold_answer):
            return None  # QA options, symbolic answers: not a domain this teacher reads
        steps = split_steps(prediction)
        if not steps:
            return None
        answer_ok = answers_match(prediction, gold_answer)
        if answer_ok and check_steps(question, gold_answer, prediction, "grounded").ok:
            return Rewrite(-1, prediction)
        aligned = _aligned_rewrite(steps, split_steps(gold_solution), gold_answer)
        if aligned is not None and (
            aligned.error_step == -1 or _acceptable(aligned.text, question, gold_solution)
        ):
            return aligned
        parsed = [read_step(step) for step in steps]
        grounded = values_in(question) | values_in(gold_solution) | _CONSTANTS
        gold = [read_step(step) for step in split_steps(gold_solution)]
        verdict = _first_error(parsed, gold, grounded, answer_ok)
        if verdict is None and answer_ok:
            return Rewrite(-1, prediction)
        if verdict is None:
            return None
        return _repair(steps, verdict, question, gold_solution, gold_answer)


def _masked(step: str) -> str:
    """A step's wording with every number blanked: equal for two steps that say the same
    thing about (possibly) different numbers."""
    return _DIGIT_RUN.sub("#", step)


def _aligned_rewrite(steps: list[str], gold_steps: list[str], gold_answer: str) -> Rewrite | None:
    """The rewrite of a prediction that follows the gold solution's steps, else None.

    It follows them when it has as many steps before its answer line and most of them are
    worded as the gold's. Then a step worded as the gold's can only differ in its numbers,
    and giving it the gold's numbers is the minimal edit (the wrong number and every value
    computed from it); a step that does something else becomes the gold's step. Steps
    after the answer line are dropped. ``error_step`` -1 when nothing needed a change.
    """
    answer_at, gold_answer_at = _answer_line(steps), _answer_line(gold_steps)
    body = steps[:answer_at] if answer_at is not None else steps
    if gold_answer_at is None or not body or len(body) != gold_answer_at:
        return None
    gold_body = gold_steps[:gold_answer_at]
    same_wording = sum(_masked(p) == _masked(g) for p, g in zip(body, gold_body, strict=True))
    if 2 * same_wording < len(body):
        return None
    answer = (
        _with_answer(steps[answer_at], gold_answer)
        if answer_at is not None
        else gold_steps[gold_answer_at]
    )
    rewritten = [*gold_body, answer]
    original = [*body, steps[answer_at] if answer_at is not None else None]
    first = next(
        (i for i, (a, b) in enumerate(zip(original, rewritten, strict=True)) if a != b), None
    )
    if first is None and answer_at is not None and answer_at == len(steps) - 1:
        return Rewrite(-1, "\n".join(steps))
    if first is None:  # a missing answer line, or lines after a right one
        first = len(body) if answer_at is None else answer_at + 1
    return Rewrite(first, "\n".join(rewritten))


def _acceptable(text: str, question: str, gold_solution: str) -> bool:
    """A rewrite the teacher may hand out: every equation holds, the final answer is gold's,
    and every operand is stated by the problem or computed earlier in the rewrite itself.

    The last rule is what rejects a kept wrong step followed by the gold's remaining steps:
    those use the gold's intermediate results, which the rewrite never computed. Numbers
    the gold solution uses before computing them ("30 minutes") count as stated.
    """
    gold_answer = extract_answer(gold_solution)
    if gold_answer is None or not check_steps(question, gold_answer, text, "equations").ok:
        return False
    known = set(values_in(question) | _CONSTANTS) | _gold_inputs(gold_solution)
    for step in split_steps(text):
        for eq in read_step(step).equations:
            if not all(_states(n, known) for n in eq.operands):
                return False
            if eq.result is not None:
                known |= {eq.result.value, eq.result.shown}
    return True


def _gold_inputs(gold_solution: str) -> set[Fraction]:
    """Values the gold solution's equations use before (or without) computing them."""
    inputs: set[Fraction] = set()
    computed: set[Fraction] = set()
    for step in split_steps(gold_solution):
        for eq in read_step(step).equations:
            inputs |= {n.value for n in eq.operands if not _states(n, computed)}
            if eq.result is not None:
                computed |= {eq.result.value, eq.result.shown}
    return inputs


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
            edits = {**swap, **_restatements(read_step(steps[i]), eq, swap)}
            candidates.append(
                carry_forward(steps, i, fixes, True, edits, keep_in_prose=question_values)
            )
    elif verdict.kind == "answer":
        candidates.append([*steps[:i], _with_answer(steps[i], gold_answer)])
    for candidate in candidates:
        text = "\n".join(candidate)
        if answers_match(text, gold_answer) and _acceptable(text, question, gold_solution):
            return Rewrite(i, text)
    # Continuing with the gold's steps: keep only the part of the prefix on the gold's path,
    # and add nothing after a kept answer line that states gold (lines after it were wrong).
    k = _gold_path_prefix(steps[:i], gold_steps)
    done = (
        k > 0
        and bool(_ANSWER_LINE.search(steps[k - 1]))
        and answers_match(steps[k - 1], gold_answer)
    )
    text = "\n".join(steps[:k] + ([] if done else _gold_continuation(steps[:k], gold_steps)))
    if answers_match(text, gold_answer) and _acceptable(text, question, gold_solution):
        return Rewrite(k, text)
    return None


def _gold_path_prefix(prefix: list[str], gold_steps: list[str]) -> int:
    """How many steps of ``prefix`` a rewrite that continues with the gold's steps keeps.

    It stops before the first step computing a value the gold never reaches, or making a
    computation more often than the gold does (counting the continuation's): the
    continuation never uses such a step, so it is a dead end at best and more likely
    wrong (a question number misread as another one, "3 packs of 10" for "3 packs of 12",
    is true arithmetic on stated numbers).
    """
    results, _ = _results_and_equations([read_step(text) for text in gold_steps])
    allowed = Counter(_signature(eq) for eq in _computations(gold_steps))
    k = len(prefix)
    while True:
        made = Counter(
            _signature(eq) for eq in _computations(_gold_continuation(prefix[:k], gold_steps))
        )
        cut = None
        for j, text in enumerate(prefix[:k]):
            for eq in _computations([text]):
                made[_signature(eq)] += 1
                assert eq.result is not None
                dead = (
                    not _states(eq.result, results)
                    or made[_signature(eq)] > allowed[_signature(eq)]
                )
                cut = j if cut is None and dead else cut
        if cut is None:
            return k
        k = cut


def _computations(texts: list[str]) -> list[Equation]:
    """The equations of ``texts`` that compute a result, in order."""
    return [eq for text in texts for eq in read_step(text).equations if eq.result is not None]


def _restatements(step: Step, eq: Equation, swap: dict[Number, Fraction]) -> dict[Number, Fraction]:
    """Prose numbers of ``step`` that restate a misread operand ("She uses 1, so 60 - 1"),
    with the operand's corrected value. A value that is also a kept operand is ambiguous
    and left alone."""
    kept = {n.value for n in eq.operands if n not in swap}
    changed = {
        n.value: new for n, new in swap.items() if n is not eq.result and n.value not in kept
    }
    return {n: changed[n.value] for n in step.prose_numbers if n.value in changed}


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
