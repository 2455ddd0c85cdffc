"""Stage functions for the child-process tests (imported by the child process too)."""

import logging
import os
import sys
import time

import torch

from rlmec_core.config import PipelineConfig
from rlmec_core.errors import InputError
from tasks.context import RunContext
from tasks.stage import StageIO, StageResult, stage_task

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


@stage_task("noisy")
def noisy(ctx, io):
    """Output that is no log record: bytes that are not UTF-8, a plain line, then a record."""
    sys.stdout.buffer.write(b"raw \xff\xfe bytes\n")
    sys.stdout.flush()
    print("a plain line", flush=True)
    logging.getLogger("rlmec_core.noisy").warning("and a record")
    return StageResult(kind="test")


@stage_task("vanishing")
def vanishing(ctx, io):
    """Dies without a result, as a process killed by the system would."""
    print("last words", flush=True)
    os._exit(3)


@stage_task("leaving_a_helper")
def leaving_a_helper(ctx, io):
    """Returns while a process it started still holds its output open (a server, say)."""
    import subprocess

    helper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    (io.scratch / "helper.pid").write_text(str(helper.pid))
    return StageResult(kind="test")


@stage_task("refusing")
def refusing(ctx, io):
    raise InputError(f"{io.scratch}/x.jsonl: line 3: no 'question' field")


def stage_in(tmp_path, busy_seconds: float = 0.0) -> tuple[RunContext, StageIO]:
    """A run context and stage folders in ``tmp_path`` (``busy_training`` runs so long)."""
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    out.mkdir()
    scratch.mkdir()
    (scratch / SECONDS_FILE).write_text(str(busy_seconds))
    ctx = RunContext(PipelineConfig(), str(tmp_path / "ws"), "", "", "")
    return ctx, StageIO(inputs={}, out=out, scratch=scratch, parent_ids={})
