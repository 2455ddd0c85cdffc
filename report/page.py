"""The report page: collect each section's data, then render the Jinja2 templates.

Templates are autoescaped, so text from data (questions, predictions, eval-set and
variant names, errors) can only ever appear as text; the page's Content-Security-Policy
forbids scripts as a second line of defence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined

from report import curves, sections, tokens
from report.data import ReportRun, select_run
from report.unavailable import Unavailable
from storage.atomic import write_bytes_atomic

Builder = Callable[[ReportRun], dict[str, Any]]
SECTIONS: tuple[tuple[str, str, Builder], ...] = (
    ("stages", "Stages: timings and cache", sections.stages),
    ("metrics", "Key metrics per stage", sections.metrics),
    ("evaluation", "Evaluation: initial vs trained policy", sections.evaluation),
    ("ablation", "Ablation", sections.ablation),
    ("curves", "Training curves", curves.curves),
    ("tokens", "Token rewards of erroneous solutions", tokens.token_rewards),
)
SECTION_IDS = tuple(section_id for section_id, _, _ in SECTIONS)


@dataclass(frozen=True)
class Section:
    id: str
    title: str
    data: dict[str, Any] | None
    note: str | None  # why the section cannot be shown, instead of its data


@cache
def environment() -> Environment:
    return Environment(
        loader=PackageLoader("report"),
        autoescape=True,
        undefined=StrictUndefined,  # a misspelt field fails loudly instead of showing ""
        trim_blocks=True,
        lstrip_blocks=True,
    )


def _section(run: ReportRun, section_id: str, title: str, build: Builder) -> Section:
    try:
        return Section(section_id, title, build(run), None)
    except Unavailable as why:
        return Section(section_id, title, None, str(why))
    except Exception as exc:  # one unreadable piece must not hide the others
        return Section(
            section_id, title, None, f"error while reading it: {type(exc).__name__}: {exc}"
        )


def build_report(
    workspace: str | Path, run_id: str | None = None, *, tracking_uri: str | None = None
) -> str:
    """The HTML report of run ``run_id`` (an MLflow parent run id or unique prefix; default
    the latest run of the workspace). ``tracking_uri`` overrides where MLflow is read."""
    run = ReportRun.open(workspace, run_id, tracking_uri)
    record = run.record
    meta = (
        ("MLflow run", record.get("mlflow_run_id")),
        ("Prefect flow run", record.get("prefect_flow_run_id")),
        ("status", record.get("status")),
        ("config", record.get("config_path")),
        ("config hash", record.get("config_hash")),
        ("started", record.get("started_at")),
        ("finished", record.get("finished_at")),
        ("workspace", run.workspace),
    )
    return (
        environment()
        .get_template("page.html.j2")
        .render(
            run_id=run.run_id,
            meta=[(key, "–" if value is None else value) for key, value in meta],
            sections=[_section(run, *section) for section in SECTIONS],
        )
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
    full_id = str(select_run(workspace, run_id)["mlflow_run_id"])
    page = build_report(workspace, full_id, tracking_uri=tracking_uri)
    path = Path(out) if out is not None else workspace / "reports" / f"{full_id}.html"
    write_bytes_atomic(path, page.encode("utf-8"))
    return path
