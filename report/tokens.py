"""Per-token rewards of erroneous solutions beside their minimally-edited rewrites."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from report.data import ReportRun
from report.unavailable import Unavailable
from storage import catalog

MAX_SAMPLES = 8


@dataclass(frozen=True)
class Token:
    text: str
    edited: bool = False
    colour: str = ""  # CSS background; empty for none
    title: str = ""  # the tooltip: reward or imitation weight, and the token itself


@dataclass(frozen=True)
class ErrorStep:
    who: str
    step: int
    text: str


@dataclass(frozen=True)
class Sample:
    sample_id: str
    question: str | None
    error_steps: tuple[ErrorStep, ...]
    mean_reward: str
    response: tuple[Token, ...]
    rewrite: tuple[Token, ...]


def reward_colour(reward: float) -> str:
    """Red for a penalty, green for a reward, none at 0; full colour at the reward caps."""
    from rlmec_core.rewards import MAX_PENALTY, MAX_REWARD

    if not math.isfinite(reward):
        return "rgba(128,128,128,0.5)"
    if reward < 0:
        return f"rgba(214,39,40,{min(1.0, -reward / MAX_PENALTY) * 0.85:.3f})"
    return f"rgba(44,160,44,{min(1.0, reward / MAX_REWARD) * 0.85:.3f})"


def _tokens(
    tokenizer: Any, ids: Sequence[int], describe: Callable[[int], tuple[str, bool, str]]
) -> tuple[Token, ...]:
    """Each token decoded by itself (special tokens shown), line breaks kept visible."""
    out = []
    for i, token_id in enumerate(ids):
        text = tokenizer.decode([int(token_id)], skip_special_tokens=False)
        colour, edited, what = describe(i)
        title = f"{what}\ntoken {json.dumps(text, ensure_ascii=False)}"
        out.append(Token(text.replace("\n", "⏎\n"), edited, colour, title))
    return tuple(out)


def _step_text(solution: str, step: int) -> str:
    from rlmec_core.teachers.base import split_steps

    steps = split_steps(solution)
    if step < 0:
        return "(judged correct)"
    return steps[step] if step < len(steps) else "(out of range)"


def _read_rows(path: Path, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    if not path.is_file():
        raise Unavailable(f"{path} is missing")
    return pq.read_table(path, columns=list(columns) if columns else None).to_pylist()


def _questions(run: ReportRun) -> dict[str, str]:
    """Questions by sample id, from the distilled rows: context, not essential."""
    try:
        path = catalog.DISTILLED.path(run.artifact("distill"))
        return {r["sample_id"]: r["question"] for r in _read_rows(path, ["sample_id", "question"])}
    except Unavailable:
        return {}


def _sample(row: dict[str, Any], tokenizer: Any, question: str | None) -> Sample:
    from rlmec_core.editing import EDITED_WEIGHT, minimum_edit_weights

    response = list(row.get("response_ids") or [])
    rewards = [float(r) for r in row.get("rewards") or []]
    target = list(row.get("target_ids") or [])
    weights = list(row.get("target_weights") or [])
    if len(weights) != len(target):
        weights = minimum_edit_weights(response, target)

    def reward(i: int) -> tuple[str, bool, str]:
        if i >= len(rewards):
            return "", False, "no reward"
        return reward_colour(rewards[i]), False, f"reward {rewards[i]:+.4f}"

    def edit(i: int) -> tuple[str, bool, str]:
        edited = weights[i] == EDITED_WEIGHT
        return "", edited, f"{'edited' if edited else 'kept'} (imitation weight {weights[i]:g})"

    prediction = str(row.get("prediction", ""))
    steps = tuple(
        ErrorStep(who, int(row[key]), _step_text(prediction, int(row[key])))
        for who, key in (("teacher", "teacher_error_step"), ("GRM", "grm_error_step"))
        if row.get(key) is not None
    )
    mean = sum(rewards) / len(rewards) if rewards else float("nan")
    return Sample(
        sample_id=str(row.get("sample_id", "?")),
        question=question,
        error_steps=steps,
        mean_reward=f"{mean:+.4f}",
        response=_tokens(tokenizer, response, reward),
        rewrite=_tokens(tokenizer, target, edit),
    )


def token_rewards(run: ReportRun) -> dict[str, Any]:
    from tasks.models import load_tokenizer

    rows = _read_rows(catalog.RL_DATA.path(run.artifact("annotate")))
    wrong = [r for r in rows if not r.get("correct")]
    if not wrong:
        raise Unavailable("the annotate artifact holds no erroneous solution")
    model = run.artifact("bootstrap")
    try:
        tokenizer = load_tokenizer(model)
    except Exception as exc:
        raise Unavailable(f"cannot load the policy tokenizer from {model}: {exc}") from None
    questions = _questions(run)
    samples = [
        _sample(r, tokenizer, questions.get(r.get("sample_id"))) for r in wrong[:MAX_SAMPLES]
    ]
    return {"samples": samples, "total": len(wrong), "legend": _legend()}


def _legend() -> tuple[Token, ...]:
    return (
        Token("−0.1", colour=reward_colour(-0.1)),
        Token("−0.05", colour=reward_colour(-0.05)),
        Token("0"),
        Token("+0.5", colour=reward_colour(0.5)),
        Token("edited token of ŷ", edited=True),
    )
