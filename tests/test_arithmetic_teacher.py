"""The offline ArithmeticTeacher: first error step and minimum-edit rewrite."""

from __future__ import annotations

import random
import re
from fractions import Fraction
from pathlib import Path

import pytest

from rlmec_core.answers import answers_match, extract_answer
from rlmec_core.data.loaders import load_gsm8k_jsonl
from rlmec_core.data.synthetic import synthetic_splits
from rlmec_core.teachers.arith_parse import format_like, read_step
from rlmec_core.teachers.arithmetic import ArithmeticTeacher
from rlmec_core.teachers.base import Rewrite, Teacher, split_steps
from rlmec_core.teachers.perturb import Kind, perturb_solution
from rlmec_core.verification import check_steps
from tests.hens import HENS_GOLD, HENS_Q

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


OWN_WORDING = (
    "First, 3 packs hold 3 x 12 = {0} pencils in total.\n"
    "Then {0} - 10 = {1} remain.\n"
    "So each friend gets {1} / 2 = {2}.\n"
    "The answer is {2}"
)


@pytest.mark.parametrize(
    ("prediction", "expected"),
    [
        pytest.param(
            "Tom has 3 * 12 = 36 pencils.\n"
            "After giving some away he has 36 - 10 = 24 pencils.\n"
            "Each friend gets 24 / 2 = 12 pencils.\n"
            "The answer is 12",
            Rewrite(1, PENCILS_GOLD),
            id="middle-step-error-carried-forward",
        ),
        pytest.param(
            OWN_WORDING.format(38, 28, 14),
            Rewrite(0, OWN_WORDING.format(36, 26, 13)),
            id="keeps-the-predictions-own-wording",
        ),
    ],
)
def test_wrong_calculation_is_found_and_its_consequences_redone(
    teacher: ArithmeticTeacher, prediction: str, expected: Rewrite
) -> None:
    assert teacher.rewrite(PENCILS_Q, PENCILS_GOLD, prediction) == expected


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


# --- Misread numbers: a question number copied wrongly, restated in prose, carried on ---

HENS_BODY = HENS_GOLD.rsplit("\n", 1)[0]
HENS_MISREAD_BODY = (
    "6 hens lay 10 eggs each, so there are 6 * 10 = 60 eggs.\n"
    "She uses 1, so she has 60 - 1 = 59 eggs.\n"
    "She finds 4 more, so she has 59 + 4 = 63 eggs."
)


@pytest.mark.parametrize(
    ("prediction", "error_step"),
    [
        # 10 misread as 1, restated in the prose, carried into the later steps.
        (HENS_MISREAD_BODY + "\nThe answer is 63", 1),
        # The same misread with the prose left right: only the equation is wrong.
        (HENS_MISREAD_BODY.replace("uses 1,", "uses 10,") + "\nThe answer is 63", 1),
        # Another number of the question (4 for 6 hens), restated, carried forward.
        (
            "4 hens lay 10 eggs each, so there are 4 * 10 = 40 eggs.\n"
            "She uses 10, so she has 40 - 10 = 30 eggs.\n"
            "She finds 4 more, so she has 30 + 4 = 34 eggs.\n"
            "The answer is 34",
            0,
        ),
        # A misread and a slip in the same step (60 - 1 = 58).
        (
            HENS_MISREAD_BODY.replace("= 59", "= 58").replace("59 +", "58 +")
            + "\nThe answer is 62",
            1,
        ),
        # A wrong operation: the step becomes the gold's step.
        (
            "6 hens lay 10 eggs each, so there are 6 * 10 = 60 eggs.\n"
            "She uses 10, so she has 60 + 10 = 70 eggs.\n"
            "She finds 4 more, so she has 70 + 4 = 74 eggs.\n"
            "The answer is 74",
            1,
        ),
        (HENS_BODY + "\nThe answer is 50", 3),  # the answer line alone is wrong
        (HENS_BODY, 3),  # no answer line: the first missing line is the error
        (HENS_MISREAD_BODY, 1),  # a misread and no answer line
        # Lines after a right answer line are dropped; the first of them is the error.
        (HENS_GOLD + "\nThen she buys 3 more, so she has 54 + 3 = 57 eggs.", 4),
        (HENS_GOLD + "\nThen she buys 3 more, so she has 54 + 3 = 57 eggs.\nThe answer is 57", 4),
    ],
)
def test_synthetic_solution_is_rewritten_to_the_gold(
    teacher: ArithmeticTeacher, prediction: str, error_step: int
) -> None:
    assert teacher.rewrite(HENS_Q, HENS_GOLD, prediction) == Rewrite(error_step, HENS_GOLD)


def test_misread_in_a_generated_synthetic_problem(teacher: ArithmeticTeacher) -> None:
    # A real problem of the generator; 10 is stated three times and is also the answer.
    problem = synthetic_splits(seed=0, n_train=5, n_dev=0, n_test=0)["train"][4]
    question, gold = problem["question"], problem["gold_solution"]
    assert "She uses 10, so she has 60 - 10 = 50 eggs." in gold
    prediction = (
        gold.replace("uses 10, so she has 60 - 10 = 50", "uses 1, so she has 60 - 1 = 59")
        .replace("50 + 10 = 60", "59 + 10 = 69")
        .replace("60 / 6 = 10", "69 / 6 = 11.5")
        .replace("The answer is 10", "The answer is 11.5")
    )
    assert prediction.count("11.5") == 2
    assert teacher.rewrite(question, gold, prediction) == Rewrite(1, gold)


JANE_Q = (
    "Jane has saved $4 of her allowance every week for the past 8 weeks. If she continues "
    "to save the same amount each week, how many more weeks will it take for her to have "
    "saved a total of $60?"
)
JANE_GOLD = (
    "She has already saved 8 * $4 = $32.\n"
    "She needs to save an additional $60 - $32 = $28.\n"
    "It will take her 28 / 4 = 7 more weeks to save the rest of the money.\n"
    "The answer is 7"
)


@pytest.mark.parametrize(
    ("question", "gold", "prediction", "expected"),
    [
        # 8 weeks misread as 6 (stated nowhere), restated in the prose.
        (
            JANE_Q,
            JANE_GOLD,
            "Jane saved 4 dollars for 6 weeks, so 4 * 6 = 24 dollars so far.\n"
            "She still needs 60 - 24 = 36 dollars.\n"
            "That takes 36 / 4 = 9 more weeks.\n"
            "The answer is 9",
            Rewrite(
                0,
                "Jane saved 4 dollars for 8 weeks, so 4 * 8 = 32 dollars so far.\n"
                "She still needs 60 - 32 = 28 dollars.\n"
                "That takes 28 / 4 = 7 more weeks.\n"
                "The answer is 7",
            ),
        ),
        # 10 pencils misread as 12, another number of the question.
        (
            PENCILS_Q,
            PENCILS_GOLD,
            "Tom gets 3 packs with 12 pencils each, so 3 * 12 = 36 pencils.\n"
            "He gives away 12 of them, leaving 36 - 12 = 24.\n"
            "Each of the 2 friends gets 24 / 2 = 12.\n"
            "The answer is 12",
            Rewrite(
                1,
                "Tom gets 3 packs with 12 pencils each, so 3 * 12 = 36 pencils.\n"
                "He gives away 10 of them, leaving 36 - 10 = 26.\n"
                "Each of the 2 friends gets 26 / 2 = 13.\n"
                "The answer is 13",
            ),
        ),
    ],
)
def test_free_form_misread_is_fixed_in_the_prose_too(
    teacher: ArithmeticTeacher, question: str, gold: str, prediction: str, expected: Rewrite
) -> None:
    assert teacher.rewrite(question, gold, prediction) == expected


OWN_WORDS_START = "Tom gets 3 packs with 12 pencils each, so 3 * 12 = 36 pencils."
RAYNA_Q = (
    "Rayna has 60 more dollars than Kassidy, and Kassidy has 3/4 times as much money as "
    "Aurelia. If Arelia has $120, how much would each have if they decided to add together "
    "their money and share equally among them?"
)
RAYNA_GOLD = (
    "Kassidy has 3/4*$120 = $90\n"
    "Kassidy and Arelia have together $90+$120 = $210\n"
    "Rayna has $60+$90 = $150\n"
    "The three of them together has $210+$150 = $360\n"
    "Each person would receive $360/3= $120\n"
    "The answer is 120"
)
RAYNA_START = (
    "Kassidy has 3/4 * 120 = 90 dollars.\nKassidy and Aurelia have 90 + 120 = 210 dollars."
)


@pytest.mark.parametrize(
    ("question", "gold", "prediction", "expected"),
    [
        # A wrong operation no single number explains: carrying forward cannot work, so
        # the rewrite keeps the right step 0 and continues with the gold from its step 1.
        (
            PENCILS_Q,
            PENCILS_GOLD,
            f"{OWN_WORDS_START}\n"
            "With the 10 he gives away he has 36 + 10 = 46.\n"
            "Each of the 2 friends gets 46 / 2 = 23.\n"
            "The answer is 23",
            Rewrite(1, OWN_WORDS_START + "\n" + PENCILS_GOLD.split("\n", 1)[1]),
        ),
        # Step 0 misreads 12 as 10 (also a question number: true arithmetic on stated
        # numbers) and step 1 is false. Correcting step 1 cannot reach gold, and step 0,
        # whose value the gold never reaches, is not kept either.
        (
            PENCILS_Q,
            PENCILS_GOLD,
            "Tom has 3 packs of 10 pencils, so 3 * 10 = 30 pencils.\n"
            "He gives away 10, leaving 30 - 10 = 21.\n"
            "Each friend gets 21 / 2 = 10.5.\n"
            "The answer is 10.5",
            Rewrite(0, PENCILS_GOLD),
        ),
        # 60 misread as 120 gives 120 + 90 = 210, a computation the gold makes once (step
        # 1): step 2 repeats it, so it is wrong and not kept.
        (
            RAYNA_Q,
            RAYNA_GOLD,
            f"{RAYNA_START}\n"
            "Rayna has 120 more than Kassidy, so 120 + 90 = 210 dollars.\n"
            "Together they have 210 + 210 = 420 dollars.\n"
            "Each gets 420 / 3 = 140 dollars.\n"
            "The answer is 140",
            Rewrite(2, RAYNA_START + "\n" + RAYNA_GOLD.split("\n", 2)[2]),
        ),
    ],
)
def test_the_rewrite_never_keeps_a_wrong_step(
    teacher: ArithmeticTeacher, question: str, gold: str, prediction: str, expected: Rewrite
) -> None:
    result = teacher.rewrite(question, gold, prediction)
    assert result == expected
    assert check_steps(question, extract_answer(gold) or "", result.text, "grounded").ok


def test_misread_perturbation_restates_the_number_and_carries_it() -> None:
    gold_steps = split_steps(HENS_GOLD)
    seen: set[int] = set()
    for seed in range(40):
        for kind in ("misread", "misread+slip"):
            perturbed = perturb_solution(HENS_GOLD, random.Random(seed), kind, HENS_Q)
            assert perturbed is not None
            text, index = perturbed
            seen.add(index)
            steps = split_steps(text)
            assert len(steps) == len(gold_steps)
            assert steps[:index] == gold_steps[:index] and steps[index] != gold_steps[index]
            assert not answers_match(text, "54")
            # Only numbers change, and each prose number still restates an operand.
            for step, gold_step in zip(steps[:-1], gold_steps[:-1], strict=True):
                assert re.sub(r"\d+", "#", step) == re.sub(r"\d+", "#", gold_step)
                read = read_step(step)
                operands = {n.value for eq in read.equations for n in eq.operands}
                assert {n.value for n in read.prose_numbers} <= operands
            # The misread step is true arithmetic (later steps always are); with a slip
            # its result is wrong.
            holds = [eq.holds() for step in steps for eq in read_step(step).equations]
            assert all(holds) == (kind == "misread")
    assert seen == {0, 1, 2}
    assert perturb_solution(HENS_GOLD, random.Random(3), "misread", HENS_Q) == perturb_solution(
        HENS_GOLD, random.Random(3), "misread", HENS_Q
    )
    # Without the question there is no stated number to misread.
    assert perturb_solution(HENS_GOLD, random.Random(0), "misread") is None
    with pytest.raises(ValueError, match="kind"):
        perturb_solution(HENS_GOLD, random.Random(0), "typo")  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", ["misread", "misread+slip"])
def test_on_perturbed_synthetic_problems_every_rewritten_step_is_right(
    teacher: ArithmeticTeacher, kind: Kind
) -> None:
    problems = synthetic_splits(seed=0, n_train=400, n_dev=0, n_test=0)["train"]
    rng = random.Random(1)
    cases = rewritten = right = found = 0
    for problem in problems:
        question, gold = problem["question"], problem["gold_solution"]
        perturbed = perturb_solution(gold, rng, kind, question)
        if perturbed is None:
            continue
        text, step = perturbed
        cases += 1
        result = teacher.rewrite(question, gold, text)
        if result is None:
            continue
        rewritten += 1
        found += result.error_step == step
        right += check_steps(
            question, problem["gold_answer"], result.text, "grounded"
        ).ok and answers_match(result.text, problem["gold_answer"])
    assert cases >= 350  # most synthetic problems state a number to misread
    assert rewritten / cases >= 0.95
    assert right / rewritten >= 0.99
    assert found / rewritten >= 0.95
