"""Accuracy with a 95% CI and the paired difference to a baseline for policy_exp results.
usage: summarize.py BASELINE_NAME NAME... (names of $RLMEC_LAB/policy/<name>/result.json)"""

import json
import os
import sys
from pathlib import Path

from rlmec_core.statistics import accuracy_interval, mcnemar_p, paired_difference

LAB = Path(os.environ.get("RLMEC_LAB", "lab"))


def load(name):
    return json.loads((LAB / "policy" / name / "result.json").read_text())


base = load(sys.argv[1])
print(
    "| run | variant | lr | accuracy | 95% CI | Δ to", sys.argv[1], "| paired 95% CI | McNemar p |"
)
print("|---|---|---|---|---|---|---|---|")
for name in sys.argv[1:]:
    r = load(name)
    acc = accuracy_interval(r["outcomes"])
    diff = paired_difference(r["outcomes"], base["outcomes"])
    p = mcnemar_p(r["outcomes"], base["outcomes"])
    print(
        f"| {name} | {r['variant']} | {r['lr']:g} | {acc.value:.1%} | "
        f"[{acc.low:.1%}, {acc.high:.1%}] | {100 * diff.value:+.1f} | "
        f"[{100 * diff.low:+.1f}, {100 * diff.high:+.1f}] | {p:.3f} |"
    )
