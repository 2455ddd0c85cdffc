"""Stage 1: sample k solutions per training problem and label them by their answer."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlmec_core.answers import answers_match, extract_answer
from rlmec_core.config import CollectSection
from rlmec_core.data.schema import SAMPLE_FEATURES
from rlmec_core.generation import generate_solutions
from rlmec_core.generation_server import ServedModel
from rlmec_core.policy_prompt import format_policy_prompt
from rlmec_core.prompt_format import PromptStyle


def label_samples(
    problems: Sequence[Mapping[str, Any]], solutions: Sequence[Sequence[str]]
) -> tuple[list[dict[str, Any]], int]:
    """One row per distinct solution of each problem, labelled correct/incorrect.

    Exact duplicate texts of the same problem are dropped (the method keeps each once).
    Returns the rows and the number of duplicates dropped.
    """
    if len(problems) != len(solutions):
        raise ValueError(f"{len(problems)} problems but {len(solutions)} solution lists")
    rows: list[dict[str, Any]] = []
    dropped = 0
    for problem, texts in zip(problems, solutions, strict=True):
        seen: set[str] = set()
        for j, text in enumerate(texts):
            if text in seen:
                dropped += 1
                continue
            seen.add(text)
            predicted = extract_answer(text)
            rows.append(
                {
                    "sample_id": f"{problem['id']}/{j}",
                    "problem_id": problem["id"],
                    "question": problem["question"],
                    "gold_solution": problem["gold_solution"],
                    "gold_answer": problem["gold_answer"],
                    "source": problem["source"],
                    "prediction": text,
                    "predicted_answer": predicted or "",
                    "correct": predicted is not None
                    and answers_match(text, problem["gold_answer"]),
                }
            )
    return rows, dropped


def sample_metrics(rows: Sequence[Mapping[str, Any]], n_problems: int) -> dict[str, float]:
    """Sample accuracy, and pass@k: the share of problems with at least one correct sample."""
    n = len(rows)
    solved = {r["problem_id"] for r in rows if r["correct"]}
    return {
        "n_problems": float(n_problems),
        "n_samples": float(n),
        "n_correct": float(sum(bool(r["correct"]) for r in rows)),
        "sample_accuracy": sum(bool(r["correct"]) for r in rows) / n if n else 0.0,
        "pass_at_k": len(solved) / n_problems if n_problems else 0.0,
    }


def collect_samples(
    model: PreTrainedModel | ServedModel,
    tokenizer: PreTrainedTokenizerBase,
    problems: Dataset | Sequence[Mapping[str, Any]],
    sampling: CollectSection,
    *,
    seed: int,
    progress: bool = True,
    style: PromptStyle | None = None,
) -> tuple[Dataset, dict[str, float]]:
    """Sample ``sampling.k`` solutions per problem in batches and label them (stage 1);
    ``sampling.max_problems`` is the caller's to apply."""
    problems = list(problems)
    result = generate_solutions(
        model,
        tokenizer,
        [format_policy_prompt(p["question"], style) for p in problems],
        num_return_sequences=sampling.k,
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_new_tokens=sampling.max_new_tokens,
        batch_size=sampling.batch_size,
        seed=seed,
        progress=progress,
    )
    rows, dropped = label_samples(problems, result.texts)
    metrics = sample_metrics(rows, len(problems))
    metrics.update(
        duplicates_dropped=float(dropped),
        generated_tokens=float(result.n_generated_tokens),
        generation_seconds=result.seconds,
        tokens_per_second=result.tokens_per_second,
    )
    return Dataset.from_list(rows, features=SAMPLE_FEATURES), metrics
