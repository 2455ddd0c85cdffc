"""What every artifact records about where it came from."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

MANIFEST_NAME = "manifest.json"


@dataclass(frozen=True)
class Provenance:
    """Who made an artifact: the stage, its inputs, and the runs that executed it."""

    stage: str
    kind: str
    parents: tuple[str, ...] = ()
    config_hash: str = ""
    code_fingerprint: str = ""
    prefect_flow_run_id: str | None = None
    prefect_task_run_id: str | None = None
    mlflow_run_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    id: str
    kind: str
    stage: str
    parents: list[str]
    config_hash: str
    code_fingerprint: str
    prefect_flow_run_id: str | None
    prefect_task_run_id: str | None
    mlflow_run_id: str | None
    created_at: str
    files: dict[str, str]  # relative path -> sha256 of the file
    extra: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> Manifest:
        return cls(**payload)

    @classmethod
    def read(cls, path: Path) -> Manifest:
        try:
            return cls.from_json(json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: unreadable artifact manifest ({exc})") from exc
