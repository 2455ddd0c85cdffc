"""Stage functions for the time-limit tests (imported by the child process too)."""

import time

import torch

from tasks.stage import StageResult, stage_task

SECONDS_FILE = "busy-seconds.txt"  # in the stage's scratch folder: how long the loop runs


@stage_task("busy_training")
def busy_training(ctx, io):
    """A synchronous CPU-bound loop, like a training step that never yields."""
    seconds = float((io.scratch / SECONDS_FILE).read_text())
    end = time.monotonic() + seconds
    x = torch.randn(256, 256)
    while time.monotonic() < end:
        x = torch.tanh(x @ x)
    (io.out / "done.txt").write_text("finished")
    return StageResult(kind="test", metrics={"seconds": seconds})
