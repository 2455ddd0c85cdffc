"""The answer check: extraction and numeric/LaTeX/text-aware equivalence."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from rlmec_core.answers import answers_match, extract_answer
from rlmec_core.data.loaders import load_gsm8k_jsonl

DATA = Path(__file__).resolve().parent.parent / "data"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Step one.\nThe answer is 18.", "18"),
        ("The answer is 3.\nOn second thought\nThe answer is 5.", "5"),
        ("The answer is: $1,234.50.", "$1,234.50"),
        ("so \\boxed{\\frac{1}{2}} is it", "\\frac{1}{2}"),
        ("\\boxed{1} then \\boxed{\\frac{\\sqrt{2}}{2}}", "\\frac{\\sqrt{2}}{2}"),
        ("He has 3+4=7\n#### 7", "7"),
        ("The answer is 4\n\\boxed{5}", "4"),  # the stated line wins over a box
        ("the answer is a marsh", "a marsh"),
        ("3+4=7 apples", None),
        ("The answer is .", None),
        ("\\boxed{unclosed", None),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


MATCHES = [
    ("The answer is 18", "18"),
    ("The answer is 18.", "18"),
    ("The answer is 18.00", "18"),
    ("The answer is $18", "18"),
    ("The answer is -$5", "-5"),
    ("The answer is 18 dollars.", "18"),
    ("The answer is 18 dollars per day", "18"),
    ("The answer is 1,234", "1234"),
    ("The answer is 70,000", "70000"),
    ("The answer is \\$1{,}000", "1000"),
    ("The answer is 25%", "25"),
    ("The answer is 25%", "0.25"),
    ("The answer is 3/4", "0.75"),
    ("The answer is 0.75", "\\frac{3}{4}"),
    ("The answer is -\\frac{3}{4}", "-0.75"),
    ("The answer is \\frac{\\pi}{2}", "\\pi/2"),
    ("\\boxed{\\sqrt{2}}", "2^{1/2}"),
    ("The answer is x+1", "1+x"),
    ("#### 72", "72"),
    ("18", "18"),  # a bare answer
    ("$18.", "18"),
    ("The answer is quit eating lunch out.", "quit eating lunch out"),
    ("The answer is Quit eating lunch-out", "quit eating lunch out"),
    ("The answer is (B) a marsh", "a marsh"),
    ("The answer is B. a marsh", "a marsh"),
]

NON_MATCHES = [
    ("The answer is 17", "18"),
    ("The answer is 1.5", "15"),
    ("The answer is 1,5", "1.5"),  # a comma not followed by three digits is no separator
    ("The answer is 5", "-5"),
    ("The answer is 0.33", "1/3"),
    ("The answer is 180", "18"),
    ("The answer is 18 and 20", "18"),
    ("She has 18 apples\nSo she has more", "18"),  # a solution with no stated answer
    ("He has 3+2=5 apples", "5"),  # prose is not a bare answer
    ("", "18"),
    ("The answer is 18", ""),
    ("The answer is a tundra", "a marsh"),
    ("The answer is A tundra", "a marsh"),  # "A" is an article here, not a label
    ("The answer is A", "a marsh"),  # option letters are not resolved without options
    ("The answer is x+2", "x+1"),
]


@pytest.mark.parametrize(("predicted", "gold"), MATCHES)
def test_answers_match(predicted: str, gold: str) -> None:
    assert answers_match(predicted, gold)


@pytest.mark.parametrize(("predicted", "gold"), NON_MATCHES)
def test_answers_do_not_match(predicted: str, gold: str) -> None:
    assert not answers_match(predicted, gold)


def test_symbolic_check_works_off_the_main_thread() -> None:
    # math_verify's signal-based timeout would raise in a worker thread.
    results: list[bool] = []
    cases = [("The answer is \\frac{\\pi}{2}", "\\pi/2"), ("The answer is x+2", "x+1")]
    worker = threading.Thread(target=lambda: results.extend(answers_match(p, g) for p, g in cases))
    worker.start()
    worker.join()
    assert results == [True, False]


def test_every_gsm8k_gold_solution_matches_its_own_answer() -> None:
    records = load_gsm8k_jsonl(DATA / "gsm8k_test.jsonl")
    assert len(records) == 1319
    failures = [
        r["id"]
        for r in records
        if not answers_match(r["gold_solution"], r["gold_answer"])
        or extract_answer(r["gold_solution"]) is None
    ]
    assert failures == []
    # ...and not someone else's: the check is not trivially true.
    shifted = [
        answers_match(a["gold_solution"], b["gold_answer"])
        for a, b in zip(records, records.select(range(1, len(records))), strict=False)
        if a["gold_answer"] != b["gold_answer"]
    ]
    assert not any(shifted)
