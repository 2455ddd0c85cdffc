"""Reading the per-run records the pipeline writes into ``<workspace>/runs/``."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path
from typing import Any

from rlmec_core.config import STAGES


def load_run_records(workspace: str | Path) -> list[dict[str, Any]]:
    """All pipeline runs of a workspace, oldest first, with every stage's status.

    A run whose process is gone while it was still running is reported as INTERRUPTED;
    stages it never got to are "not reached".
    """
    folder = Path(workspace) / "runs"
    records = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"{path}: unreadable run record ({exc})") from exc
        if record["status"] == "RUNNING" and not _alive(record):
            record["status"] = "INTERRUPTED"
        seen = {s["stage"]: s for s in record["stages"]}
        # Every pipeline stage in order, then any labelled extra runs (ablation variants).
        extra = [s for s in record["stages"] if s["stage"] not in STAGES]
        record["stages"] = [
            *(seen.get(s, {"stage": s, "status": "not reached"}) for s in STAGES),
            *extra,
        ]
        records.append(record)
    return records


def _alive(record: dict[str, Any]) -> bool:
    if record.get("host") != socket.gethostname():
        return True  # cannot tell from here; trust the record
    try:
        os.kill(int(record["pid"]), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, ValueError, KeyError):
        return True
    return True
