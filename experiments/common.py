"""Shared helpers for the research scripts (they use rlmec_core directly, no Prefect)."""

import json
import os
import random
import time
from pathlib import Path

import torch

torch.set_num_threads(int(os.environ.get("THREADS", "2")))
from rlmec_core.distill import judge_sample
from rlmec_core.teachers.arithmetic import ArithmeticTeacher
from rlmec_core.verification import check_steps

# Where the experiments write: $RLMEC_LAB, else ./lab (ignored by git).
LAB = Path(os.environ.get("RLMEC_LAB", "lab"))


def log(*a):
    print(time.strftime("%H:%M:%S"), *a, flush=True)


def redistill(samples, strength="grounded"):
    """Teacher verdicts with the step checker: a right answer with a wrong step is incorrect."""
    teacher = ArithmeticTeacher()
    rows, caught = [], 0
    for s in samples:
        s = {
            k: s[k]
            for k in (
                "sample_id",
                "problem_id",
                "question",
                "gold_solution",
                "gold_answer",
                "source",
                "prediction",
                "predicted_answer",
                "correct",
            )
        }
        if (
            s["correct"]
            and not check_steps(s["question"], s["gold_answer"], s["prediction"], strength).ok
        ):
            s["correct"] = False
            caught += 1
        row = judge_sample(s, teacher)
        if (
            row["teacher_status"] == "kept"
            and not check_steps(s["question"], s["gold_answer"], row["rewrite"], strength).ok
        ):
            row["teacher_status"] = "wrong_answer"
        rows.append(row)
    return rows, caught


def heldout_split(rows, fraction, seed):
    problems = sorted({r["problem_id"] for r in rows})
    random.Random(seed).shuffle(problems)
    held = set(problems[: round(len(problems) * fraction)])
    return [r for r in rows if r["problem_id"] not in held], [
        r for r in rows if r["problem_id"] in held
    ]


def save_json(path, obj):
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(obj, indent=1))
