"""Process settings that must be in place before Prefect is imported."""

from __future__ import annotations

import os
from pathlib import Path


def configure_environment(workspace: str | Path) -> None:
    """Point Prefect's result store at the workspace and keep results JSON, never pickle.

    Explicit user settings win: a user running against a Prefect server sets these
    themselves (or through their work pool's job variables).
    """
    workspace = Path(workspace).resolve()
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(workspace / "prefect-results"))
    os.environ.setdefault("PREFECT_RESULTS_DEFAULT_SERIALIZER", "json")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # The embedded server can take longer than Prefect's 20 s to start on a busy 2-core box.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
