"""What the report reads from the workspace: the run record, its stage lines and artifacts.

A piece that cannot be read raises :class:`Unavailable` with the reason, which the page
shows as a "not available: <why>" note instead of failing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from report.tracking import MlflowReader
from report.unavailable import Unavailable
from rlmec_core.config import STAGES
from storage.manifest import Manifest
from storage.run_records import load_run_records
from storage.store import ArtifactNotFoundError, ArtifactStore


def stage_of(label: str) -> str:
    """The stage of a stage line: ablation lines are labelled e.g. ``evaluate[rft,seed=0]``."""
    return label.split("[", 1)[0]


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


def stage_lines(record: dict[str, Any]) -> list[dict[str, Any]]:
    """The record's stage lines in pipeline order, labelled ablation lines in place of the
    plain "not reached" line the loader adds for their stage."""
    labelled = {stage_of(s["stage"]) for s in record["stages"] if "[" in s["stage"]}
    lines = [
        dict(s)
        for s in record["stages"]
        if not (s["stage"] in labelled and s.get("status") == "not reached")
    ]
    order = {s: i for i, s in enumerate(STAGES)}
    return sorted(lines, key=lambda s: order.get(stage_of(s["stage"]), len(STAGES)))


def tracking_uri(workspace: Path, record: dict[str, Any]) -> str:
    """The config's tracking URI when its file is still there, else the workspace default."""
    from tasks.tracking import default_tracking_uri

    config_path = record.get("config_path")
    if config_path and Path(config_path).is_file():
        try:
            from rlmec_core.config import load_config

            uri = load_config(config_path).tracking.mlflow_tracking_uri
            if uri:
                return uri
        except Exception:  # an edited or broken config must not break the report
            pass
    return default_tracking_uri(workspace)


@dataclass
class ReportRun:
    """One pipeline run as the report sees it."""

    workspace: Path
    record: dict[str, Any]
    lines: list[dict[str, Any]]
    mlflow: MlflowReader

    @classmethod
    def open(
        cls, workspace: str | Path, run_id: str | None = None, uri: str | None = None
    ) -> ReportRun:
        workspace = Path(workspace).resolve()
        record = select_run(workspace, run_id)
        uri = uri or tracking_uri(workspace, record)
        return cls(
            workspace, record, stage_lines(record), MlflowReader(uri, record["mlflow_run_id"])
        )

    @property
    def run_id(self) -> str:
        return str(self.record.get("mlflow_run_id"))

    @property
    def store(self) -> ArtifactStore:
        return ArtifactStore(self.workspace)

    def line(self, stage: str) -> dict[str, Any]:
        """The stage's line: the plain one, else the first labelled one with an artifact."""
        same = [s for s in self.lines if stage_of(s["stage"]) == stage]
        exact = [s for s in same if s["stage"] == stage]
        with_artifact = [s for s in same if s.get("artifact")]
        return (exact or with_artifact or same or [{"stage": stage, "status": "not reached"}])[0]

    def artifact(self, stage: str) -> Path:
        return self.artifact_of(self.line(stage))

    def artifact_of(self, line: dict[str, Any]) -> Path:
        artifact = line.get("artifact")
        if not artifact:
            raise Unavailable(self.why_missing(line))
        return self.artifact_path(artifact)

    def artifact_path(self, artifact_id: str) -> Path:
        try:
            return self.store.path(artifact_id)
        except ArtifactNotFoundError as exc:
            raise Unavailable(str(exc)) from None

    def manifest_of(self, line: dict[str, Any]) -> Manifest:
        return self.store.manifest(self.artifact_of(line).name)

    def manifest_metrics(self, line: dict[str, Any]) -> dict[str, Any]:
        """The metrics recorded in the stage's manifest ({} when it has no artifact)."""
        if not line.get("artifact"):
            return {}
        return dict(self.manifest_of(line).extra.get("metrics") or {})

    def why_missing(self, line: dict[str, Any]) -> str:
        stage, status = line["stage"], line.get("status", "?")
        if status == "failed":
            error = self.mlflow.stage_error(stage)
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
