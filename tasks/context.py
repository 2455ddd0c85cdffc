"""What every stage task receives: the config and where to record its work."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rlmec_core.config import PipelineConfig
from storage.store import ArtifactStore


@dataclass(frozen=True)
class RunContext:
    config: PipelineConfig
    workspace: str
    mlflow_tracking_uri: str
    mlflow_experiment_id: str
    mlflow_parent_run_id: str

    @property
    def store(self) -> ArtifactStore:
        return ArtifactStore(self.workspace)

    def scratch(self, stage: str, key: str) -> Path:
        """A durable per-stage working folder (checkpoints, shards) keyed by cache key.

        It survives a crash so the rerun resumes from it; it is never read as an artifact.
        """
        path = Path(self.workspace) / "scratch" / stage / key
        path.mkdir(parents=True, exist_ok=True)
        return path
