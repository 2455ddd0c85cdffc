"""Greedy-decoding accuracy of a policy on records with a gold answer."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlmec_core.answers import answers_match, extract_answer
from rlmec_core.generation import generate_solutions
from rlmec_core.generation_server import ServedModel
from rlmec_core.policy_prompt import format_policy_prompt
from rlmec_core.prompt_format import PromptStyle


def greedy_accuracy(
    model: PreTrainedModel | ServedModel,
    tokenizer: PreTrainedTokenizerBase,
    records: Iterable[Mapping[str, Any]],
    *,
    batch_size: int,
    max_new_tokens: int,
    progress: bool = False,
    style: PromptStyle | None = None,
) -> dict[str, Any]:
    """Accuracy of greedy solutions, judged by their final answer against ``gold_answer``.

    ``records`` is a ``datasets.Dataset`` or any iterable of dicts with ``question`` and
    ``gold_answer`` (``id`` is carried into the predictions when present). Returns
    ``accuracy``, ``n``, ``n_correct``, ``tokens_per_second``, ``seconds`` and
    ``predictions`` (one dict per record: id, prediction, predicted_answer, correct).
    """
    rows = list(records)
    for i, row in enumerate(rows):
        for key in ("question", "gold_answer"):
            if not isinstance(row.get(key), str):
                raise ValueError(f"greedy_accuracy: record {i} has no string field {key!r}")
    if not rows:
        return {
            "accuracy": 0.0,
            "n": 0,
            "n_correct": 0,
            "tokens_per_second": 0.0,
            "seconds": 0.0,
            "predictions": [],
        }
    result = generate_solutions(
        model,
        tokenizer,
        [format_policy_prompt(row["question"], style) for row in rows],
        num_return_sequences=1,
        temperature=0.0,
        top_p=1.0,
        max_new_tokens=max_new_tokens,
        batch_size=batch_size,
        seed=0,
        progress=progress,
    )
    predictions = []
    for i, (row, texts) in enumerate(zip(rows, result.texts, strict=True)):
        text = texts[0]
        predictions.append(
            {
                "id": row.get("id", str(i)),
                "prediction": text,
                "predicted_answer": extract_answer(text) or "",
                "correct": answers_match(text, row["gold_answer"]),
            }
        )
    n_correct = sum(p["correct"] for p in predictions)
    return {
        "accuracy": n_correct / len(rows),
        "n": len(rows),
        "n_correct": n_correct,
        "tokens_per_second": result.tokens_per_second,
        "seconds": result.seconds,
        "predictions": predictions,
    }
