"""Training curves: the loss histories MLflow holds for each training stage."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from report.charts import LineChart, line_chart
from report.data import ReportRun, stage_of
from report.unavailable import Unavailable

CURVE_KEYS = {
    "bootstrap": ("train_loss",),
    "train_grm": ("train_loss",),
    "train_policy": ("train_loss", "l_rl", "l_im"),
}


@dataclass(frozen=True)
class ChartNote:
    """A chart that cannot be drawn, and why."""

    title: str
    note: str


def metric_run(run: ReportRun, line: dict[str, Any]) -> str:
    """The MLflow run holding a stage's metrics: the one that made its artifact (for a
    cached stage, a child run of the run that computed it). A failed stage has no artifact,
    but its own child run may hold the history up to the failure."""
    if not line.get("artifact") and line.get("status") == "failed":
        child = run.mlflow.children().get(line["stage"])
        if child is not None:
            return child.info.run_id
    manifest = run.manifest_of(line)
    if manifest.mlflow_run_id:
        return manifest.mlflow_run_id
    raise Unavailable(f"artifact {manifest.id} records no MLflow run")


def _same(value: float, other: Any) -> bool:
    return isinstance(other, int | float) and math.isclose(value, float(other), rel_tol=1e-9)


def stage_series(run: ReportRun, line: dict[str, Any]) -> dict[str, list[tuple[int, float]]]:
    source = metric_run(run, line)
    summary = run.manifest_metrics(line)
    series = {}
    for key in CURVE_KEYS[stage_of(line["stage"])]:
        values = run.mlflow.metric_series(source, key)
        # A stage's summary metric of the same name (e.g. the mean train_loss) is logged
        # at step 0 of the same MLflow key; it is not a point of the curve.
        if len(values) > 1 and values[0][0] == 0 and _same(values[0][1], summary.get(key)):
            values = values[1:]
        if values:
            series[key] = values
    if not series:
        keys = " / ".join(CURVE_KEYS[stage_of(line["stage"])])
        raise Unavailable(f"MLflow run {source} has no {keys} history")
    return series


def curves(run: ReportRun) -> dict[str, Any]:
    charts: list[LineChart | ChartNote] = []
    for line in run.lines:
        if stage_of(line["stage"]) not in CURVE_KEYS:
            continue
        try:
            series = stage_series(run, line)
        except Exception as exc:  # one stage's missing history must not hide the others
            why = str(exc) if isinstance(exc, Unavailable) else f"{type(exc).__name__}: {exc}"
            charts.append(ChartNote(line["stage"], why))
            continue
        # The RL terms sit on another scale than the total loss: one chart each.
        loss = {k: v for k, v in series.items() if k == "train_loss"}
        terms = {k: v for k, v in series.items() if k != "train_loss"}
        for group in (loss, terms):
            if group:
                title = f"{line['stage']}: {' + '.join(group)}"
                if line.get("status") == "failed":
                    title += " (failed: history up to the failure)"
                charts.append(line_chart(title, group))
    if not charts:
        raise Unavailable("the run has no training stage")
    return {"charts": charts}
