import sys

import pandas as pd

from rlmec_core.verification import check_steps

d = pd.read_parquet(sys.argv[1])
for strength in ("equations", "grounded"):
    c = d[d.correct]
    ok = c.apply(
        lambda r, s=strength: check_steps(r.question, r.gold_answer, r.prediction, s).ok, axis=1
    )
    g = d.drop_duplicates("problem_id").apply(
        lambda r, s=strength: check_steps(r.question, r.gold_answer, r.gold_solution, s).ok, axis=1
    )
    k = d[d.teacher_status == "kept"]
    rk = k.apply(
        lambda r, s=strength: check_steps(r.question, r.gold_answer, r.rewrite, s).ok, axis=1
    )
    print(
        strength,
        "gold ok",
        g.mean(),
        "| correct samples ok",
        ok.mean(),
        f"({(~ok).sum()} rejected of {len(ok)})",
        "| teacher rewrites ok",
        rk.mean(),
    )
