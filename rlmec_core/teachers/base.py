"""The teacher protocol of stage 2: first error step plus a minimum-edit rewrite."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Rewrite:
    """A teacher's verdict on one prediction.

    ``error_step`` is the 0-based index of the first wrong step (one step per line),
    or -1 when the prediction is already correct (then ``text`` is the prediction).
    ``text`` is the minimally edited rewrite: steps ``0..error_step-1`` verbatim,
    then the smallest changes that reach the gold answer.
    """

    error_step: int
    text: str


@runtime_checkable
class Teacher(Protocol):
    """Anything that can judge and minimally correct a solution.

    ``rewrite`` returns ``None`` when the teacher abstains (it cannot read the
    prediction, or the domain is not one it handles).
    """

    name: str

    def rewrite(self, question: str, gold_solution: str, prediction: str) -> Rewrite | None: ...


def split_steps(solution: str) -> list[str]:
    """Steps of a solution: one per non-empty line, as the method numbers them from 0."""
    return [line for line in solution.strip().splitlines() if line.strip()]


def number_steps(solution: str) -> str:
    """``"[0] first step\n[1] second step..."``: the steps as the method numbers them."""
    return "\n".join(f"[{i}] {step.strip()}" for i, step in enumerate(split_steps(solution)))
