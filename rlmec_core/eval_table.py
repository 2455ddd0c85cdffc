"""Stage 6 tables: greedy accuracy of several policies on several held-out sets, and the
ablation's variants pooled over seeds, each with a 95% confidence interval and a paired
comparison with the initial policy (and with full RLMEC) over the same problems.

Tables are built once here as :class:`Table` (header and text cells); the console, the
Markdown artifacts, the Prefect artifact and the HTML report all render these same tables.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlmec_core.evaluation import greedy_accuracy
from rlmec_core.generation_server import ServedModel
from rlmec_core.prompt_format import prompt_style
from rlmec_core.statistics import Estimate, accuracy_interval, paired_difference

BASELINE_POLICY = "initial"  # the policy every other one is compared against
REFERENCE_VARIANT = "rlmec"  # the ablation also compares every variant with full RLMEC


def evaluate_policies(
    policies: Mapping[str, tuple[PreTrainedModel | ServedModel, PreTrainedTokenizerBase]],
    eval_sets: Mapping[str, Iterable[Mapping[str, Any]]],
    *,
    batch_size: int,
    max_new_tokens: int,
    keep_predictions: bool = False,
    progress: bool = False,
    prompt_format: str = "plain",
) -> list[dict[str, Any]]:
    """Greedy accuracy of every policy on every eval set, one row per pair.

    ``prompt_format``: ``prompts.format`` (plain, chat or auto, per policy's tokenizer).

    Rows (policy order, then eval-set order): ``policy``, ``eval_set``, ``n``, ``n_correct``,
    ``accuracy``, ``outcomes`` (one bool per problem, in eval-set order: what paired
    comparisons need) and ``predictions`` when ``keep_predictions``.
    """
    if not policies:
        raise ValueError("evaluate_policies: no policies")
    if not eval_sets:
        raise ValueError("evaluate_policies: no eval sets")
    sets = {name: list(records) for name, records in eval_sets.items()}
    rows = []
    for policy, (model, tokenizer) in policies.items():
        style = prompt_style(tokenizer, prompt_format)
        for eval_set, records in sets.items():
            result = greedy_accuracy(
                model,
                tokenizer,
                records,
                batch_size=batch_size,
                max_new_tokens=max_new_tokens,
                progress=progress,
                style=style,
            )
            row = {
                "policy": policy,
                "eval_set": eval_set,
                "n": int(result["n"]),
                "n_correct": int(result["n_correct"]),
                "accuracy": float(result["accuracy"]),
                "outcomes": [bool(p["correct"]) for p in result["predictions"]],
            }
            if keep_predictions:
                row["predictions"] = result["predictions"]
            rows.append(row)
    return rows


@dataclass(frozen=True)
class Table:
    """A rendered-agnostic table: a header and rows of text cells of the same width."""

    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]

    def __post_init__(self) -> None:
        for i, row in enumerate(self.rows):
            if len(row) != len(self.header):
                raise ValueError(
                    f"table row {i} has {len(row)} cells for {len(self.header)} columns"
                )

    def to_markdown(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"


def _percent(value: float) -> str:
    return f"{100 * value:.1f}"


def _with_interval(estimate: Mapping[str, Any] | None, signed: bool = False) -> str:
    """``41.2 [38.4, 44.0]`` (or ``+3.1 [+0.9, +5.2] p=0.004`` for a difference), in %."""
    if not estimate:
        return "–"
    fmt = "{:+.1f}" if signed else "{:.1f}"
    text = (
        f"{fmt.format(100 * estimate['value'])} "
        f"[{fmt.format(100 * estimate['low'])}, {fmt.format(100 * estimate['high'])}]"
    )
    if estimate.get("p_value") is not None:
        text += f" {_p(estimate['p_value'])}"
    return text


def _p(value: float) -> str:
    return "p<0.001" if value < 0.001 else f"p={value:.3f}"


def _check_keys(rows: Sequence[Mapping[str, Any]], keys: tuple[str, ...], what: str) -> None:
    for i, row in enumerate(rows):
        missing = [k for k in keys if k not in row]
        if missing:
            raise ValueError(f"{what}: row {i} lacks {', '.join(missing)}")


def _outcomes(row: Mapping[str, Any], what: str) -> list[bool]:
    outcomes = [bool(o) for o in row["outcomes"]]
    if len(outcomes) != row["n"]:
        raise ValueError(f"{what}: {len(outcomes)} outcomes for n={row['n']} problems")
    return outcomes


def summarize_results(
    rows: Iterable[Mapping[str, Any]], *, baseline: str = BASELINE_POLICY
) -> list[dict[str, Any]]:
    """Evaluation rows (``evaluate_policies``) with ``interval`` (95% CI of the accuracy) and,
    for every policy but ``baseline``, ``vs_baseline``: the paired difference to the baseline
    on the same problems. Empty eval sets are refused: an accuracy of 0 of 0 means nothing.
    """
    rows = list(rows)
    _check_keys(rows, ("policy", "eval_set", "n", "accuracy", "outcomes"), "summarize_results")
    cell: dict[tuple[str, str], Mapping[str, Any]] = {}
    for r in rows:
        key = (r["eval_set"], r["policy"])
        if key in cell:
            raise ValueError(f"summarize_results: two rows for policy {key[1]!r} on {key[0]!r}")
        if not r["n"]:
            raise ValueError(f"summarize_results: eval set {key[0]!r} has no problems")
        cell[key] = r
    out = []
    for r in rows:
        outcomes = _outcomes(r, "summarize_results")
        summary = {k: v for k, v in r.items() if k != "predictions"}
        summary["interval"] = accuracy_interval(outcomes).to_json()
        base = cell.get((r["eval_set"], baseline))
        if base is not None and r["policy"] != baseline:
            summary["vs_baseline"] = paired_difference(
                outcomes, _outcomes(base, "summarize_results")
            ).to_json()
        out.append(summary)
    return out


def results_table(
    summary: Sequence[Mapping[str, Any]], *, baseline: str = BASELINE_POLICY
) -> Table:
    """One line per eval set and policy: accuracy with its 95% CI and, for each policy but
    the baseline, its paired difference to the baseline (points, 95% CI, p-value)."""
    _check_keys(summary, ("policy", "eval_set", "n", "interval"), "results_table")
    rows = []
    for eval_set in dict.fromkeys(s["eval_set"] for s in summary):
        lines = [s for s in summary if s["eval_set"] == eval_set]
        lines.sort(key=lambda s: s["policy"] != baseline)  # the baseline first
        for s in lines:
            rows.append(
                (
                    eval_set,
                    s["policy"],
                    str(s["n"]),
                    _with_interval(s["interval"]),
                    _with_interval(s.get("vs_baseline"), signed=True),
                )
            )
    header = ("eval set", "policy", "n", "accuracy % [95% CI]", f"Δ vs {baseline} [95% CI]")
    return Table(header, tuple(rows))


def results_markdown(rows: Iterable[Mapping[str, Any]], *, baseline: str = BASELINE_POLICY) -> str:
    """``results_table`` of ``summarize_results(rows)`` as Markdown."""
    return results_table(
        summarize_results(rows, baseline=baseline), baseline=baseline
    ).to_markdown()


def ablation_summary(
    results: Iterable[Mapping[str, Any]],
    initial: Mapping[str, Sequence[bool] | Sequence[Sequence[bool]]],
    *,
    reference: str = REFERENCE_VARIANT,
) -> list[dict[str, Any]]:
    """Every variant's accuracy pooled over its seeds, with paired comparisons.

    ``results``: dicts with ``variant``, ``seed``, ``eval_set``, ``outcomes`` (one bool per
    problem, same problems and order for every row of an eval set) and optionally
    ``policy_artifact`` and ``bootstrap_seed``. ``initial``: the initial policy's outcomes
    per eval set; with several bootstrap seeds, one row of outcomes per bootstrap seed and a
    result's ``bootstrap_seed`` is the index of its own initial policy's row (default 0).

    Each variant's seeds are pooled with every bootstrap seed's: a trained policy is paired,
    problem by problem, with the initial policy it was trained from, so the differences
    average over bootstrap seeds as they do over training seeds.

    Returns, per eval set, a row for the initial policy, then one per variant (first-seen
    order): ``variant``, ``eval_set``, ``n``, ``n_seeds``, ``seeds`` (``"b/s"`` labels with
    several bootstrap seeds), ``accuracy`` (pooled, with its 95% CI), ``seed_accuracies``,
    ``std`` over seeds (None below two), ``vs_initial`` and ``vs_reference`` (paired
    differences; None for the reference itself or when it was not run),
    ``vs_initial_by_bootstrap`` (one paired difference per bootstrap seed; None with one) and
    ``artifacts`` (policy artifact id per seed).
    """
    results = list(results)
    _check_keys(results, ("variant", "seed", "eval_set", "outcomes"), "ablation_summary")
    bases = {name: _initial_rows(name, outcomes) for name, outcomes in initial.items()}
    several = any(len(rows) > 1 for rows in bases.values())
    groups = _group_seeds(results, bases, several)
    summary = []
    for eval_set, base in bases.items():
        summary.append(_initial_summary(eval_set, base, several))
        for (variant, where), by_seed in groups.items():
            if where != eval_set:
                continue
            ref = groups.get((reference, eval_set))
            summary.append(
                _variant_summary(variant, eval_set, by_seed, base, ref, reference, several)
            )
    return summary


def _group_seeds(
    results: Sequence[Mapping[str, Any]], bases: Mapping[str, list[list[bool]]], several: bool
) -> dict[tuple[str, str], dict[Any, Mapping[str, Any]]]:
    """The result rows by (variant, eval set), then by seed (``"b/s"`` with ``several``
    bootstrap seeds), each checked against its initial policy's outcomes."""
    groups: dict[tuple[str, str], dict[Any, Mapping[str, Any]]] = {}
    for i, r in enumerate(results):
        if r["eval_set"] not in bases:
            raise ValueError(
                f"ablation_summary: row {i}: no initial outcomes for {r['eval_set']!r}"
            )
        base = bases[r["eval_set"]]
        boot = r.get("bootstrap_seed", 0)
        if not 0 <= boot < len(base):
            raise ValueError(
                f"ablation_summary: row {i}: bootstrap seed {boot!r} has no initial outcomes "
                f"on {r['eval_set']!r} ({len(base)} given)"
            )
        if len(r["outcomes"]) != len(base[0]):
            raise ValueError(
                f"ablation_summary: row {i} has {len(r['outcomes'])} outcomes on "
                f"{r['eval_set']!r}, the initial policy {len(base[0])}"
            )
        seed = f"{boot}/{r['seed']}" if several else r["seed"]
        seeds = groups.setdefault((r["variant"], r["eval_set"]), {})
        if seed in seeds:
            raise ValueError(
                f"ablation_summary: row {i} repeats seed {seed!r} of variant "
                f"{r['variant']!r} on {r['eval_set']!r}"
            )
        seeds[seed] = r
    return groups


def _outcome_matrix(rows: Iterable[Mapping[str, Any]]) -> list[list[bool]]:
    return [[bool(o) for o in r["outcomes"]] for r in rows]


def _initial_summary(eval_set: str, base: list[list[bool]], several: bool) -> dict[str, Any]:
    """The initial policy's summary row on ``eval_set``: one seed per bootstrap seed."""
    accuracies = [sum(row) / len(row) for row in base]
    return {
        "variant": BASELINE_POLICY,
        "eval_set": eval_set,
        "n": len(base[0]),
        "n_seeds": len(base),
        "seeds": list(range(len(base))) if several else [],
        "accuracy": accuracy_interval(base).to_json(),
        "seed_accuracies": accuracies,
        "std": statistics.stdev(accuracies) if len(accuracies) > 1 else None,
        "vs_initial": None,
        "vs_reference": None,
        "vs_initial_by_bootstrap": None,
        "artifacts": {},
    }


def _variant_summary(
    variant: str,
    eval_set: str,
    by_seed: Mapping[Any, Mapping[str, Any]],
    base: list[list[bool]],
    ref: Mapping[Any, Mapping[str, Any]] | None,
    reference: str,
    several: bool,
) -> dict[str, Any]:
    """One variant's summary row on ``eval_set``: its seeds pooled, paired with the initial
    policy (``base``) and with the ``reference`` variant's seeds (``ref``, when it ran)."""
    seeds = sorted(by_seed, key=str)
    rows = [by_seed[s] for s in seeds]
    outcomes = _outcome_matrix(rows)
    # Each trained policy beside the initial policy it started from.
    initials = [base[r.get("bootstrap_seed", 0)] for r in rows]
    accuracies = [sum(o) / len(o) for o in outcomes]
    vs_reference: Estimate | None = None
    if ref is not None and variant != reference:
        vs_reference = paired_difference(outcomes, _outcome_matrix(ref.values()))
    by_bootstrap = None
    if several:
        by_bootstrap = {
            str(b): paired_difference(
                _outcome_matrix(r for r in rows if r.get("bootstrap_seed", 0) == b), base[b]
            ).to_json()
            for b in sorted({r.get("bootstrap_seed", 0) for r in rows})
        }
    return {
        "variant": variant,
        "eval_set": eval_set,
        "n": len(base[0]),
        "n_seeds": len(seeds),
        "seeds": seeds,
        "accuracy": accuracy_interval(outcomes).to_json(),
        "seed_accuracies": accuracies,
        "std": statistics.stdev(accuracies) if len(accuracies) > 1 else None,
        "vs_initial": paired_difference(outcomes, initials).to_json(),
        "vs_reference": vs_reference.to_json() if vs_reference else None,
        "vs_initial_by_bootstrap": by_bootstrap,
        "artifacts": {str(s): r.get("policy_artifact") for s, r in zip(seeds, rows, strict=True)},
    }


def _initial_rows(
    eval_set: str, outcomes: Sequence[bool] | Sequence[Sequence[bool]]
) -> list[list[bool]]:
    """The initial policy's outcomes as one row per bootstrap seed."""
    rows = list(outcomes)
    if not rows:
        raise ValueError(f"ablation_summary: eval set {eval_set!r} has no problems")
    if not isinstance(rows[0], Sequence):
        rows = [rows]
    if not rows[0] or any(len(row) != len(rows[0]) for row in rows):
        raise ValueError(
            f"ablation_summary: eval set {eval_set!r}: every bootstrap seed's initial policy "
            "needs outcomes on the same, non-empty problems"
        )
    return [[bool(o) for o in row] for row in rows]


def ablation_table(
    summary: Sequence[Mapping[str, Any]], *, reference: str = REFERENCE_VARIANT
) -> Table:
    """One line per eval set and variant: pooled accuracy [95% CI], std over seeds, and the
    paired differences to the initial policy and to ``reference`` (points [95% CI], p).
    Pooled over several bootstrap seeds, a last column gives each bootstrap seed's own
    difference to its initial policy, so a conclusion can be checked seed by seed."""
    _check_keys(summary, ("variant", "eval_set", "n", "n_seeds", "accuracy"), "ablation_table")
    per_bootstrap = any(s.get("vs_initial_by_bootstrap") for s in summary)
    rows = []
    for s in summary:
        std = "–" if s.get("std") is None else _percent(s["std"])
        row = (
            s["eval_set"],
            s["variant"],
            str(s["n"]),
            str(s["n_seeds"]),
            _with_interval(s["accuracy"]),
            std,
            _with_interval(s.get("vs_initial"), signed=True),
            _with_interval(s.get("vs_reference"), signed=True),
        )
        if per_bootstrap:
            by_seed = s.get("vs_initial_by_bootstrap") or {}
            row += (" / ".join(f"{100 * e['value']:+.1f}" for e in by_seed.values()) or "–",)
        rows.append(row)
    header = (
        "eval set",
        "variant",
        "n",
        "seeds",
        "accuracy % [95% CI]",
        "std over seeds",
        f"Δ vs {BASELINE_POLICY} [95% CI]",
        f"Δ vs {reference} [95% CI]",
    )
    if per_bootstrap:
        header += (f"Δ vs {BASELINE_POLICY} per bootstrap seed",)
    return Table(header, tuple(rows))


def ablation_markdown(summary: Sequence[Mapping[str, Any]]) -> str:
    """``ablation_table`` as Markdown."""
    return ablation_table(summary).to_markdown()


def tuning_summary(
    results: Iterable[Mapping[str, Any]], initial: Sequence[bool]
) -> list[dict[str, Any]]:
    """Dev accuracy of each (variant, learning rate), its paired difference to the initial
    policy, and ``chosen``: the best learning rate of each variant (ties: the smaller).

    ``results``: dicts with ``variant``, ``learning_rate``, ``outcomes`` (on the dev split).
    """
    results = list(results)
    _check_keys(results, ("variant", "learning_rate", "outcomes"), "tuning_summary")
    rows = [
        {
            "variant": r["variant"],
            "learning_rate": float(r["learning_rate"]),
            "n": len(r["outcomes"]),
            "accuracy": accuracy_interval([bool(o) for o in r["outcomes"]]).to_json(),
            "vs_initial": paired_difference(
                [bool(o) for o in r["outcomes"]], [bool(o) for o in initial]
            ).to_json(),
        }
        for r in results
    ]
    best: dict[str, dict[str, Any]] = {}
    for row in rows:
        current = best.get(row["variant"])
        key = (row["accuracy"]["value"], -row["learning_rate"])
        if current is None or key > (current["accuracy"]["value"], -current["learning_rate"]):
            best[row["variant"]] = row
    for row in rows:
        row["chosen"] = best[row["variant"]] is row
    return rows


def tuning_table(summary: Sequence[Mapping[str, Any]]) -> Table:
    """One line per variant and learning rate: dev accuracy [95% CI], Δ vs the initial
    policy, and a mark on the learning rate chosen for the variant."""
    _check_keys(summary, ("variant", "learning_rate", "accuracy", "chosen"), "tuning_table")
    rows = tuple(
        (
            s["variant"],
            f"{s['learning_rate']:g}",
            _with_interval(s["accuracy"]),
            _with_interval(s.get("vs_initial"), signed=True),
            "chosen" if s["chosen"] else "",
        )
        for s in summary
    )
    header = (
        "variant",
        "learning rate",
        "dev accuracy % [95% CI]",
        f"Δ vs {BASELINE_POLICY} [95% CI]",
        "",
    )
    return Table(header, rows)
