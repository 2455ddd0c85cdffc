"""Hard time limits for stages, including long synchronous training.

Prefect's task timeouts cannot interrupt a synchronous task running in a worker thread,
and a PyTorch training step cannot be interrupted from another thread at all. So a stage
with ``timeout_seconds`` runs in a child process that is killed at the deadline. Its
resumable state (checkpoints, shards) is on disk, so the next run continues from there.

The child's log records are sent back and handled in the parent's task thread, where
Prefect's run context is: they become the task run's logs like those of any other stage.
"""

from __future__ import annotations

import base64
import importlib
import json
import logging
import logging.handlers
import multiprocessing
import os
import pickle
import queue
import signal
import time
import traceback
import uuid
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rlmec_core.errors import RUN_AGAIN, RlmecError
from rlmec_core.processes import die_with_parent, handle_in_parent
from tasks.peak_memory import peak_rss_mib
from tasks.stage_registry import raw_stage_function, stage_module

LOG_POLL_SECONDS = 0.2  # how often the parent relays the child's log records while waiting


class StageTimeoutError(RlmecError, TimeoutError):
    """A stage ran past its ``timeout_seconds`` and was stopped."""

    hint = f"raise {{stage}}.timeout_seconds, or {RUN_AGAIN}"


class WorkerTraceback(Exception):
    """The child's traceback, as the cause of the error re-raised in the parent."""


def _pickled(exc: BaseException) -> str | None:
    try:
        blob = pickle.dumps(exc)
        pickle.loads(blob)  # an exception that cannot be rebuilt is sent as text only
    except Exception:
        return None
    return base64.b64encode(blob).decode("ascii")


def _send_logs_to_parent(log_queue: Any, levels: dict[str, int]) -> None:
    """Every record goes to the parent, and only there: no console or API handler here."""
    from prefect.logging.handlers import APILogHandler

    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    for logger in _loggers():
        # Prefect's API handler has no run context in this process: the parent sends them.
        logger.handlers = [h for h in logger.handlers if not isinstance(h, APILogHandler)]
    logging.getLogger().handlers = [logging.handlers.QueueHandler(log_queue)]


def _loggers() -> list[logging.Logger]:
    known = logging.root.manager.loggerDict.values()
    return [logging.getLogger(), *(lg for lg in known if isinstance(lg, logging.Logger))]


def _child_main(
    module: str, stage: str, ctx: Any, io: Any, result_path: str, log_queue: Any, levels: dict
) -> None:
    die_with_parent(signal.SIGKILL)  # as at its deadline: its resumable state is on disk
    importlib.import_module(module)  # registers the stage's function (and imports Prefect)
    _send_logs_to_parent(log_queue, levels)
    try:
        result = raw_stage_function(stage)(ctx, io)
        result.metrics["peak_rss_mib"] = peak_rss_mib()  # this fresh process's own peak
        payload = {"ok": True, "result": asdict(result)}
    except BaseException as exc:  # report any failure to the parent, then exit non-zero
        payload = {
            "ok": False,
            "error": "".join(traceback.format_exception_only(type(exc), exc)).strip(),
            "traceback": traceback.format_exc(),
            "exception": _pickled(exc),  # the parent raises the same error
        }
    Path(result_path).write_text(json.dumps(payload, default=str), encoding="utf-8")


def _relay_logs(log_queue: Any, wait: float) -> None:
    """Handle the child's queued records here, in the thread that holds the run context."""
    try:
        record = log_queue.get(timeout=wait)
        while True:
            handle_in_parent(record)  # the child had all of this process's levels
            record = log_queue.get_nowait()
    except (queue.Empty, EOFError, OSError):
        pass


def _logger_levels() -> dict[str, int]:
    """The levels set in this process, so the child logs exactly what the parent would."""
    return {logger.name: logger.level for logger in _loggers() if logger.level}


def run_with_time_limit(stage: str, ctx: Any, io: Any, seconds: float) -> dict[str, Any]:
    """Run the stage function in a child process; kill it after ``seconds``."""
    # Named per run: two processes on one workspace never share the file.
    result_path = io.scratch / f"child-result-{os.getpid()}-{uuid.uuid4().hex[:8]}.json"
    result_path.unlink(missing_ok=True)
    spawn = multiprocessing.get_context("spawn")
    # A queue, not launch's output lines: a spawned child has no stdout pipe of ours.
    log_queue = spawn.Queue()
    process = spawn.Process(
        target=_child_main,
        args=(stage_module(stage), stage, ctx, io, str(result_path), log_queue, _logger_levels()),
        daemon=True,
    )
    process.start()
    deadline = time.monotonic() + seconds
    while process.is_alive() and time.monotonic() < deadline:
        _relay_logs(log_queue, LOG_POLL_SECONDS)
    if process.is_alive():
        process.kill()  # a record it was writing may be cut off: its queue is not read again
        process.join()
        raise StageTimeoutError(
            f"stage {stage!r} exceeded its time limit of {seconds:g} s "
            f"({stage}.timeout_seconds) and was stopped"
        )
    process.join()
    _relay_logs(log_queue, 0)  # what it logged last, flushed before it exited
    if not result_path.is_file():
        raise RuntimeError(
            f"stage {stage!r} worker process died (exit code {process.exitcode}) "
            "without reporting a result"
        )
    payload = json.loads(result_path.read_text(encoding="utf-8"))
    result_path.unlink()
    if not payload["ok"]:
        blob = payload.get("exception")
        error = pickle.loads(base64.b64decode(blob)) if blob else RuntimeError(payload["error"])
        raise error from WorkerTraceback(payload["traceback"])
    return payload["result"]
