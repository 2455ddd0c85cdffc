"""How well the offline ArithmeticTeacher finds and fixes known errors.

Each gold solution gets one seeded perturbation of each kind (see
``rlmec_core.teachers.perturb``): ``slip``, a wrong number in one equation; ``misread``, a
question number copied wrongly into an equation and restated in the step's prose;
``misread+slip``, that and a miscomputed result in the same step. Later steps carry the
wrong value. The teacher should name the perturbed step and rewrite the solution back to
the gold answer with every step right (``check_steps``: ``grounded`` on the synthetic
problems, which state every number, ``equations`` on GSM8K). Unchanged gold solutions
should be judged correct (error step -1). Data: the GSM8K test file and the gold
solutions of ``synthetic_splits(seed=0, n_train=1000)``.

    python benchmarks/arithmetic_teacher.py [--data data/gsm8k_test.jsonl] [--seed 0]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from rlmec_core.answers import answers_match  # noqa: E402
from rlmec_core.data.loaders import load_gsm8k_jsonl  # noqa: E402
from rlmec_core.data.synthetic import synthetic_splits  # noqa: E402
from rlmec_core.teachers.arithmetic import ArithmeticTeacher  # noqa: E402
from rlmec_core.teachers.perturb import KINDS, Kind, perturb_solution  # noqa: E402
from rlmec_core.verification import Strength, check_steps  # noqa: E402

DEFAULT_DATA = Path(__file__).resolve().parent.parent / "data" / "gsm8k_test.jsonl"


@dataclass
class Figures:
    problems: int = 0
    cases: int = 0  # perturbable problems
    step_found: int = 0
    recovered: int = 0  # the rewrite reaches the gold answer
    both: int = 0  # step found and answer recovered
    restored: int = 0  # the rewrite is the original gold solution, word for word
    steps_right: int = 0  # non-abstained rewrites that pass check_steps
    abstained: int = 0
    judged_correct: int = 0  # unchanged gold judged error_step -1
    seconds: float = 0.0
    calls: int = 0


def measure(
    records: Iterable[Mapping[str, Any]], seed: int, kind: Kind, strength: Strength
) -> Figures:
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
        perturbed = perturb_solution(gold, rng, kind=kind, question=question)
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
        check = check_steps(question, record["gold_answer"], result.text, strength)
        fig.steps_right += check.ok
    return fig


def report(columns: Mapping[str, Figures]) -> str:
    """One table: a row per figure, a column per data set and error kind."""

    def pct(part: int, whole: int) -> str:
        return f"{100 * part / whole:.2f} %" if whole else "n/a"

    figures = {
        "problems": lambda f: f"{f.problems}",
        "perturbed cases": lambda f: f"{f.cases}",
        "step found": lambda f: pct(f.step_found, f.cases),
        "answer recovered": lambda f: pct(f.recovered, f.cases),
        "step found and recovered": lambda f: pct(f.both, f.cases),
        "rewrite = original gold": lambda f: pct(f.restored, f.cases),
        "rewrites with every step right": lambda f: pct(f.steps_right, f.cases - f.abstained),
        "abstained": lambda f: pct(f.abstained, f.cases),
        "unchanged gold judged correct": lambda f: pct(f.judged_correct, f.problems),
        "time per example": lambda f: f"{1000 * f.seconds / max(f.calls, 1):.2f} ms",
    }
    rows = [["", *columns]]
    rows += [[name, *(show(fig) for fig in columns.values())] for name, show in figures.items()]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="GSM8K JSONL file")
    parser.add_argument("--seed", type=int, default=0, help="seed of the perturbations")
    parser.add_argument("--limit", type=int, default=None, help="first N GSM8K problems only")
    parser.add_argument("--synthetic", type=int, default=1000, help="synthetic problems")
    args = parser.parse_args(argv)
    gsm8k = load_gsm8k_jsonl(args.data)
    if args.limit is not None:
        gsm8k = gsm8k.select(range(min(args.limit, len(gsm8k))))
    synthetic = synthetic_splits(seed=0, n_train=args.synthetic, n_dev=0, n_test=0)["train"]
    data: dict[str, tuple[Any, Strength]] = {
        "gsm8k": (gsm8k, "equations"),
        "synthetic": (synthetic, "grounded"),
    }
    columns = {
        f"{name}/{kind}": measure(records, args.seed, kind, strength)
        for name, (records, strength) in data.items()
        for kind in KINDS
    }
    print(report(columns))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
