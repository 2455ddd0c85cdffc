"""Hard time limits for stages, including long synchronous training.

Prefect's task timeouts cannot interrupt a synchronous task running in a worker thread,
and a PyTorch training step cannot be interrupted from another thread at all. So a stage
with ``timeout_seconds`` runs in a child process (``tasks.stage_process``) that is killed
at the deadline. Its resumable state (checkpoints, shards) is on disk, so the next run
continues from there. Its log records become the task run's logs like any other stage's.
"""

from __future__ import annotations

from typing import Any

from rlmec_core.errors import RUN_AGAIN, RlmecError
from tasks.stage_process import DeadlinePassed, run_stage_process


class StageTimeoutError(RlmecError, TimeoutError):
    """A stage ran past its ``timeout_seconds`` and was stopped."""

    hint = f"raise {{stage}}.timeout_seconds, or {RUN_AGAIN}"


def run_with_time_limit(stage: str, ctx: Any, io: Any, seconds: float) -> dict[str, Any]:
    """Run the stage function in a child process; kill it after ``seconds``."""
    try:
        return run_stage_process(stage, ctx, io, seconds=seconds)
    except DeadlinePassed as passed:
        raise StageTimeoutError(
            f"stage {stage!r} exceeded its time limit of {seconds:g} s "
            f"({stage}.timeout_seconds) and was stopped"
        ) from passed
