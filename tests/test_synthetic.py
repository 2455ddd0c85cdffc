"""The synthetic task: reproducible, arithmetically correct, varied, disjoint splits."""

from __future__ import annotations

import re

import pytest

from rlmec_core.data.schema import RECORD_FEATURES
from rlmec_core.data.synthetic import NAMES, synthetic_splits
from rlmec_core.teachers.base import split_steps

STEP_RE = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")
ANSWER_RE = re.compile(r"^The answer is (\d+)$")


@pytest.fixture(scope="module")
def splits():
    return synthetic_splits(seed=7, n_train=300, n_dev=60, n_test=60)


def _apply(a: int, op: str, b: int) -> float:
    return {"+": a + b, "-": a - b, "*": a * b, "/": a / b}[op]


def test_same_seed_same_data_other_seed_other_data(splits):
    again = synthetic_splits(seed=7, n_train=300, n_dev=60, n_test=60)
    for split in ("train", "dev", "test"):
        assert again[split].to_list() == splits[split].to_list()
    other = synthetic_splits(seed=8, n_train=300, n_dev=60, n_test=60)
    assert other["train"]["question"] != splits["train"]["question"]


def test_schema_ids_and_source(splits):
    for split in ("train", "dev", "test"):
        ds = splits[split]
        assert ds.features == RECORD_FEATURES
        assert ds["id"] == [f"synthetic-{split}-{i}" for i in range(len(ds))]
        assert set(ds["source"]) == {"synthetic"}
    assert len(splits["train"]) == 300 and len(splits["dev"]) == 60


def test_splits_share_no_question(splits):
    questions = {split: set(splits[split]["question"]) for split in ("train", "dev", "test")}
    assert len(questions["train"]) == 300  # no duplicate inside a split either
    assert not questions["train"] & questions["dev"]
    assert not questions["train"] & questions["test"]
    assert not questions["dev"] & questions["test"]


def test_every_solution_is_correct_integral_chained_arithmetic(splits):
    step_counts = set()
    for record in splits["train"]:
        steps = split_steps(record["gold_solution"])
        final = ANSWER_RE.match(steps[-1])
        assert final, f"{record['id']}: last line {steps[-1]!r}"
        results = []
        for line in steps[:-1]:
            found = STEP_RE.findall(line)
            assert len(found) == 1, f"{record['id']}: not one operation in {line!r}"
            a, op, b, c = found[0]
            value = _apply(int(a), op, int(b))
            assert value == int(c), f"{record['id']}: wrong arithmetic in {line!r}"
            assert value == int(value) and value >= 0
            if results:  # each later step works on the previous result
                assert int(a) == results[-1], f"{record['id']}: step does not chain: {line!r}"
            results.append(int(c))
        step_counts.add(len(results))
        assert final.group(1) == record["gold_answer"] == str(results[-1])
    assert step_counts == {2, 3, 4}


def test_difficulty_knobs_bound_operands_values_and_steps():
    knobs = {"min_steps": 3, "max_steps": 3, "max_operand": 5, "max_value": 40}
    ds = synthetic_splits(seed=1, n_train=200, n_dev=0, n_test=0, **knobs)["train"]
    for record in ds:
        steps = split_steps(record["gold_solution"])
        assert len(steps) == 4
        operations = [STEP_RE.findall(line)[0] for line in steps[:-1]]
        assert int(operations[0][0]) <= 5  # both numbers of step 1 come from the question
        for _, _, b, c in operations:
            assert int(b) <= 5 and int(c) <= 40


def test_templates_names_and_operations_vary(splits):
    questions = splits["train"]["question"]
    names = {
        name
        for name, _, _ in NAMES
        if any(q.startswith(name) or f" {name}" in q for q in questions)
    }
    assert len(names) >= 10
    units = {"pencils", "cookies", "kilometers", "miles", "dollars", "students", "eggs"}
    assert sum(any(f" {u}" in q for q in questions) for u in units) >= 6
    ops = {op for s in splits["train"]["gold_solution"] for _, op, _, _ in STEP_RE.findall(s)}
    assert ops == {"+", "-", "*", "/"}
    assert len({q.split(".")[0] for q in questions}) > 100  # openings differ, not one template


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="min_steps"):
        synthetic_splits(seed=0, n_train=1, n_dev=1, n_test=1, min_steps=3, max_steps=2)
    with pytest.raises(ValueError, match="max_value"):
        synthetic_splits(seed=0, n_train=1, n_dev=1, n_test=1, max_operand=10, max_value=5)
    few = {"min_steps": 1, "max_steps": 1, "max_operand": 2, "max_value": 4}
    with pytest.raises(ValueError, match="distinct"):
        synthetic_splits(seed=0, n_train=5000, n_dev=0, n_test=0, **few)
