"""Stage 6 tables: greedy accuracy of several policies on several held-out sets, and the
mean ± std of the ablation variants over seeds."""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlmec_core.evaluation import greedy_accuracy

BASELINE_POLICY = "initial"  # the column every other policy is compared against


def evaluate_policies(
    policies: Mapping[str, tuple[PreTrainedModel, PreTrainedTokenizerBase]],
    eval_sets: Mapping[str, Iterable[Mapping[str, Any]]],
    *,
    batch_size: int,
    max_new_tokens: int,
    keep_predictions: bool = False,
    progress: bool = False,
) -> list[dict[str, Any]]:
    """Greedy accuracy of every policy on every eval set, one row per pair.

    Rows (policy order, then eval-set order): ``policy``, ``eval_set``, ``n``, ``n_correct``,
    ``accuracy``, and ``predictions`` when ``keep_predictions``.
    """
    if not policies:
        raise ValueError("evaluate_policies: no policies")
    if not eval_sets:
        raise ValueError("evaluate_policies: no eval sets")
    sets = {name: list(records) for name, records in eval_sets.items()}
    rows = []
    for policy, (model, tokenizer) in policies.items():
        for eval_set, records in sets.items():
            result = greedy_accuracy(
                model,
                tokenizer,
                records,
                batch_size=batch_size,
                max_new_tokens=max_new_tokens,
                progress=progress,
            )
            row = {
                "policy": policy,
                "eval_set": eval_set,
                "n": int(result["n"]),
                "n_correct": int(result["n_correct"]),
                "accuracy": float(result["accuracy"]),
            }
            if keep_predictions:
                row["predictions"] = result["predictions"]
            rows.append(row)
    return rows


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def _check_keys(rows: list[Mapping[str, Any]], keys: tuple[str, ...], what: str) -> None:
    for i, row in enumerate(rows):
        missing = [k for k in keys if k not in row]
        if missing:
            raise ValueError(f"{what}: row {i} lacks {', '.join(missing)}")


def results_markdown(rows: list[Mapping[str, Any]], *, baseline: str = BASELINE_POLICY) -> str:
    """A markdown table: one line per eval set, policies side by side (accuracy in %).

    When the ``baseline`` policy (the initial one) is present, each other policy also gets a
    ``Δ`` column: its accuracy minus the baseline's, in points.
    """
    rows = list(rows)
    _check_keys(rows, ("policy", "eval_set", "n", "accuracy"), "results_markdown")
    policies = list(dict.fromkeys(r["policy"] for r in rows))
    eval_sets = list(dict.fromkeys(r["eval_set"] for r in rows))
    cell = {}
    for r in rows:
        key = (r["eval_set"], r["policy"])
        if key in cell:
            raise ValueError(f"results_markdown: two rows for policy {key[1]!r} on {key[0]!r}")
        cell[key] = r
    has_baseline = baseline in policies
    if has_baseline:  # the baseline first, so the comparison reads left to right
        policies = [baseline] + [p for p in policies if p != baseline]
    header = ["eval set", "n"]
    for p in policies:
        header.append(f"{p} acc %")
        if has_baseline and p != baseline:
            header.append(f"Δ {p} vs {baseline}")
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for s in eval_sets:
        ns = sorted({cell[s, p]["n"] for p in policies if (s, p) in cell})
        line = [s, "/".join(str(n) for n in ns)]
        base = cell.get((s, baseline))
        for p in policies:
            r = cell.get((s, p))
            line.append(_percent(r["accuracy"]) if r else "–")
            if has_baseline and p != baseline:
                delta = 100 * (r["accuracy"] - base["accuracy"]) if r and base else None
                line.append(f"{delta:+.1f}" if delta is not None else "–")
        lines.append("| " + " | ".join(line) + " |")
    return "\n".join(lines) + "\n"


def ablation_summary(results: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation of accuracy over seeds, per variant and eval set.

    ``results``: dicts with ``variant``, ``seed``, ``eval_set``, ``accuracy``. Returns one dict
    per (variant, eval set) in first-seen order: ``variant``, ``eval_set``, ``mean``, ``std``
    (``None`` with a single seed: a sample deviation needs two), ``n_seeds``, ``seeds``.
    """
    results = list(results)
    _check_keys(results, ("variant", "seed", "eval_set", "accuracy"), "ablation_summary")
    groups: dict[tuple[str, str], dict[Any, float]] = {}
    for i, r in enumerate(results):
        accuracy = float(r["accuracy"])
        if not math.isfinite(accuracy):
            raise ValueError(f"ablation_summary: row {i} has accuracy {r['accuracy']!r}")
        seeds = groups.setdefault((r["variant"], r["eval_set"]), {})
        if r["seed"] in seeds:
            raise ValueError(
                f"ablation_summary: row {i} repeats seed {r['seed']!r} of variant "
                f"{r['variant']!r} on {r['eval_set']!r}"
            )
        seeds[r["seed"]] = accuracy
    summary = []
    for (variant, eval_set), seeds in groups.items():
        values = list(seeds.values())
        summary.append(
            {
                "variant": variant,
                "eval_set": eval_set,
                "mean": statistics.fmean(values),
                "std": statistics.stdev(values) if len(values) > 1 else None,
                "n_seeds": len(values),
                "seeds": sorted(seeds, key=str),
            }
        )
    return summary


def ablation_markdown(summary: list[Mapping[str, Any]]) -> str:
    """A markdown table: one line per variant, ``mean ± std (n)`` accuracy % per eval set."""
    summary = list(summary)
    _check_keys(summary, ("variant", "eval_set", "mean", "std", "n_seeds"), "ablation_markdown")
    variants = list(dict.fromkeys(s["variant"] for s in summary))
    eval_sets = list(dict.fromkeys(s["eval_set"] for s in summary))
    cell = {(s["variant"], s["eval_set"]): s for s in summary}
    lines = [
        "| variant | " + " | ".join(eval_sets) + " |",
        "|---|" + "---|" * len(eval_sets),
    ]
    for v in variants:
        parts = []
        for e in eval_sets:
            s = cell.get((v, e))
            if s is None:
                parts.append("–")
                continue
            std = "–" if s["std"] is None else _percent(s["std"])
            parts.append(f"{_percent(s['mean'])} ± {std} (n={s['n_seeds']})")
        lines.append(f"| {v} | " + " | ".join(parts) + " |")
    return "\n".join(lines) + "\n"
