"""Runs the stages of one pipeline run in order and records what each one did."""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient
from prefect.runtime import flow_run
from prefect.settings import get_current_settings

from flows.environment import configure_project_logging
from rlmec_core.config import STAGES, PipelineConfig
from rlmec_core.errors import RlmecError
from storage import catalog
from storage.atomic import write_json_atomic
from storage.run_records import INTERRUPTED, close_interrupted_runs
from tasks import tracking
from tasks.context import RunContext
from tasks.locks import LOCKS_FOLDER, file_lock

RAN, CACHED, FAILED, NOT_REACHED, SKIPPED = ("ran", "cached", "failed", "not reached", "skipped")


class TrackingError(RlmecError, RuntimeError):
    """The MLflow tracking store cannot be opened or written."""

    hint = "check tracking.mlflow_tracking_uri and tracking.experiment"


@dataclass
class StageReport:
    stage: str
    status: str
    artifact: str | None = None
    seconds: float = 0.0
    peak_rss_mib: float | None = None  # the stage's own peak memory, when it ran here


class StageRunner:
    def __init__(
        self,
        ctx: RunContext,
        until: str | None,
        force: str | None,
        on_record: Callable[[], None] = lambda: None,
    ):
        for name, value in (("--until", until), ("--force", force)):
            if value is not None and value not in STAGES:
                raise ValueError(f"{name} {value!r}: stages are {', '.join(STAGES)}")
        self.ctx = ctx
        self.until = until
        self.force_from = STAGES.index(force) if force else None
        self.reports: list[StageReport] = []
        self.in_flight: str | None = None  # the stage running now, for the run record
        self._stopped = False
        self._on_record = on_record

    def _record(self, report: StageReport) -> None:
        self.reports.append(report)
        self.in_flight = None
        self._on_record()
        client = MlflowClient(self.ctx.mlflow_tracking_uri)
        tracking.set_tags(
            client,
            self.ctx.mlflow_parent_run_id,
            {
                f"stage.{report.stage}.status": report.status,
                f"stage.{report.stage}.artifact": report.artifact,
            },
        )
        if report.status in (RAN, CACHED):
            tracking.log_metrics(
                client, self.ctx.mlflow_parent_run_id, {f"{report.stage}.seconds": report.seconds}
            )

    def run(
        self,
        stage_task: Any,
        parents: dict[str, Any],
        extra_key: str = "",
        *,
        ctx: RunContext | None = None,
        label: str | None = None,
    ) -> dict | None:
        """Run (or take from cache) one stage; None when it is not reached.

        ``ctx`` overrides the run's context (an ablation variant's config); ``label``
        names the report line when one stage runs several times.
        """
        stage = stage_task.name
        label = label or stage
        ctx = ctx or self.ctx
        if self._stopped or any(ref is None for ref in parents.values()):
            self._record(StageReport(label, NOT_REACHED))
            return None
        section = ctx.config.stage(stage)
        forced = self.force_from is not None and STAGES.index(stage) >= self.force_from
        started = time.perf_counter()
        self.in_flight = label
        self._on_record()
        try:
            ref, cached = self._submit(ctx, stage_task, section, parents, extra_key, forced)
            if cached and not ctx.store.exists(ref["id"]):
                # The cache remembers an artifact that was deleted from the store: recompute.
                ref, cached = self._submit(ctx, stage_task, section, parents, extra_key, True)
        except BaseException as exc:
            status = INTERRUPTED.lower() if isinstance(exc, KeyboardInterrupt) else FAILED
            # On a full disk this may fail too: the stage's own error is the one to report.
            with contextlib.suppress(Exception):
                self._record(StageReport(label, status, None, time.perf_counter() - started))
            raise
        status = (
            SKIPPED if ref["kind"] == catalog.EXTERNAL_MODEL_KIND else CACHED if cached else RAN
        )
        seconds = time.perf_counter() - started
        peak = None
        if status == RAN:
            peak = ctx.store.manifest(ref["id"]).extra.get("metrics", {}).get("peak_rss_mib")
        self._record(StageReport(label, status, ref["id"], seconds, peak))
        if stage == self.until:
            self._stopped = True
        return ref

    def _submit(self, ctx, stage_task, section, parents, extra_key, refresh: bool):
        configured = stage_task.with_options(
            retries=section.retries,
            retry_delay_seconds=section.retry_delay_seconds,
            refresh_cache=True if refresh else None,
        )
        state = configured(ctx, parents, extra_key, return_state=True)
        return state.result(), state.name == "Cached"  # result() raises a failed stage's error


@contextmanager
def pipeline_run(
    config: PipelineConfig,
    workspace: str | Path,
    config_path: str,
    until: str | None = None,
    force: str | None = None,
) -> Iterator[StageRunner]:
    """Open the MLflow parent run, run the stages, and close it with the right status."""
    workspace = Path(workspace).resolve()
    workspace.mkdir(parents=True, exist_ok=True)
    configure_project_logging(get_current_settings().logging.level)
    uri = config.tracking.mlflow_tracking_uri or tracking.default_tracking_uri(workspace)
    client, experiment_id = _open_tracking(uri, config, workspace)
    prefect_run_id = str(flow_run.id) if flow_run.id else None
    parent_id = _open_parent_run(
        client, experiment_id, config, config_path, workspace, prefect_run_id
    )
    ctx = RunContext(
        config=config,
        workspace=str(workspace),
        mlflow_tracking_uri=uri,
        mlflow_experiment_id=experiment_id,
        mlflow_parent_run_id=parent_id,
    )
    ctx.store.sweep_staging()
    record = _run_record(parent_id, prefect_run_id, config, config_path)
    path = workspace / "runs" / f"{record['started_at'].replace(':', '')}-{parent_id[:8]}.json"

    def save() -> None:
        # Written before and after every stage, so a killed run still shows how far it got.
        record["stages"] = [asdict(r) for r in runner.reports]
        record["in_flight"] = runner.in_flight
        write_json_atomic(path, record)

    runner = StageRunner(ctx, until, force, on_record=save)
    save()
    status = "FAILED"
    try:
        yield runner
        status = "FINISHED"
    except KeyboardInterrupt:
        status = INTERRUPTED
        raise
    finally:
        _close_run(client, parent_id, status, record, save, path)


def _open_tracking(uri: str, config: PipelineConfig, workspace: Path) -> tuple[MlflowClient, str]:
    """A client of the tracking store at ``uri`` and the run's experiment id, after closing
    the runs that an earlier, killed process left open."""
    try:
        # One process at a time creates the store's tables (the client opens the store)
        # and the experiment.
        with file_lock(workspace / LOCKS_FOLDER / "mlflow.lock"):
            client = MlflowClient(tracking_uri=uri)
            experiment_id = tracking.ensure_experiment(
                client, config.tracking.experiment, workspace
            )
            close_interrupted_runs(workspace, client)
    except OSError:
        raise  # the workspace itself (read-only, full): said as such by the CLI
    except Exception as exc:
        where = re.sub(r"://[^/@]*@", "://***@", uri)  # never print a password
        raise TrackingError(f"MLflow tracking store {where} cannot be used: {exc}") from exc
    return client, experiment_id


def _open_parent_run(
    client: MlflowClient,
    experiment_id: str,
    config: PipelineConfig,
    config_path: str,
    workspace: Path,
    prefect_run_id: str | None,
) -> str:
    """Create the MLflow parent run with the run's params and config; its id."""
    parent = client.create_run(
        experiment_id,
        run_name=f"{config.run.name}-{flow_run.name or 'local'}",
        tags={
            "rlmec.config_path": config_path,
            "rlmec.config_hash": config.config_hash(),
            "rlmec.workspace": str(workspace),
            "prefect.flow_run_id": prefect_run_id,
        },
    )
    parent_id = parent.info.run_id
    tracking.log_params(client, parent_id, {"run": config.run.model_dump(mode="json")})
    client.log_dict(parent_id, config.model_dump(mode="json"), "config.json")
    return parent_id


def _run_record(
    parent_id: str, prefect_run_id: str | None, config: PipelineConfig, config_path: str
) -> dict[str, Any]:
    """The run record of a run starting now (``runs/<started_at>-<run id>.json``)."""
    return {
        "mlflow_run_id": parent_id,
        "prefect_flow_run_id": prefect_run_id,
        "config_path": config_path,
        "config_hash": config.config_hash(),
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "status": "RUNNING",
        "started_at": _now(),
        "finished_at": None,
        "stages": [],
    }


def _close_run(
    client: MlflowClient,
    parent_id: str,
    status: str,
    record: dict[str, Any],
    save: Callable[[], None],
    path: Path,
) -> None:
    """Close the MLflow parent run with ``status`` and save the finished run record, each
    as far as a full disk allows."""
    record.update(status=status, finished_at=_now(), mlflow_closed=True)
    try:
        client.set_terminated(parent_id, "KILLED" if status == INTERRUPTED else status)
    except Exception:  # e.g. a full disk; the next run closes it (close_interrupted_runs)
        record["mlflow_closed"] = False
    try:
        save()
    except OSError:
        _save_in_place(path, record)  # a full disk has no room for a new file


def _save_in_place(path: Path, record: dict[str, Any]) -> None:
    """Overwrite the run record in its own blocks: not atomic, but it needs no new space."""
    try:
        with path.open("r+b") as handle:
            handle.write(json.dumps(record, sort_keys=True, default=str).encode("utf-8"))
            handle.truncate()
    except OSError:
        pass


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")
