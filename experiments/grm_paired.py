"""Paired difference of two smollm_grm_dev.py results on the same rows (B minus A): the
first-error-step accuracy on wrong samples (teacher status "kept"), "correct" on right ones
and the keep rate on incorrect ones, each with a 95% interval that resamples problems with
all their samples. usage: grm_paired.py A.json B.json"""

import json
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np


def paired(a_rows, b_rows, select, hit, resamples=10_000, seed=0):
    by_problem = defaultdict(list)
    for a, b in zip(a_rows, b_rows, strict=True):
        if a["sample_id"] != b["sample_id"]:
            raise SystemExit("the two results are not on the same rows")
        if select(a):
            by_problem[a["problem_id"]].append((float(hit(a)), float(hit(b))))
    groups = list(by_problem.values())
    sums = np.array([[sum(x for x, _ in g), sum(y for _, y in g), len(g)] for g in groups])
    pick = np.random.default_rng(seed).integers(0, len(groups), size=(resamples, len(groups)))
    drawn = sums[pick].sum(axis=1)
    deltas = (drawn[:, 1] - drawn[:, 0]) / drawn[:, 2]
    total = sums.sum(axis=0)
    low, high = np.percentile(deltas, [2.5, 97.5])
    return {
        "a": total[0] / total[2],
        "b": total[1] / total[2],
        "delta": (total[1] - total[0]) / total[2],
        "ci": [float(low), float(high)],
        "n": int(total[2]),
        "problems": len(groups),
    }


a, b = (json.loads(Path(path).read_text()) for path in sys.argv[1:3])
print(a["name"], "->", b["name"], f"({b.get('split', 'dev')})")
for label, select, hit in (
    ("step accuracy, wrong", lambda r: r["teacher_status"] == "kept",
     lambda r: r["grm_step"] == r["teacher_step"]),
    ("'correct' on right", lambda r: r["teacher_status"] == "correct",
     lambda r: r["grm_step"] == -1),
    ("keep rate, incorrect", lambda r: r["teacher_status"] != "correct",  # = not correct
     lambda r: r["kept"]),
):  # fmt: skip
    print(f"{label}: ", json.dumps(paired(a["rows"], b["rows"], select, hit)))
