"""Stage 3: GRM prompts, verdict parsing and the training-set builder."""

from __future__ import annotations

from collections import Counter

import pytest
from datasets import Dataset

from rlmec_core.data.schema import DISTILLED_FEATURES
from rlmec_core.grm_data import (
    CORRECT_RESPONSE,
    ERROR_STEP_RESPONSE_PREFIX,
    GRM_EXAMPLE_FEATURES,
    REWRITE_RESPONSE_PREFIX,
    build_grm_examples,
    error_step_prompt,
    error_step_response,
    identity_subset_size,
    kept_prefix,
    number_steps,
    parse_error_step,
    rewrite_prompt,
)
from tests.apples import FIXED, GOLD, QUESTION, WRONG, distilled_row
from tests.verdicts import READ_ALIKE


def test_number_steps_counts_non_empty_lines_from_zero():
    assert number_steps("a\n\n  b  \nThe answer is 1\n") == "[0] a\n[1] b\n[2] The answer is 1"


def test_error_step_prompt_shows_all_three_and_numbers_the_prediction():
    prompt = error_step_prompt(QUESTION, GOLD, WRONG)
    assert QUESTION in prompt
    assert "Reference solution:\n3 + 2 = 5\nThe answer is 5\n" in prompt
    assert "[0] Tom starts with 3 apples.\n[1] 3 + 2 = 6\n[2] The answer is 6" in prompt
    assert prompt.endswith(ERROR_STEP_RESPONSE_PREFIX)


def test_rewrite_prompt_ends_with_the_fixed_prefix_and_is_deterministic():
    prompt = rewrite_prompt(QUESTION, GOLD, WRONG)
    assert prompt.endswith("\nCorrect prediction:\n")
    assert REWRITE_RESPONSE_PREFIX == "Correct prediction:\n"
    assert "Prediction:\n" + WRONG + "\n" in prompt
    assert "[0]" not in prompt  # the rewrite is copied from plain steps
    assert rewrite_prompt(QUESTION, GOLD, WRONG) == prompt
    # Surrounding whitespace and blank lines in the inputs do not change the prompt.
    assert rewrite_prompt(f"  {QUESTION}\n", f"\n{GOLD}\n\n", WRONG.replace("\n", "\n\n")) == prompt


def test_error_step_response_and_its_parse_round_trip():
    assert error_step_response(2) == "The first error step is [2]"
    assert error_step_response(0) == "The first error step is [0]"
    assert error_step_response(-1) == CORRECT_RESPONSE == "The prediction is correct"
    for step in (-1, 0, 1, 7, 12):
        assert parse_error_step(error_step_response(step)) == step
    with pytest.raises(ValueError, match="-2"):
        error_step_response(-2)


# Unlike a teacher's verdict, any "correct" not negated counts: the GRM's replies are short.
@pytest.mark.parametrize(("text", "step"), [*READ_ALIKE, ("Everything is correct", -1)])
def test_parse_error_step_tolerates_extra_words(text, step):
    assert parse_error_step(text) == step


def test_kept_prefix_keeps_steps_before_the_error():
    assert kept_prefix(WRONG, 1) == "Tom starts with 3 apples.\n"
    assert kept_prefix(WRONG, 0) == ""
    assert kept_prefix(WRONG, -1) == WRONG + "\n"
    with pytest.raises(ValueError):
        kept_prefix(WRONG, -3)


@pytest.mark.parametrize(
    ("n_correct", "n_kept", "n_all", "expected"),
    [(5, 3, 10, 2), (4, 1, 8, 1), (4, 1, 9, 0), (10, 0, 12, 0), (0, 3, 3, 0), (3, 5, 8, 2)],
)
def test_identity_subset_size_rounds_half_up(n_correct, n_kept, n_all, expected):
    # 5*3/10 = 1.5 -> 2; 4*1/8 = 0.5 -> 1; 4/9 = 0.44 -> 0; 3*5/8 = 1.875 -> 2.
    assert identity_subset_size(n_correct, n_kept, n_all) == expected


def _row(sample_id: str, status: str, error_step: int = -1, rewrite: str | None = None) -> dict:
    prediction = FIXED if status == "correct" else WRONG
    return distilled_row(sample_id, prediction, status, error_step, rewrite)


def _mixed_rows() -> list[dict]:
    # 10 samples: 5 correct, 3 kept, 1 abstained, 1 wrong_answer.
    rows = [_row(f"p{i}/0", "correct") for i in range(5)]
    rows += [_row(f"q{i}/1", "kept", error_step=1, rewrite=FIXED) for i in range(3)]
    rows += [_row("r/0", "abstained"), _row("s/0", "wrong_answer", 1, "bad\nThe answer is 7")]
    return rows


def test_build_counts_match_the_hand_computed_subset():
    ds = build_grm_examples(_mixed_rows(), seed=0)
    assert ds.features == GRM_EXAMPLE_FEATURES
    # identity subset: round(5 * 3 / 10) = 2; each chosen correct sample gives an
    # error-step ("correct") and an identity example; each kept one gives two examples.
    assert Counter(ds["kind"]) == {"error_step": 5, "rewrite": 3, "identity": 2}
    assert len(ds) == 10
    assert not {"r/0", "s/0"} & set(ds["sample_id"])


def test_build_example_contents():
    ds = build_grm_examples(_mixed_rows(), seed=0).to_list()
    first, second = ds[0], ds[1]
    assert first == {
        "kind": "error_step",
        "sample_id": "q0/1",
        "prompt": error_step_prompt(QUESTION, GOLD, WRONG),
        "response": "The first error step is [1]",
    }
    assert second == {
        "kind": "rewrite",
        "sample_id": "q0/1",
        "prompt": rewrite_prompt(QUESTION, GOLD, WRONG),
        "response": FIXED,
    }
    identity = [ex for ex in ds if ex["kind"] == "identity"]
    assert all(ex["response"] == FIXED for ex in identity)
    assert all(ex["prompt"] == rewrite_prompt(QUESTION, GOLD, FIXED) for ex in identity)
    correct_verdicts = [ex for ex in ds if ex["response"] == CORRECT_RESPONSE]
    # The "correct" error-step examples come from exactly the identity subset.
    assert {ex["sample_id"] for ex in correct_verdicts} == {ex["sample_id"] for ex in identity}


def test_build_is_deterministic_for_a_seed_and_varies_across_seeds():
    rows = [_row(f"p{i}/0", "correct") for i in range(20)]
    rows += [_row(f"q{i}/0", "kept", error_step=0, rewrite=FIXED) for i in range(10)]
    # round(20 * 10 / 30) = round(6.67) = 7 identity rewrites.
    a = build_grm_examples(rows, seed=3)
    assert Counter(a["kind"])["identity"] == 7
    assert a.to_list() == build_grm_examples(rows, seed=3).to_list()
    subsets = {
        tuple(
            ex["sample_id"] for ex in build_grm_examples(rows, seed=s) if ex["kind"] == "identity"
        )
        for s in range(5)
    }
    assert len(subsets) > 1


def test_build_accepts_a_dataset():
    rows = _mixed_rows()
    ds = Dataset.from_list(rows, features=DISTILLED_FEATURES)
    assert build_grm_examples(ds, seed=1).to_list() == build_grm_examples(rows, seed=1).to_list()


def test_build_with_no_kept_samples_is_empty():
    rows = [_row("p/0", "correct"), _row("r/0", "abstained")]
    ds = build_grm_examples(rows, seed=0)
    assert len(ds) == 0
    assert ds.features == GRM_EXAMPLE_FEATURES


def test_build_rejects_a_kept_sample_without_an_error_step():
    with pytest.raises(ValueError, match="'q/0'.*error_step -1"):
        build_grm_examples([_row("q/0", "kept", error_step=-1, rewrite=FIXED)], seed=0)
