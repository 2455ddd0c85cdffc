"""Stage functions for the time-limit tests (imported by the spawned child too)."""

import time

import torch

from tasks.stage import StageResult, stage_task


@stage_task("busy_training")
def busy_training(seconds, io):
    """A synchronous CPU-bound loop, like a training step that never yields."""
    end = time.monotonic() + seconds
    x = torch.randn(256, 256)
    while time.monotonic() < end:
        x = torch.tanh(x @ x)
    (io.out / "done.txt").write_text("finished")
    return StageResult(kind="test", metrics={"seconds": float(seconds)})
