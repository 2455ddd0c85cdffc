"""How well the offline ArithmeticTeacher finds and fixes known errors on GSM8K.

Each gold solution gets one seeded perturbation (a wrong number carried through the later
steps, see ``rlmec_core.teachers.perturb``); the teacher should name the perturbed step
and rewrite the solution back to the gold answer. Unchanged gold solutions should be
judged correct (error step -1).

    python benchmarks/arithmetic_teacher.py [--data data/gsm8k_test.jsonl] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rlmec_core.answers import answers_match  # noqa: E402
from rlmec_core.data.loaders import load_gsm8k_jsonl  # noqa: E402
from rlmec_core.teachers.arithmetic import ArithmeticTeacher  # noqa: E402
from rlmec_core.teachers.perturb import perturb_solution  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parent.parent / "data" / "gsm8k_test.jsonl"


@dataclass
class Figures:
    problems: int = 0
    cases: int = 0  # perturbable problems
    step_found: int = 0
    recovered: int = 0  # the rewrite reaches the gold answer
    both: int = 0  # step found and answer recovered
    restored: int = 0  # the rewrite is the original gold solution, word for word
    abstained: int = 0
    judged_correct: int = 0  # unchanged gold judged error_step -1
    seconds: float = 0.0
    calls: int = 0


def measure(records, seed: int) -> Figures:
    """Run the teacher on each perturbed and each unchanged gold solution."""
    teacher, rng, fig = ArithmeticTeacher(), random.Random(seed), Figures()
    for record in records:
        question, gold = record["question"], record["gold_solution"]
        fig.problems += 1
        start = time.perf_counter()
        verdict = teacher.rewrite(question, gold, gold)
        fig.seconds += time.perf_counter() - start
        fig.calls += 1
        fig.judged_correct += verdict is not None and verdict.error_step == -1
        perturbed = perturb_solution(gold, rng)
        if perturbed is None:
            continue
        text, step = perturbed
        fig.cases += 1
        start = time.perf_counter()
        result = teacher.rewrite(question, gold, text)
        fig.seconds += time.perf_counter() - start
        fig.calls += 1
        if result is None:
            fig.abstained += 1
            continue
        found = result.error_step == step
        recovered = answers_match(result.text, record["gold_answer"])
        fig.step_found += found
        fig.recovered += recovered
        fig.both += found and recovered
        fig.restored += result.text == gold
    return fig


def report(fig: Figures) -> str:
    def pct(part: int, whole: int) -> str:
        return f"{100 * part / whole:6.2f} %" if whole else "   n/a"

    rows = [
        ("problems", f"{fig.problems}"),
        ("perturbed cases", f"{fig.cases}"),
        ("step found", pct(fig.step_found, fig.cases)),
        ("answer recovered", pct(fig.recovered, fig.cases)),
        ("step found and recovered", pct(fig.both, fig.cases)),
        ("rewrite = original gold", pct(fig.restored, fig.cases)),
        ("abstained", pct(fig.abstained, fig.cases)),
        ("unchanged gold judged correct", pct(fig.judged_correct, fig.problems)),
        ("time per example", f"{1000 * fig.seconds / max(fig.calls, 1):.2f} ms"),
    ]
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value:>10}" for name, value in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="GSM8K JSONL file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the perturbations")
    parser.add_argument("--limit", type=int, default=None, help="first N problems only")
    args = parser.parse_args(argv)
    records = load_gsm8k_jsonl(args.data)
    if args.limit is not None:
        records = records.select(range(min(args.limit, len(records))))
    print(report(measure(records, args.seed)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
