"""The offline ArithmeticTeacher: first error step and minimum-edit rewrite."""

from __future__ import annotations

import random
from fractions import Fraction
from pathlib import Path

import pytest

from rlmec_core.answers import answers_match
from rlmec_core.data.loaders import load_gsm8k_jsonl
from rlmec_core.teachers.arith_parse import format_like, read_step
from rlmec_core.teachers.arithmetic import ArithmeticTeacher
from rlmec_core.teachers.base import Rewrite, Teacher, split_steps
from rlmec_core.teachers.perturb import perturb_solution

DATA = Path(__file__).resolve().parent.parent / "data"

PENCILS_Q = (
    "Tom buys 3 packs of 12 pencils. He gives away 10 pencils and splits the rest "
    "equally between 2 friends. How many pencils does each friend get?"
)
PENCILS_GOLD = (
    "Tom has 3 * 12 = 36 pencils.\n"
    "After giving some away he has 36 - 10 = 26 pencils.\n"
    "Each friend gets 26 / 2 = 13 pencils.\n"
    "The answer is 13"
)
DUCKS_Q = (
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and "
    "bakes muffins for her friends every day with four. She sells the remainder at the "
    "farmers' market daily for $2 per fresh duck egg. How much in dollars does she make "
    "every day at the farmers' market?"
)
DUCKS_GOLD = (
    "Janet sells 16 - 3 - 4 = 9 duck eggs a day.\n"
    "She makes 9 * 2 = $18 every day at the farmer's market.\n"
    "The answer is 18"
)
HOUSE_Q = (
    "Josh decides to try flipping a house. He buys a house for $80,000 and then puts in "
    "$50,000 in repairs. This increased the value of the house by 150%. How much profit "
    "did he make?"
)
HOUSE_GOLD = (
    "The cost of the house and repairs came out to 80,000+50,000=$130,000\n"
    "He increased the value of the house by 80,000*1.5=120,000\n"
    "So the new value of the house is 120,000+80,000=$200,000\n"
    "So he made a profit of 200,000-130,000=$70,000\n"
    "The answer is 70000"
)


@pytest.fixture(scope="module")
def teacher() -> ArithmeticTeacher:
    return ArithmeticTeacher()


def test_is_a_teacher(teacher: ArithmeticTeacher) -> None:
    assert isinstance(teacher, Teacher)
    assert teacher.name == "arithmetic"


def test_wrong_arithmetic_in_the_middle_step_is_found_and_carried_forward(
    teacher: ArithmeticTeacher,
) -> None:
    prediction = (
        "Tom has 3 * 12 = 36 pencils.\n"
        "After giving some away he has 36 - 10 = 24 pencils.\n"
        "Each friend gets 24 / 2 = 12 pencils.\n"
        "The answer is 12"
    )
    assert teacher.rewrite(PENCILS_Q, PENCILS_GOLD, prediction) == Rewrite(1, PENCILS_GOLD)


def test_wrongly_copied_operand_is_found_and_replaced(teacher: ArithmeticTeacher) -> None:
    # 36 - 14 = 22 is true arithmetic, but 14 is in neither the question nor the gold.
    prediction = PENCILS_GOLD.replace("36 - 10 = 26", "36 - 14 = 22").replace("26", "22")
    prediction = prediction.replace("22 / 2 = 13", "22 / 2 = 11").replace("is 13", "is 11")
    assert teacher.rewrite(PENCILS_Q, PENCILS_GOLD, prediction) == Rewrite(1, PENCILS_GOLD)


def test_operand_taken_from_the_question_but_the_wrong_one(teacher: ArithmeticTeacher) -> None:
    # 3 is a question number (3 packs), so only the gold's computations reveal the slip.
    prediction = (
        "Tom has 3 * 12 = 36 pencils.\n"
        "After giving some away he has 36 - 10 = 26 pencils.\n"
        "Each friend gets 26 / 3 = 8.67 pencils.\n"
        "The answer is 8.67"
    )
    result = teacher.rewrite(PENCILS_Q, PENCILS_GOLD, prediction)
    assert result == Rewrite(2, PENCILS_GOLD)


def test_rewrite_keeps_the_predictions_own_wording(teacher: ArithmeticTeacher) -> None:
    prediction = (
        "First, 3 packs hold 3 x 12 = 38 pencils in total.\n"
        "Then 38 - 10 = 28 remain.\n"
        "So each friend gets 28 / 2 = 14.\n"
        "The answer is 14"
    )
    expected = (
        "First, 3 packs hold 3 x 12 = 36 pencils in total.\n"
        "Then 36 - 10 = 26 remain.\n"
        "So each friend gets 26 / 2 = 13.\n"
        "The answer is 13"
    )
    assert teacher.rewrite(PENCILS_Q, PENCILS_GOLD, prediction) == Rewrite(0, expected)


def test_chain_equation_with_dollar_signs(teacher: ArithmeticTeacher) -> None:
    prediction = (
        "Janet sells 16 - 3 - 4 = 8 duck eggs a day.\n"
        "She makes 8 * 2 = $16 every day at the farmer's market.\n"
        "The answer is 16"
    )
    assert teacher.rewrite(DUCKS_Q, DUCKS_GOLD, prediction) == Rewrite(0, DUCKS_GOLD)


def test_thousands_separators_are_read_and_written_back(teacher: ArithmeticTeacher) -> None:
    prediction = HOUSE_GOLD.replace("120,000+80,000=$200,000", "120,000+80,000=$210,000")
    prediction = prediction.replace("200,000-130,000=$70,000", "210,000-130,000=$80,000")
    prediction = prediction.replace("is 70000", "is 80000")
    assert teacher.rewrite(HOUSE_Q, HOUSE_GOLD, prediction) == Rewrite(2, HOUSE_GOLD)


def test_arithmetic_error_after_a_route_of_its_own(teacher: ArithmeticTeacher) -> None:
    # Step 0 is not in the gold (3 + 4 = 7) but is right; the false step 1 is the error.
    prediction = (
        "She uses 3 + 4 = 7 eggs.\nShe sells 16 - 7 = 10.\nShe makes 10 * 2 = 20.\nThe answer is 20"
    )
    result = teacher.rewrite(DUCKS_Q, DUCKS_GOLD, prediction)
    assert result == Rewrite(
        1,
        "She uses 3 + 4 = 7 eggs.\nShe sells 16 - 7 = 9.\nShe makes 9 * 2 = 18.\nThe answer is 18",
    )


def test_wrong_final_line_only(teacher: ArithmeticTeacher) -> None:
    prediction = DUCKS_GOLD.replace("The answer is 18", "The answer is 9")
    assert teacher.rewrite(DUCKS_Q, DUCKS_GOLD, prediction) == Rewrite(2, DUCKS_GOLD)


def test_unrepairable_step_continues_from_the_gold(teacher: ArithmeticTeacher) -> None:
    # A wrong operation (16 + 3 + 4) matches no gold computation by one number: the rewrite
    # keeps nothing after the error and continues with the gold's steps.
    prediction = (
        "Janet has 16 + 3 + 4 = 23 eggs.\nShe makes 23 * 2 = $46 every day.\nThe answer is 46"
    )
    assert teacher.rewrite(DUCKS_Q, DUCKS_GOLD, prediction) == Rewrite(0, DUCKS_GOLD)


def test_correct_prediction_is_judged_correct(teacher: ArithmeticTeacher) -> None:
    assert teacher.rewrite(DUCKS_Q, DUCKS_GOLD, DUCKS_GOLD) == Rewrite(-1, DUCKS_GOLD)
    own_route = "She uses 3 + 4 = 7 eggs.\nShe sells 16 - 7 = 9.\n9 * 2 = 18\nThe answer is $18."
    assert teacher.rewrite(DUCKS_Q, DUCKS_GOLD, own_route) == Rewrite(-1, own_route)


def test_right_answer_with_a_false_step_still_names_the_step(teacher: ArithmeticTeacher) -> None:
    prediction = "Janet sells 16 - 3 - 4 = 9 duck eggs.\nShe makes 9 * 2 = $20.\nThe answer is 18"
    result = teacher.rewrite(DUCKS_Q, DUCKS_GOLD, prediction)
    assert result is not None and result.error_step == 1
    assert answers_match(result.text, "18")


@pytest.mark.parametrize(
    ("question", "gold", "prediction"),
    [
        (DUCKS_Q, DUCKS_GOLD, "She makes a lot of money.\nThe answer is 20"),  # no arithmetic
        (DUCKS_Q, DUCKS_GOLD, ""),
        (
            "Predators eat\nOptions:\nlions\nhumans\nbunnies\ngrass",
            "The answer is bunnies",
            "Predators eat prey.\nThe answer is grass",
        ),
        (DUCKS_Q, "So x = 2y + 1\nThe answer is 2y+1", "1 + 1 = 2\nThe answer is 2"),  # symbolic
    ],
)
def test_abstains_when_it_cannot_read(
    teacher: ArithmeticTeacher, question: str, gold: str, prediction: str
) -> None:
    assert teacher.rewrite(question, gold, prediction) is None


@pytest.mark.parametrize(
    ("text", "sides"),
    [
        ("Together 20 sheep + 160 sheep + 80 sheep = 260 sheep", [["20+160+80", "260"]]),
        ("He makes $10.5 because 7 x 1.5 = 10.5", [["7*3/2", "21/2"]]),
        ("She got 80,000+50,000=$<<80000+50000=130000>>130,000", [["80000+50000", "130000"]] * 2),
        ("Scottish Unicorns:27(1/3)=9", [["27*(1/3)", "9"]]),
        ("-48 + 21 + (-3) = -30", [["-48+21+(-3)", "-30"]]),
        ("20% of 50 = 10", [["1/5*50", "10"]]),
        ("After Friday, he had 3 1/2 - 2 = 1 1/2 hours", [["7/2-2", "3/2"]]),
        ("4 students drank 1.5 quarts = 4 * 1.5 = 6 quarts", [["4*3/2", "6"]]),
        ("Then (7/2)x = 105 and 2x + 3 = 7", []),  # algebra is not arithmetic we check
        ("1 foot = 12 inches", []),  # no operator: a conversion, not a computation
    ],
)
def test_reads_equations(text: str, sides: list[list[str]]) -> None:
    def show(side: tuple) -> str:
        return "".join(str(t.value) if not isinstance(t, str) else t for t in side)

    equations = read_step(text).equations
    assert [[show(side) for side in eq.segments] for eq in equations] == sides
    assert all(eq.holds() for eq in equations)


def test_writes_numbers_in_their_own_style() -> None:
    number = read_step("It costs $1,250.50 now").numbers[0]
    assert format_like(number, Fraction(2000)) == "2,000.00"
    assert format_like(read_step("x 145.83 y").numbers[0], Fraction(147)) == "147"
    assert format_like(read_step("x 3 y").numbers[0], Fraction(2, 3)) == "0.67"
    assert format_like(read_step("x 25% y").numbers[0], Fraction(3, 10)) == "30"


def test_perturbation_changes_one_step_and_carries_it() -> None:
    rng = random.Random(7)
    perturbed = perturb_solution(PENCILS_GOLD, rng)
    assert perturbed is not None
    text, index = perturbed
    before, after = split_steps(PENCILS_GOLD), split_steps(text)
    assert len(after) == len(before)
    assert after[:index] == before[:index] and after[index] != before[index]
    assert not answers_match(text, "13")
    assert perturb_solution(PENCILS_GOLD, random.Random(7)) == perturbed  # seeded
    assert perturb_solution("No arithmetic here.\nThe answer is 5", rng) is None


def test_on_perturbed_gsm8k_the_teacher_finds_the_step_and_the_answer(
    teacher: ArithmeticTeacher,
) -> None:
    records = load_gsm8k_jsonl(DATA / "gsm8k_test.jsonl")
    rng = random.Random(0)
    cases = found_and_recovered = judged_correct = 0
    for record in records:
        question, gold = record["question"], record["gold_solution"]
        verdict = teacher.rewrite(question, gold, gold)
        judged_correct += verdict is not None and verdict.error_step == -1
        perturbed = perturb_solution(gold, rng)
        if perturbed is None:
            continue
        text, step = perturbed
        cases += 1
        result = teacher.rewrite(question, gold, text)
        found_and_recovered += (
            result is not None
            and result.error_step == step
            and answers_match(result.text, record["gold_answer"])
        )
    assert cases >= 1000  # most GSM8K solutions have arithmetic to perturb
    assert found_and_recovered / cases >= 0.95
    assert judged_correct / len(records) >= 0.99
