"""Process settings that must be in place before Prefect is imported, and the log level of
the project's loggers."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

# The project's loggers (the library's and the stage adapters'): Prefect sends their records
# to the API as logs of the run they are emitted in, the task run of a stage.
PROJECT_LOGGERS = ("rlmec_core", "tasks")


def configure_environment(workspace: str | Path) -> None:
    """Point Prefect's result store at the workspace and keep results JSON, never pickle.

    Explicit user settings win: a user running against a Prefect server sets these
    themselves (or through their work pool's job variables).
    """
    workspace = Path(workspace).resolve()
    os.environ.setdefault("PREFECT_RESULTS_LOCAL_STORAGE_PATH", str(workspace / "prefect-results"))
    os.environ.setdefault("PREFECT_RESULTS_DEFAULT_SERIALIZER", "json")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("PREFECT_LOGGING_EXTRA_LOGGERS", ",".join(PROJECT_LOGGERS))
    # Outside a run (library code called directly) their lines go to the console only.
    os.environ.setdefault("PREFECT_LOGGING_TO_API_WHEN_MISSING_FLOW", "ignore")
    # The embedded server can take longer than Prefect's 20 s to start on a busy 2-core box.
    # Prefect 3 runs no flow without an API server, so a fully cached `rlmec run` of
    # configs/micro.yaml waits ~4.5 s for one (of ~17 s, 2 busy cores). flows/prefect_server.py
    # starts it before the pipeline's imports (median 18.6 s -> 17.4 s); against a running
    # `prefect server start` (PREFECT_API_URL) it takes 12.9 s. The rest: ~7 s importing
    # torch, transformers, MLflow and Prefect, ~4 s the flow, ~2.5 s exiting. See README.md.
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")


def plain_progress_off_terminal() -> None:
    """Off a terminal (a log file, CI, a worker) no library draws a progress bar: their
    carriage-return repaints fill a log with one huge line each. The project's own loops
    report plain lines instead (``rlmec_core.progress``). Set before datasets, transformers
    and huggingface_hub are imported: they read these once, at import."""
    if sys.stderr.isatty():
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # transformers' bars too
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # any other tqdm (e.g. GGUF dequantising)


def configure_project_logging(level: str | int) -> None:
    """Give the project's loggers Prefect's level.

    ``PREFECT_LOGGING_EXTRA_LOGGERS`` attaches Prefect's API handler to them but leaves their
    level unset, so the root's WARNING would drop their INFO lines (progress, resumes).
    """
    for name in PROJECT_LOGGERS:
        logging.getLogger(name).setLevel(level)
