"""What every artifact records about where it came from."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Self

MANIFEST_NAME = "manifest.json"


# What a production of an artifact records about the run that made it, besides its parents.
RUN_FIELDS = ("stage", "kind", "config_hash", "code_fingerprint")
RUN_FIELDS += ("prefect_flow_run_id", "prefect_task_run_id", "mlflow_run_id")


def run_fields(source: Any) -> dict[str, Any]:
    """``RUN_FIELDS`` of a provenance, a manifest or a production."""
    return {name: getattr(source, name) for name in RUN_FIELDS}


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


@dataclass(frozen=True, kw_only=True)
class _Produced:
    """What every stored record of a production names: the run that made it, its parents
    and when. Read back from JSON with a clear error."""

    what: ClassVar[str]
    stage: str
    kind: str
    parents: list[str]
    config_hash: str
    code_fingerprint: str
    prefect_flow_run_id: str | None
    prefect_task_run_id: str | None
    mlflow_run_id: str | None
    created_at: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def read(cls, path: Path) -> Self:
        try:
            return cls(**json.loads(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: unreadable {cls.what} ({exc})") from exc


@dataclass(frozen=True, kw_only=True)
class Manifest(_Produced):
    what: ClassVar[str] = "artifact manifest"
    id: str
    files: dict[str, str]  # relative path -> sha256 of the file
    extra: dict[str, Any]

    @classmethod
    def from_json(cls, payload: dict[str, Any]) -> Manifest:
        return cls(**payload)


@dataclass(frozen=True, kw_only=True)
class Production(_Produced):
    """One commit of an artifact: the run that produced it and from which parents.

    Identical content made by several runs is stored once, but each run that made it is
    recorded, so lineage names every run's own parents (the manifest keeps the first).
    """

    what: ClassVar[str] = "production record"
    artifact_id: str

    @classmethod
    def of(cls, artifact_id: str, provenance: Provenance, created_at: str) -> Production:
        return cls(
            artifact_id=artifact_id,
            parents=list(provenance.parents),
            created_at=created_at,
            **run_fields(provenance),
        )

    @classmethod
    def origin_of(cls, manifest: Manifest) -> Production:
        """The production a manifest describes: the artifact's first."""
        return cls(
            artifact_id=manifest.id,
            parents=list(manifest.parents),
            created_at=manifest.created_at,
            **run_fields(manifest),
        )
