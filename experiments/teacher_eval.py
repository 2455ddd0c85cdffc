"""Re-run the (current) ArithmeticTeacher on a distilled artifact's wrong samples and check
its rewrites independently: every step right = each step's equation equals gold's (templated task)."""

import collections
import re
import sys
import time

import pandas as pd

from rlmec_core.teachers.arithmetic import ArithmeticTeacher
from rlmec_core.verification import check_steps

EQ = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")


def body(t):
    return [
        line
        for line in t.strip().splitlines()
        if line.strip() and not line.startswith("The answer is")
    ]


def chain(t):
    return [int(m[3]) for m in EQ.findall(t)]


def first_diff(p, g):
    P, G = body(p), body(g)
    return next((i for i, (a, b) in enumerate(zip(P, G, strict=False)) if a != b), len(P))


d = pd.read_parquet(sys.argv[1])
wrong = d[~d.correct]
t = ArithmeticTeacher()
c = collections.Counter()
t0 = time.time()
bad = []
for _, r in wrong.iterrows():
    v = t.rewrite(r.question, r.gold_solution, r.prediction)
    if v is None or v.error_step < 0:
        c["abstained"] += 1
        continue
    c["rewrites"] += 1
    right = (
        chain(v.text) == chain(r.gold_solution)
        and check_steps(r.question, r.gold_answer, v.text, "grounded").ok
    )
    c["every step right"] += right
    c["== gold body"] += body(v.text) == body(r.gold_solution)
    c["step == first diff"] += v.error_step == first_diff(r.prediction, r.gold_solution)
    if not right:
        bad.append((r, v))
print(dict(c), f"{time.time() - t0:.1f}s", "right rate", c["every step right"] / c["rewrites"])
for r, v in bad[:5]:
    print("=== Q:", r.question)
    print("--- gold:\n" + r.gold_solution)
    print("--- pred:\n" + r.prediction)
    print(f"--- rewrite ({v.error_step}):\n" + v.text)
