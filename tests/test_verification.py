"""The step checker: known verdicts, the configured Verifier, and the gold solutions."""

from __future__ import annotations

from pathlib import Path

import pytest

from rlmec_core.config import VerificationSection
from rlmec_core.data.loaders import load_gsm8k_jsonl
from rlmec_core.data.synthetic import synthetic_splits
from rlmec_core.verification import (
    StepCheck,
    Strength,
    Verifier,
    check_steps,
    checker_applies,
)
from tests.hens import HENS_GOLD, HENS_LUCKY, HENS_Q, QA_Q

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.mark.parametrize("strength", ["equations", "grounded"])
def test_a_right_solution_passes(strength: Strength) -> None:
    assert check_steps(HENS_Q, "54", HENS_GOLD, strength) == StepCheck(True, True)


@pytest.mark.parametrize("strength", ["equations", "grounded"])
def test_a_false_equation_fails_at_its_step(strength: Strength) -> None:
    solution = HENS_GOLD.replace("60 - 10 = 50", "60 - 10 = 40").replace("50 + 4", "40 + 4")
    solution = solution.replace("= 54 eggs", "= 44 eggs").replace("is 54", "is 44")
    verdict = check_steps(HENS_Q, "44", solution, strength)
    assert (verdict.applies, verdict.ok, verdict.step) == (True, False, 1)
    assert "false equation" in verdict.reason


def test_a_misread_number_fails_grounded_only() -> None:
    assert check_steps(HENS_Q, "54", HENS_LUCKY, "equations").ok
    verdict = check_steps(HENS_Q, "54", HENS_LUCKY, "grounded")
    assert (verdict.applies, verdict.ok, verdict.step) == (True, False, 1)
    assert "writes 1," in verdict.reason


def test_a_misread_as_another_stated_number_is_grounded() -> None:
    # 4 hens for 6: 4 is stated by the question, so only the gold solution could tell.
    solution = (
        "4 hens lay 10 eggs each, so there are 4 * 10 = 40 eggs.\n"
        "She uses 10, so she has 40 - 10 = 30 eggs.\n"
        "She finds 4 more, so she has 30 + 4 = 34 eggs.\n"
        "The answer is 34"
    )
    assert check_steps(HENS_Q, "34", solution, "grounded").ok
    assert not check_steps(HENS_Q, "54", solution, "grounded").ok  # the answer is checked


def test_numbers_are_grounded_by_words_and_by_later_equations() -> None:
    question = "Tom buys 8 shirts for $20 each and three hats for $5 each. What does he spend?"
    # A value stated before the equation that computes it is grounded.
    solution = (
        "He spent $160 because 8 x 20 = 160.\n"
        "The hats cost 3 * 5 = $15.\n"  # "three" states 3
        "In all 160 + 15 = $175.\n"
        "The answer is 175"
    )
    assert check_steps(question, "175", solution, "grounded") == StepCheck(True, True)
    made_up = solution.replace("He spent $160", "He spent $170")
    verdict = check_steps(question, "175", made_up, "grounded")
    assert (verdict.ok, verdict.step) == (False, 0)


def test_a_wrong_final_answer_fails_at_the_last_step() -> None:
    solution = HENS_GOLD.replace("The answer is 54", "The answer is 50")
    verdict = check_steps(HENS_Q, "54", solution, "grounded")
    assert (verdict.applies, verdict.ok, verdict.step) == (True, False, 3)
    assert "final answer" in verdict.reason


@pytest.mark.parametrize(
    ("question", "gold_answer", "solution", "reason"),
    [
        (HENS_Q, "54", "She has many eggs.\nThe answer is 54", "no equation"),
        (HENS_Q, "54", "", "no equation"),
        (QA_Q, "bunnies", "1 + 1 = 2\nThe answer is bunnies", "not a numeric problem"),
        (HENS_Q, "2y+1", "1 + 1 = 2\nThe answer is 2y+1", "not a numeric problem"),
    ],
)
def test_where_the_checker_does_not_apply_it_says_so(
    question: str, gold_answer: str, solution: str, reason: str
) -> None:
    strengths: tuple[Strength, ...] = ("equations", "grounded")
    for strength in strengths:
        verdict = check_steps(question, gold_answer, solution, strength)
        assert (verdict.applies, verdict.ok) == (False, False)
        assert reason in verdict.reason


def test_checker_applies_to_plain_numeric_answers_only() -> None:
    for answer in ("54", "-3", "$1,250.50", "25%", "0.5"):
        assert checker_applies(HENS_Q, answer), answer
    assert not checker_applies(QA_Q, "4")
    assert not checker_applies(HENS_Q, "2y+1")
    assert not checker_applies(HENS_Q, "\\frac{1}{2}")
    with pytest.raises(ValueError, match="strength"):
        check_steps(HENS_Q, "54", HENS_GOLD, "strict")  # type: ignore[arg-type]


def _row(source: str, question: str = HENS_Q, gold_answer: str = "54") -> dict:
    return {"question": question, "gold_answer": gold_answer, "source": source}


def test_verifier_strengths() -> None:
    auto = Verifier(VerificationSection())
    assert auto.strength(_row("synthetic")) == "grounded"
    assert auto.strength(_row("gsm8k")) == "equations"
    assert auto.strength(_row("gsm8k", QA_Q, "bunnies")) is None
    off = Verifier(VerificationSection(steps="off"))
    assert off.strength(_row("synthetic")) is None
    assert off.check(_row("synthetic"), HENS_LUCKY) is None
    equations = Verifier(VerificationSection(steps="equations"))
    assert equations.strength(_row("synthetic")) == "equations"
    grounded = Verifier(VerificationSection(steps="grounded"))
    assert grounded.strength(_row("gsm8k")) == "grounded"


def test_verifier_check() -> None:
    auto = Verifier(VerificationSection())
    assert auto.check(_row("synthetic"), HENS_GOLD) is True
    assert auto.check(_row("synthetic"), HENS_LUCKY) is False  # grounded
    assert auto.check(_row("gsm8k"), HENS_LUCKY) is True  # equations only
    assert auto.check(_row("synthetic"), "No arithmetic.\nThe answer is 54") is None
    assert auto.check(_row("synthetic", QA_Q, "bunnies"), "The answer is bunnies") is None
    assert Verifier(VerificationSection(steps="equations")).check(_row("synthetic"), HENS_LUCKY)


def test_every_synthetic_gold_solution_is_grounded() -> None:
    problems = synthetic_splits(seed=0, n_train=500, n_dev=0, n_test=0)["train"]
    failed = [
        (p["gold_solution"], verdict.reason)
        for p in problems
        if not (
            verdict := check_steps(p["question"], p["gold_answer"], p["gold_solution"], "grounded")
        ).ok
    ]
    assert failed == []


def test_gsm8k_gold_solutions_pass_equations() -> None:
    records = load_gsm8k_jsonl(DATA / "gsm8k_test.jsonl")
    verdicts = [
        check_steps(r["question"], r["gold_answer"], r["gold_solution"], "equations")
        for r in records
    ]
    applicable = [v for v in verdicts if v.applies]
    assert len(applicable) >= 0.9 * len(records)
    assert sum(v.ok for v in applicable) / len(applicable) >= 0.995
