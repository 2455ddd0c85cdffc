"""`rlmec report`: one self-contained HTML page about a pipeline run.

Everything the page shows comes from the workspace (run record, artifacts, manifests) and
the MLflow store; the page itself has inline CSS and inline SVG only, so it can be mailed or
archived as one file. Every piece of text taken from data goes through ``_e`` (HTML
escaping, quotes included) before it is placed in the page, and a Content-Security-Policy
forbids scripts, so a question or prediction cannot inject markup. A piece that cannot be
shown (a run that stopped early, a failed stage, no MLflow store) becomes a
"not available: <why>" note instead of an error.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from flows.run_records import load_run_records
from rlmec_core.config import STAGES
from storage.atomic import write_bytes_atomic
from storage.store import ArtifactNotFoundError, ArtifactStore

SECTION_IDS = ("stages", "metrics", "evaluation", "ablation", "curves", "tokens")
CURVE_STAGES = ("bootstrap", "train_grm", "train_policy")
CURVE_KEYS = {
    "bootstrap": ("train_loss",),
    "train_grm": ("train_loss",),
    "train_policy": ("train_loss", "l_rl", "l_im"),
}
MAX_TOKEN_SAMPLES = 8
PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf")


class Unavailable(Exception):
    """A report piece that cannot be shown; the message says why."""


def _e(value: Any) -> str:
    """Escape text from data for element content and (double-quoted) attribute values."""
    return html.escape(str(value), quote=True)


def _note(why: str) -> str:
    return f'<p class="na">not available: {_e(why)}</p>'


def _base(label: str) -> str:
    """The stage of a report line: ablation lines are labelled e.g. ``evaluate[rft,seed=0]``."""
    return label.split("[", 1)[0]


# ---------------------------------------------------------------- the run and its data


def select_run(workspace: str | Path, run_id: str | None = None) -> dict[str, Any]:
    """The run record of MLflow parent run ``run_id`` (a unique prefix will do), or the latest."""
    records = load_run_records(workspace)
    if not records:
        raise ValueError(f"no pipeline runs in {Path(workspace) / 'runs'}; run `rlmec run` first")
    if run_id is None:
        return records[-1]
    matches = [r for r in records if str(r.get("mlflow_run_id", "")).startswith(run_id)]
    if len(matches) != 1:
        what = "no run" if not matches else f"{len(matches)} runs"
        known = ", ".join(str(r.get("mlflow_run_id")) for r in records[-5:])
        raise ValueError(
            f"{what} in {Path(workspace) / 'runs'} match run id {run_id!r} (latest: {known})"
        )
    return matches[0]


def _raw_stage_lines(workspace: Path, run_id: str) -> list[dict[str, Any]] | None:
    """The record's stage lines as written, ablation labels included (the loader keeps only
    the plain stage names)."""
    folder = workspace / "runs"
    for path in sorted(folder.glob(f"*-{run_id[:8]}.json")):
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except ValueError:
            continue
        if record.get("mlflow_run_id") == run_id:
            return list(record.get("stages", []))
    return None


@dataclass
class _Run:
    workspace: Path
    record: dict[str, Any]
    tracking_uri: str | None
    lines: list[dict[str, Any]] = field(default_factory=list)
    _client: Any = None
    _children: dict[str, Any] | None = None

    @property
    def run_id(self) -> str:
        return str(self.record.get("mlflow_run_id"))

    @property
    def store(self) -> ArtifactStore:
        return ArtifactStore(self.workspace)

    def line(self, stage: str) -> dict[str, Any]:
        """The stage's report line: the plain one, else the first labelled one with an artifact."""
        same = [s for s in self.lines if _base(s["stage"]) == stage]
        exact = [s for s in same if s["stage"] == stage]
        with_artifact = [s for s in same if s.get("artifact")]
        if exact:
            return exact[0]
        if with_artifact:
            return with_artifact[0]
        return same[0] if same else {"stage": stage, "status": "not reached"}

    def artifact(self, stage: str) -> Path:
        return self.artifact_of(self.line(stage))

    def artifact_of(self, line: dict[str, Any]) -> Path:
        artifact = line.get("artifact")
        if not artifact:
            raise Unavailable(self.why_missing(line))
        try:
            return self.store.path(artifact)
        except ArtifactNotFoundError as exc:
            raise Unavailable(str(exc)) from None

    def why_missing(self, line: dict[str, Any]) -> str:
        stage, status = line["stage"], line.get("status", "?")
        if status == "failed":
            error = self.stage_error(stage)
            return f"stage {stage} failed" + (f": {error}" if error else "")
        if status == "not reached":
            if self.record.get("status") == "RUNNING":
                return f"stage {stage} has not run yet (the run is still going)"
            if self.record.get("status") == "INTERRUPTED":
                return f"stage {stage} was not reached (the run was interrupted)"
            return f"stage {stage} was not reached (the run stopped before it)"
        if status == "not implemented":
            return f"stage {stage} is not implemented in this pipeline version"
        return f"stage {stage} has no artifact (status {status})"

    # -- MLflow ----------------------------------------------------------------
    def client(self) -> Any:
        if self._client is None:
            uri = self.tracking_uri
            if uri is None:
                raise Unavailable("no MLflow tracking URI")
            if uri.startswith("sqlite:///"):
                db = Path(uri.removeprefix("sqlite:///"))
                if not db.is_file():  # opening it would create an empty store
                    raise Unavailable(f"no MLflow store at {db}")
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=uri)
        return self._client

    def children(self) -> dict[str, Any]:
        """The parent run's child runs, by stage label (the run name)."""
        if self._children is None:
            client = self.client()
            parent = client.get_run(self.run_id)
            runs = client.search_runs(
                [parent.info.experiment_id],
                filter_string=f"tags.mlflow.parentRunId = '{self.run_id}'",
                max_results=1000,
                order_by=["attributes.start_time ASC"],  # a retried stage: the last try wins
            )
            self._children = {
                r.info.run_name or r.data.tags.get("rlmec.stage", ""): r for r in runs
            }
        return self._children

    def stage_error(self, stage: str) -> str | None:
        try:
            child = self.children().get(stage) or self.children().get(_base(stage))
        except Exception:  # the note is extra detail, never worth failing for
            return None
        return child.data.tags.get("rlmec.error") if child is not None else None

    def summary_metrics(self, line: dict[str, Any]) -> dict[str, Any]:
        """The metrics recorded in the stage's manifest ({} when it has no artifact)."""
        if not line.get("artifact"):
            return {}
        return dict(self.store.manifest(self.artifact_of(line).name).extra.get("metrics") or {})

    def metric_run(self, line: dict[str, Any]) -> str:
        """The MLflow run holding a stage's metrics: the one that made its artifact (for a
        cached stage, a child run of the run that computed it). A failed stage has no
        artifact, but its own child run may hold the history up to the failure."""
        if not line.get("artifact") and line.get("status") == "failed":
            child = self.children().get(line["stage"])
            if child is not None:
                return child.info.run_id
        path = self.artifact_of(line)
        manifest = self.store.manifest(path.name)
        if manifest.mlflow_run_id:
            return manifest.mlflow_run_id
        raise Unavailable(f"artifact {path.name} records no MLflow run")


def _tracking_uri(workspace: Path, record: dict[str, Any]) -> str:
    """The config's tracking URI when its file is still there, else the workspace default."""
    from tasks.tracking import default_tracking_uri

    config_path = record.get("config_path")
    if config_path and Path(config_path).is_file():
        try:
            from rlmec_core.config import load_config

            uri = load_config(config_path).tracking.mlflow_tracking_uri
            if uri:
                return uri
        except Exception:  # an edited/broken config must not break the report
            pass
    return default_tracking_uri(workspace)


def _stage_lines(workspace: Path, record: dict[str, Any]) -> list[dict[str, Any]]:
    raw = _raw_stage_lines(workspace, str(record.get("mlflow_run_id", ""))) or record["stages"]
    lines = [dict(s) for s in raw]
    seen = {_base(s["stage"]) for s in lines}
    lines += [{"stage": s, "status": "not reached"} for s in STAGES if s not in seen]
    order = {s: i for i, s in enumerate(STAGES)}
    return sorted(lines, key=lambda s: order.get(_base(s["stage"]), len(STAGES)))


# ---------------------------------------------------------------- sections


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """A table from already-escaped cell HTML (header cells are escaped here)."""
    head = "".join(f"<th>{_e(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _number(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return _e(value)
    if isinstance(value, int) or (
        math.isfinite(value) and value == int(value) and abs(value) < 1e9
    ):
        return _e(f"{int(value):,}")
    return _e(f"{value:.4g}")


def section_stages(run: _Run) -> str:
    rows = []
    for line in run.lines:
        status = str(line.get("status", "?"))
        seconds = line.get("seconds")
        timed = status in ("ran", "cached", "failed", "skipped") and seconds is not None
        artifact = line.get("artifact") or "–"
        rows.append(
            [
                _e(line["stage"]),
                f'<span class="st st-{_e(status.replace(" ", "-"))}">{_e(status)}</span>',
                f"<code>{_e(artifact)}</code>",
                _e(f"{float(seconds):.1f} s") if timed else "",
            ]
        )
    total = sum(float(s.get("seconds") or 0) for s in run.lines)
    cached = sum(1 for s in run.lines if s.get("status") == "cached")
    return _table(["stage", "status", "artifact", "wall time"], rows, "stages") + (
        f'<p class="small">{_e(f"{total:.1f} s in all; {cached} stage(s) from the cache")}</p>'
    )


def section_metrics(run: _Run) -> str:
    cards = []
    for line in run.lines:
        try:
            path = run.artifact_of(line)
            manifest = run.store.manifest(path.name)
        except Unavailable as why:
            cards.append(f'<div class="card"><h3>{_e(line["stage"])}</h3>{_note(str(why))}</div>')
            continue
        # Numbers only: a stage may also record e.g. its whole parameter dict there.
        metrics = {
            k: v
            for k, v in (manifest.extra.get("metrics") or {}).items()
            if isinstance(v, int | float) and not isinstance(v, bool)
        }
        summary = manifest.extra.get("summary") or {}
        body = (
            _table(["metric", "value"], [[_e(k), _number(v)] for k, v in sorted(metrics.items())])
            if metrics
            else '<p class="small">no metrics recorded</p>'
        )
        if "variant" in summary:
            body += f'<p class="small">variant: {_e(summary["variant"])}</p>'
        cards.append(
            f'<div class="card"><h3>{_e(line["stage"])} <span class="small">({_e(manifest.kind)})'
            f"</span></h3>{body}"
            f'<p class="small">MLflow run <code>{_e(manifest.mlflow_run_id or "–")}</code></p>'
            "</div>"
        )
    return f'<div class="cards">{"".join(cards)}</div>'


def _percent(value: Any) -> str:
    return _e(f"{100 * float(value):.1f}")


def section_evaluation(run: _Run) -> str:
    line = run.line("evaluate")
    path = run.artifact_of(line)
    results = path / "results.json"
    if not results.is_file():
        raise Unavailable(f"{results} is missing")
    rows = json.loads(results.read_text(encoding="utf-8"))
    if not isinstance(rows, list) or not rows:
        raise Unavailable(f"{results} holds no result rows")
    policies = list(dict.fromkeys(str(r["policy"]) for r in rows))
    if "initial" in policies:
        policies = ["initial"] + [p for p in policies if p != "initial"]
    sets = list(dict.fromkeys(str(r["eval_set"]) for r in rows))
    cell = {(str(r["eval_set"]), str(r["policy"])): r for r in rows}
    header = ["eval set", "n"]
    for p in policies:
        header.append(f"{p} accuracy %")
        if p != "initial" and "initial" in policies:
            header.append(f"Δ {p} vs initial")
    table_rows = []
    for s in sets:
        ns = sorted({int(cell[s, p]["n"]) for p in policies if (s, p) in cell})
        out = [_e(s), _e("/".join(map(str, ns)))]
        base = cell.get((s, "initial"))
        for p in policies:
            r = cell.get((s, p))
            if r is None:
                out.append("–")
            else:
                width = max(0.0, min(100.0, 100 * float(r["accuracy"])))
                out.append(
                    f'<div class="bar"><div style="width:{width:.1f}%"></div></div>'
                    f"{_percent(r['accuracy'])} "
                    f'<span class="small">({_e(r.get("n_correct", "?"))}/{_e(r["n"])})</span>'
                )
            if p != "initial" and "initial" in policies:
                if r is None or base is None:
                    out.append("–")
                else:
                    delta = 100 * (float(r["accuracy"]) - float(base["accuracy"]))
                    sign = "up" if delta > 0 else "down" if delta < 0 else "flat"
                    out.append(f'<span class="{sign}">{_e(f"{delta:+.1f}")}</span>')
        table_rows.append(out)
    label = "" if line["stage"] == "evaluate" else f" ({line['stage']})"
    return (
        f'<p class="small">Greedy accuracy of the initial policy and the trained one{_e(label)}, '
        f"artifact <code>{_e(path.name)}</code>.</p>" + _table(header, table_rows, "eval")
    )


def latest_ablation(store: ArtifactStore) -> Path | None:
    found = []
    for artifact_id in store.ids():
        try:
            manifest = store.manifest(artifact_id)
        except ValueError:
            continue
        if manifest.kind == "ablation":
            found.append((manifest.created_at, artifact_id))
    return store.path(max(found)[1]) if found else None


def section_ablation(run: _Run) -> str:
    path = latest_ablation(run.store)
    if path is None:
        return '<p class="na">no ablation run yet in this workspace (`rlmec ablate` makes one)</p>'
    payload = json.loads((path / "ablation.json").read_text(encoding="utf-8"))
    summary = payload.get("summary") or []
    if not summary:
        raise Unavailable(f"{path / 'ablation.json'} has an empty summary")
    variants = list(dict.fromkeys(str(s["variant"]) for s in summary))
    sets = list(dict.fromkeys(str(s["eval_set"]) for s in summary))
    cell = {(str(s["variant"]), str(s["eval_set"])): s for s in summary}
    rows = []
    for v in variants:
        out = [_e(v)]
        for s in sets:
            c = cell.get((v, s))
            if c is None:
                out.append("–")
                continue
            std = "–" if c.get("std") is None else _percent(c["std"])
            out.append(
                f"{_percent(c['mean'])} ± {std} <span class=small>(n={_e(c['n_seeds'])})</span>"
            )
        rows.append(out)
    manifest = run.store.manifest(path.name)
    return (
        f'<p class="small">Accuracy % (mean ± std over seeds) of every policy variant; artifact '
        f"<code>{_e(path.name)}</code>, made {_e(manifest.created_at)}.</p>"
        + _table(["variant", *sets], rows, "eval")
    )


# -- curves


def _ticks(low: float, high: float, count: int = 5, integer: bool = False) -> list[float]:
    if high <= low:
        return [low]
    raw = (high - low) / count
    if integer:  # steps are whole numbers: no tick at step 0.5
        raw = max(raw, 1.0)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)
    first = math.ceil(low / step) * step
    return [first + i * step for i in range(int((high - first) / step + 1e-9) + 1)]


def svg_chart(
    title: str, series: dict[str, list[tuple[float, float]]], x_label: str = "step"
) -> str:
    """An inline SVG line chart with axes, ticks, labels and a legend."""
    width, height = 540, 280
    left, right, top, bottom = 62, 130, 28, 40
    points = [p for values in series.values() for p in values]
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        pad = abs(y0) * 0.1 or 1.0
        y0, y1 = y0 - pad, y1 + pad
    plot_w, plot_h = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * plot_w

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" role="img" aria-label="{_e(title)}">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#fafafa" '
        'stroke="#999"/>',
        f'<text x="{left + plot_w / 2}" y="18" text-anchor="middle" class="t">{_e(title)}</text>',
    ]
    for t in _ticks(x0, x1, integer=True):
        parts.append(
            f'<line x1="{sx(t):.1f}" x2="{sx(t):.1f}" y1="{top + plot_h}" y2="{top + plot_h + 4}" '
            'stroke="#666"/>'
            f'<text x="{sx(t):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{t:g}</text>'
        )
    for t in _ticks(y0, y1):
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{sy(t):.1f}" y2="{sy(t):.1f}" '
            'stroke="#e4e4e4"/>'
            f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{t:.3g}</text>'
        )
    parts.append(
        f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle">{_e(x_label)}</text>'
        f'<text x="14" y="{top + plot_h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + plot_h / 2})">value</text>'
    )
    for i, (name, values) in enumerate(series.items()):
        colour = PALETTE[i % len(PALETTE)]
        coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in values)
        if len(values) == 1:
            x, y = values[0]
            parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{colour}"/>')
        else:
            parts.append(
                f'<polyline fill="none" stroke="{colour}" stroke-width="1.8" points="{coords}"/>'
            )
        ly = top + 14 + 18 * i
        parts.append(
            f'<line x1="{left + plot_w + 10}" x2="{left + plot_w + 30}" y1="{ly}" y2="{ly}" '
            f'stroke="{colour}" stroke-width="3"/>'
            f'<text x="{left + plot_w + 36}" y="{ly + 4}">{_e(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def metric_series(client: Any, run_id: str, key: str) -> list[tuple[float, float]]:
    """A metric's history by step; a step logged twice (a resumed run) keeps its last value."""
    by_step: dict[int, float] = {}
    for m in sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp)):
        if math.isfinite(m.value):
            by_step[int(m.step)] = float(m.value)
    return sorted(by_step.items())


def _same(value: float, other: Any) -> bool:
    return isinstance(other, int | float) and math.isclose(value, float(other), rel_tol=1e-9)


def section_curves(run: _Run) -> str:
    charts = []
    for line in run.lines:
        stage = _base(line["stage"])
        if stage not in CURVE_STAGES:
            continue
        try:
            child = run.metric_run(line)
            client = run.client()
            summary = run.summary_metrics(line)
            series = {}
            for key in CURVE_KEYS[stage]:
                values = metric_series(client, child, key)
                # A stage's summary metric of the same name (e.g. the mean train_loss) is
                # logged at step 0 of the same MLflow key; it is not a point of the curve.
                mean = summary.get(key)
                if len(values) > 1 and values[0][0] == 0 and _same(values[0][1], mean):
                    values = values[1:]
                if values:
                    series[key] = values
        except Exception as exc:  # one stage's missing history must not hide the others
            why = str(exc) if isinstance(exc, Unavailable) else f"{type(exc).__name__}: {exc}"
            charts.append(f'<div class="chart"><h3>{_e(line["stage"])}</h3>{_note(why)}</div>')
            continue
        if not series:
            why = f"MLflow run {child} has no {' / '.join(CURVE_KEYS[stage])} history"
            charts.append(f'<div class="chart"><h3>{_e(line["stage"])}</h3>{_note(why)}</div>')
            continue
        # The RL terms sit on another scale than the total loss: one chart each.
        groups = [{"train_loss": series["train_loss"]}] if "train_loss" in series else []
        terms = {k: v for k, v in series.items() if k != "train_loss"}
        if terms:
            groups.append(terms)
        for group in groups:
            title = f"{line['stage']}: {' + '.join(group)}"
            if line.get("status") == "failed":
                title += " (failed: history up to the failure)"
            charts.append(f'<div class="chart">{svg_chart(title, group)}</div>')
    if not charts:
        raise Unavailable("the run has no training stage")
    return f'<div class="charts">{"".join(charts)}</div>'


# -- token rewards


def reward_colour(reward: float) -> str:
    """Red for a penalty, green for a reward, white at 0; full colour at the reward caps."""
    from rlmec_core.rewards import MAX_PENALTY, MAX_REWARD

    if not math.isfinite(reward):
        return "rgba(128,128,128,0.5)"
    if reward < 0:
        return f"rgba(214,39,40,{min(1.0, -reward / MAX_PENALTY) * 0.85:.3f})"
    return f"rgba(44,160,44,{min(1.0, reward / MAX_REWARD) * 0.85:.3f})"


def _token_text(tokenizer: Any, token_id: int) -> str:
    text = tokenizer.decode([int(token_id)], skip_special_tokens=False)
    return text.replace("\n", "⏎\n")  # keep line breaks visible and in place


def _tokens_html(
    tokenizer: Any, ids: Sequence[int], classes: Callable[[int], tuple[str, str, str]]
) -> str:
    spans = []
    for i, token_id in enumerate(ids):
        text = _token_text(tokenizer, token_id)
        cls, style, title = classes(i)
        title = f"{title}\ntoken {json.dumps(text.replace('⏎', ''), ensure_ascii=False)}"
        spans.append(
            f'<span class="{cls}" style="{_e(style)}" title="{_e(title)}">{_e(text)}</span>'
        )
    return "".join(spans)


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


def section_tokens(run: _Run) -> str:
    from rlmec_core.editing import EDITED_WEIGHT, minimum_edit_weights
    from tasks.models import load_tokenizer

    rows = _read_rows(run.artifact("annotate") / "rl_data.parquet")
    wrong = [r for r in rows if not r.get("correct")]
    if not wrong:
        raise Unavailable("the annotate artifact holds no erroneous solution")
    tokenizer_from = run.artifact("bootstrap")
    try:
        tokenizer = load_tokenizer(tokenizer_from)
    except Exception as exc:
        raise Unavailable(
            f"cannot load the policy tokenizer from {tokenizer_from}: {exc}"
        ) from None
    questions: dict[str, dict[str, Any]] = {}
    try:
        distilled = run.artifact("distill") / "distilled.parquet"
        cols = ["sample_id", "question", "teacher_status"]
        questions = {r["sample_id"]: r for r in _read_rows(distilled, cols)}
    except Unavailable:
        pass  # the question is context, not essential
    shown = wrong[:MAX_TOKEN_SAMPLES]
    blocks = [
        f'<p class="small">{len(shown)} of {len(wrong)} erroneous solutions. Left: the sampled '
        "solution y, each token coloured by its reward (red: penalty, white: 0, green: reward; "
        "hover for the value). Right: the rewrite ŷ, its minimum edits highlighted.</p>"
        '<p class="legend"><span class="tok" style="background:rgba(214,39,40,0.85)">−0.1</span>'
        '<span class="tok" style="background:rgba(214,39,40,0.42)">−0.05</span>'
        '<span class="tok">0</span>'
        '<span class="tok" style="background:rgba(44,160,44,0.85)">+0.5</span>'
        '<span class="tok edit">edited token of ŷ</span></p>'
    ]
    for row in shown:
        response = list(row.get("response_ids") or [])
        rewards = list(row.get("rewards") or [])
        target = list(row.get("target_ids") or [])
        weights = list(row.get("target_weights") or [])
        if len(weights) != len(target):
            weights = minimum_edit_weights(response, target)

        def reward_span(i: int, rewards=rewards) -> tuple[str, str, str]:
            if i >= len(rewards):
                return "tok", "", "no reward"
            r = float(rewards[i])
            return "tok", f"background:{reward_colour(r)}", f"reward {r:+.4f}"

        def edit_span(i: int, weights=weights) -> tuple[str, str, str]:
            if weights[i] == EDITED_WEIGHT:
                return "tok edit", "", f"edited (imitation weight {weights[i]:g})"
            return "tok", "", f"kept (imitation weight {weights[i]:g})"

        prediction = str(row.get("prediction", ""))
        steps = []
        for who in ("teacher", "grm"):
            step = row.get(f"{who}_error_step")
            if step is not None:
                name = "teacher" if who == "teacher" else "GRM"
                steps.append(
                    f"<li>{name}: first error at step {_e(step)} (from 0): <q>{_e(_step_text(prediction, step))}</q>"
                    "</li>"
                )
        question = questions.get(row.get("sample_id"), {}).get("question")
        mean = sum(map(float, rewards)) / len(rewards) if rewards else float("nan")
        blocks.append(
            '<div class="sample">'
            f"<h3>sample {_e(row.get('sample_id', '?'))}</h3>"
            + (f'<p class="q"><b>question:</b> {_e(question)}</p>' if question else "")
            + f"<ul>{''.join(steps)}</ul>"
            + '<div class="pair"><div><h4>y (token rewards, mean '
            + _e(f"{mean:+.4f}")
            + ')</h4><div class="toks">'
            + _tokens_html(tokenizer, response, reward_span)
            + '</div></div><div><h4>ŷ (minimum edits)</h4><div class="toks">'
            + _tokens_html(tokenizer, target, edit_span)
            + "</div></div></div></div>"
        )
    return "".join(blocks)


# ---------------------------------------------------------------- the page

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;
background:#f3f4f6}
main{max-width:1240px;margin:0 auto;padding:16px 24px 48px}
h1{font-size:22px;margin:8px 0}h2{font-size:18px;margin:0 0 10px;border-bottom:2px solid #ddd;
padding-bottom:4px}h3{font-size:15px;margin:4px 0 6px}h4{font-size:13px;margin:2px 0 4px;
color:#555}
section{background:#fff;border-radius:8px;padding:14px 18px;margin:14px 0;
box-shadow:0 1px 3px rgba(0,0,0,.12)}
table{border-collapse:collapse;margin:4px 0}th,td{border:1px solid #ddd;padding:3px 8px;
text-align:left;vertical-align:top}th{background:#eef1f5}
code{font:12px ui-monospace,Menlo,Consolas,monospace;background:#f2f2f2;padding:0 3px}
.small{color:#666;font-size:12px}.na{color:#8a5300;background:#fff4e0;border-left:4px solid
#f0a020;padding:6px 10px;margin:4px 0}
.meta td:first-child{font-weight:600;background:#f7f7f7}
.st{padding:1px 6px;border-radius:3px;font-size:12px}.st-ran{background:#d7f0d7}
.st-cached{background:#dbe8fb}.st-failed{background:#f8d0d0}.st-not-reached{background:#eee;
color:#777}.st-skipped{background:#f2ecc8}
.cards{display:flex;flex-wrap:wrap;gap:12px}.card{border:1px solid #e3e3e3;border-radius:6px;
padding:8px 10px;min-width:250px}
.charts{display:flex;flex-wrap:wrap;gap:12px}.chart{border:1px solid #e3e3e3;border-radius:6px;
padding:6px}
svg text{font:11px system-ui,sans-serif;fill:#333}svg text.t{font-size:13px;font-weight:600}
.bar{display:inline-block;width:60px;height:9px;background:#eee;margin-right:6px}
.bar div{height:9px;background:#4c78a8}.up{color:#17803d;font-weight:600}
.down{color:#b42318;font-weight:600}
.sample{border-top:1px solid #e5e5e5;padding-top:8px;margin-top:10px}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:16px}
.toks{font:13px/1.9 ui-monospace,Menlo,Consolas,monospace;white-space:pre-wrap;
word-break:break-word;border:1px solid #e3e3e3;padding:6px;border-radius:4px}
.tok{border-right:1px solid rgba(0,0,0,.08);padding:1px 0}
.tok.edit{background:#ffe066;outline:1px solid #c99a00}
.legend .tok{display:inline-block;padding:0 6px;margin-right:6px;border:1px solid #ccc}
q{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
"""

_SECTIONS: tuple[tuple[str, str, Callable[[_Run], str]], ...] = (
    ("stages", "Stages: timings and cache", section_stages),
    ("metrics", "Key metrics per stage", section_metrics),
    ("evaluation", "Evaluation: initial vs trained policy", section_evaluation),
    ("ablation", "Ablation", section_ablation),
    ("curves", "Training curves", section_curves),
    ("tokens", "Token rewards of erroneous solutions", section_tokens),
)


def _render_section(run: _Run, section_id: str, title: str, fn: Callable[[_Run], str]) -> str:
    try:
        body = fn(run)
    except Unavailable as why:
        body = _note(str(why))
    except Exception as exc:  # one unreadable piece must not hide the others
        body = _note(f"error while reading it: {type(exc).__name__}: {exc}")
    return f'<section id="{section_id}"><h2>{_e(title)}</h2>{body}</section>'


def build_report(
    workspace: str | Path, run_id: str | None = None, *, tracking_uri: str | None = None
) -> str:
    """The HTML report of run ``run_id`` (an MLflow parent run id or unique prefix; default
    the latest run of the workspace). ``tracking_uri`` overrides where MLflow is read."""
    workspace = Path(workspace).resolve()
    record = select_run(workspace, run_id)
    run = _Run(
        workspace=workspace,
        record=record,
        tracking_uri=tracking_uri or _tracking_uri(workspace, record),
        lines=_stage_lines(workspace, record),
    )
    meta = [
        ("MLflow run", record.get("mlflow_run_id")),
        ("Prefect flow run", record.get("prefect_flow_run_id")),
        ("status", record.get("status")),
        ("config", record.get("config_path")),
        ("config hash", record.get("config_hash")),
        ("started", record.get("started_at")),
        ("finished", record.get("finished_at")),
        ("workspace", workspace),
    ]
    meta_rows = "".join(
        f"<tr><td>{_e(k)}</td><td>{_e('–' if v is None else v)}</td></tr>" for k, v in meta
    )
    sections = "".join(_render_section(run, *s) for s in _SECTIONS)
    nav = " · ".join(f'<a href="#{sid}">{_e(title)}</a>' for sid, title, _ in _SECTIONS)
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; '
        "style-src 'unsafe-inline'; img-src data:\">"
        f"<title>rlmec report {_e(run.run_id[:8])}</title><style>{_CSS}</style></head>"
        f"<body><main><h1>rlmec run report</h1>"
        f'<table class="meta">{meta_rows}</table><p class="small">{nav}</p>'
        f"{sections}</main></body></html>\n"
    )


def write_report(
    workspace: str | Path,
    run_id: str | None = None,
    out: str | Path | None = None,
    *,
    tracking_uri: str | None = None,
) -> Path:
    """Write the report atomically; default path ``<workspace>/reports/<mlflow run id>.html``."""
    workspace = Path(workspace)
    record = select_run(workspace, run_id)
    full_id = str(record["mlflow_run_id"])
    page = build_report(workspace, full_id, tracking_uri=tracking_uri)
    path = Path(out) if out is not None else workspace / "reports" / f"{full_id}.html"
    write_bytes_atomic(path, page.encode("utf-8"))
    return path
