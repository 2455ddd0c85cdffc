"""The run's tables: stage timings, key metrics, evaluation and ablation.

Each function returns what its template shows; the evaluation and ablation tables are the
:class:`Table` objects the console and the Markdown artifacts print, so all agree.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from report.data import ReportRun
from report.unavailable import Unavailable
from rlmec_core.eval_table import Table, ablation_table, results_table
from storage import catalog

ABLATION_TAG = "rlmec.ablation_artifact"  # set on an ablation's parent run (flows/ablation.py)
TIMED = ("ran", "cached", "failed", "skipped")


@dataclass(frozen=True)
class StageRow:
    label: str
    status: str
    artifact: str
    wall_time: str


@dataclass(frozen=True)
class MetricCard:
    label: str
    kind: str = ""
    table: Table | None = None
    variant: str | None = None
    mlflow_run_id: str = "–"
    note: str | None = None


def stages(run: ReportRun) -> dict[str, Any]:
    rows = []
    for line in run.lines:
        status, seconds = str(line.get("status", "?")), line.get("seconds")
        timed = status in TIMED and seconds is not None
        rows.append(
            StageRow(
                label=line["stage"],
                status=status,
                artifact=line.get("artifact") or "–",
                wall_time=f"{float(seconds):.1f} s" if timed else "",
            )
        )
    total = sum(float(s.get("seconds") or 0) for s in run.lines)
    cached = sum(1 for s in run.lines if s.get("status") == "cached")
    return {"rows": rows, "total": f"{total:.1f} s in all; {cached} stage(s) from the cache"}


def _number(value: float) -> str:
    if isinstance(value, int) or (
        math.isfinite(value) and value == int(value) and abs(value) < 1e9
    ):
        return f"{int(value):,}"
    return f"{value:.4g}"


def metrics(run: ReportRun) -> dict[str, Any]:
    cards = []
    for line in run.lines:
        try:
            manifest = run.manifest_of(line)
        except Unavailable as why:
            cards.append(MetricCard(line["stage"], note=str(why)))
            continue
        # Numbers only: a stage may also record e.g. its whole parameter dict there.
        numbers = {
            k: v
            for k, v in (manifest.extra.get("metrics") or {}).items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        table = Table(
            ("metric", "value"), tuple((k, _number(v)) for k, v in sorted(numbers.items()))
        )
        cards.append(
            MetricCard(
                label=line["stage"],
                kind=manifest.kind,
                table=table if numbers else None,
                variant=(manifest.extra.get("summary") or {}).get("variant"),
                mlflow_run_id=manifest.mlflow_run_id or "–",
            )
        )
    return {"cards": cards}


def _read_json(path: Path) -> Any:
    if not path.is_file():
        raise Unavailable(f"{path} is missing")
    return json.loads(path.read_text(encoding="utf-8"))


def evaluation(run: ReportRun) -> dict[str, Any]:
    line = run.line("evaluate")
    path = catalog.RESULTS.path(run.artifact_of(line))
    summary = _read_json(path)
    if not isinstance(summary, list) or not summary:
        raise Unavailable(f"{path} holds no result rows")
    try:
        table = results_table(summary)
    except ValueError as exc:  # e.g. an artifact written before the intervals existed
        raise Unavailable(f"{path}: {exc}") from None
    return {"artifact": path.parent.name, "label": line["stage"], "table": table}


def ablation(run: ReportRun) -> dict[str, Any]:
    """The ablation this run made, named by a tag on its MLflow parent run: never another
    run's, even in a workspace with several."""
    try:
        artifact_id = run.mlflow.parent_tag(ABLATION_TAG)
    except Unavailable as why:
        raise Unavailable(f"cannot tell whether this run is an ablation: {why}") from None
    if not artifact_id:
        if any("[" in line["stage"] for line in run.lines):
            raise Unavailable("this run trained ablation variants but did not finish its ablation")
        raise Unavailable("this run is not an ablation (`rlmec ablate` makes one)")
    path = catalog.study_summary("ablation").path(run.artifact_path(artifact_id))
    summary = _read_json(path).get("summary")
    if not summary:
        raise Unavailable(f"{path} has an empty summary")
    try:
        table = ablation_table(summary)
    except ValueError as exc:
        raise Unavailable(f"{path}: {exc}") from None
    created = run.store.manifest(artifact_id).created_at
    return {"artifact": artifact_id, "created_at": created, "table": table}
