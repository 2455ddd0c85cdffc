"""A one-step apple problem with a wrong and a minimally fixed solution, and distill's rows
(DISTILLED_FEATURES) built from it, shared by the GRM data and annotate tests."""

from __future__ import annotations

QUESTION = "Tom has 3 apples and buys 2 more. How many apples does he have?"
GOLD = "3 + 2 = 5\nThe answer is 5"
# Step 0 is right, step 1 is the error; FIXED is WRONG with the minimal correction.
WRONG = "Tom starts with 3 apples.\n3 + 2 = 6\nThe answer is 6"
FIXED = "Tom starts with 3 apples.\n3 + 2 = 5\nThe answer is 5"


def distilled_row(
    sample_id: str,
    prediction: str,
    status: str,
    error_step: int = -1,
    rewrite: str | None = None,
) -> dict:
    """Distill's row for ``prediction`` of the apple problem with teacher status ``status``
    (``correct`` for a right sample: its rewrite is itself)."""
    correct = status == "correct"
    return {
        "sample_id": sample_id,
        "problem_id": sample_id.split("/")[0],
        "question": QUESTION,
        "gold_solution": GOLD,
        "gold_answer": "5",
        "source": "synthetic",
        "prediction": prediction,
        "predicted_answer": prediction[-1],
        "correct": correct,
        "answer_correct": correct,
        "error_step": error_step,
        "rewrite": prediction if correct else (rewrite or ""),
        "teacher_status": status,
    }
