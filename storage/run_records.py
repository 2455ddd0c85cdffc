"""The per-run records the pipeline writes into ``<workspace>/runs/``: reading them, and
closing those of runs whose process died."""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlmec_core.config import STAGES
from storage.atomic import write_json_atomic

logger = logging.getLogger(__name__)

INTERRUPTED = "INTERRUPTED"


def _read(path: Path) -> dict[str, Any]:
    """One record, checked for the fields every reader uses; ValueError if unusable."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ValueError(f"unreadable run record ({str(exc)[:200]})") from None
    if not isinstance(record, dict):
        raise ValueError("not a run record (not a JSON object)")
    for name, kind in (("status", str), ("mlflow_run_id", str), ("stages", list)):
        if not isinstance(record.get(name), kind):
            raise ValueError(f"not a run record (no {kind.__name__} {name!r})")
    if not all(isinstance(s, dict) and isinstance(s.get("stage"), str) for s in record["stages"]):
        raise ValueError("not a run record (a stage entry without a name)")
    return record


def _records(workspace: str | Path) -> list[Path]:
    folder = Path(workspace) / "runs"
    return sorted(folder.glob("*.json")) if folder.is_dir() else []


def load_run_records(
    workspace: str | Path, warn: Callable[[str], None] | None = None
) -> list[dict[str, Any]]:
    """All pipeline runs of a workspace, oldest first, with every stage's status.

    A run whose process is gone while it was still running is reported as INTERRUPTED,
    the stage it was in as "interrupted"; stages it never got to are "not reached". A
    record that cannot be read is skipped, and ``warn`` (default: a logged warning) is
    told which.
    """
    records = []
    for path in _records(workspace):
        try:
            record = _read(path)
        except ValueError as exc:
            (warn or logger.warning)(f"skipping {path}: {exc}")
            continue
        if record["status"] == "RUNNING" and not _alive(record):
            record["status"] = INTERRUPTED
        seen = {s["stage"]: s for s in record["stages"]}
        in_flight = record.get("in_flight")
        if record["status"] == INTERRUPTED and isinstance(in_flight, str):
            seen.setdefault(in_flight, {"stage": in_flight, "status": "interrupted"})
        # Every pipeline stage in order, then any labelled extra runs (ablation variants).
        extra = [s for name, s in seen.items() if name not in STAGES]
        record["stages"] = [
            *(seen.get(s, {"stage": s, "status": "not reached"}) for s in STAGES),
            *extra,
        ]
        records.append(record)
    return records


def close_interrupted_runs(workspace: str | Path, client: Any) -> None:
    """Close the MLflow runs a run could not close itself, so none shows RUNNING for ever:
    a run whose process died while running becomes INTERRUPTED, its MLflow parent and
    in-flight child runs KILLED; a run that ended when MLflow could not be written (a full
    disk) gets its parent run's status set now."""
    for path in _records(workspace):
        try:
            record = _read(path)
        except ValueError:
            continue
        if record["status"] == "RUNNING" and not _alive(record):
            status = INTERRUPTED
        elif record["status"] != "RUNNING" and record.get("mlflow_closed") is False:
            status = record["status"]
        else:
            continue
        _close_mlflow_runs(client, record["mlflow_run_id"], _MLFLOW_STATUS.get(status, status))
        write_json_atomic(path, {**record, "status": status, "mlflow_closed": True})


_MLFLOW_STATUS = {INTERRUPTED: "KILLED"}


def _close_mlflow_runs(client: Any, parent_id: str, status: str) -> None:
    try:
        parent = client.get_run(parent_id)
    except Exception:  # tracked elsewhere (the config's tracking URI changed since)
        return
    children = client.search_runs(
        [parent.info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}' and attributes.status = 'RUNNING'",
    )
    for run in children:  # the stage it was in: cut off, or failed without a record
        client.set_terminated(run.info.run_id, "FAILED" if status == "FAILED" else "KILLED")
    if parent.info.status == "RUNNING":
        client.set_terminated(parent_id, status)


def _alive(record: dict[str, Any]) -> bool:
    if record.get("host") != socket.gethostname():
        return True  # cannot tell from here; trust the record
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, KeyError, TypeError, OverflowError):
        return True
    return True
