"""Hard time limits for stages, including long synchronous training.

Prefect's task timeouts cannot interrupt a synchronous task running in a worker thread,
and a PyTorch training step cannot be interrupted from another thread at all. So a stage
with ``timeout_seconds`` runs in a child process that is killed at the deadline. Its
resumable state (checkpoints, shards) is on disk, so the next run continues from there.
"""

from __future__ import annotations

import ctypes
import importlib
import json
import multiprocessing
import signal
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

# Stage functions by stage name, so a child process can find the undecorated function.
STAGE_FUNCTIONS: dict[str, tuple[str, str]] = {}


class StageTimeoutError(TimeoutError):
    pass


def register(stage: str, fn: Callable[..., Any]) -> None:
    STAGE_FUNCTIONS[stage] = (fn.__module__, stage)


def _die_with_parent() -> None:
    # If the pipeline process is killed, its stage child must not train on as an orphan.
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def _child_main(module: str, stage: str, ctx: Any, io: Any, result_path: str) -> None:
    _die_with_parent()
    importlib.import_module(module)  # registers the stage's function
    from tasks.stage import raw_stage_function

    try:
        result = raw_stage_function(stage)(ctx, io)
        payload = {"ok": True, "result": asdict(result)}
    except BaseException as exc:  # report any failure to the parent, then exit non-zero
        payload = {
            "ok": False,
            "error": "".join(traceback.format_exception_only(type(exc), exc)).strip(),
            "traceback": traceback.format_exc(),
        }
    Path(result_path).write_text(json.dumps(payload, default=str), encoding="utf-8")


def run_with_time_limit(stage: str, ctx: Any, io: Any, seconds: float) -> dict[str, Any]:
    """Run the stage function in a child process; kill it after ``seconds``."""
    module, _ = STAGE_FUNCTIONS[stage]
    result_path = io.scratch / "child-result.json"
    result_path.unlink(missing_ok=True)
    process = multiprocessing.get_context("spawn").Process(
        target=_child_main, args=(module, stage, ctx, io, str(result_path)), daemon=True
    )
    process.start()
    process.join(seconds)
    if process.is_alive():
        process.kill()
        process.join()
        raise StageTimeoutError(
            f"stage {stage!r} exceeded its time limit of {seconds:g} s "
            f"({stage}.timeout_seconds) and was stopped"
        )
    if not result_path.is_file():
        raise RuntimeError(
            f"stage {stage!r} worker process died (exit code {process.exitcode}) "
            "without reporting a result"
        )
    payload = json.loads(result_path.read_text(encoding="utf-8"))
    result_path.unlink()
    if not payload["ok"]:
        raise RuntimeError(f"{payload['error']}\n--- worker traceback ---\n{payload['traceback']}")
    return payload["result"]
