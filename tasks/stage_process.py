"""A stage's function run in a process of its own, its log records and result brought back.

Two kinds of stage cannot run in the task's process: one with ``timeout_seconds``
(``tasks.time_limit``: killed at its deadline) and one under ``accelerate launch``
(``tasks.launch``: several worker processes). Both use this one protocol:

- in: a JSON payload in the stage's scratch folder: the config, the run context, the
  stage's IO and this process's logger levels;
- records: each log record of the child (every rank-0 logger that propagates to the
  root; Prefect's are made to) is one line of its standard output (``rlmec_core.processes.encode_record``), handled here
  under its logger name in the calling thread, where Prefect's run context is, so that it
  becomes the task run's log like a record logged here; other lines are logged as they are;
- result: a JSON file the child (rank 0) writes atomically: the ``StageResult``, or the
  error, raised here again as the same exception when it can be rebuilt (the child's
  traceback as its cause).

The child is ``python -m tasks.stage_process run STAGE PAYLOAD``, alone or as the module
``accelerate launch`` starts in each worker; it dies with its parent.
"""

from __future__ import annotations

import base64
import importlib
import json
import logging
import os
import pickle
import queue
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rlmec_core.processes import (
    RecordLineFormatter,
    decode_record,
    die_with_parent,
    handle_in_parent,
)
from storage.atomic import write_json_atomic

LOG_POLL_SECONDS = 0.2  # how often the wait for the child's lines checks its deadline
EXIT_GRACE_SECONDS = 2.0  # how long lines are still read after the child exited
OUTPUT_TAIL_LINES = 60  # the child's last lines, shown when it dies without a result

logger = logging.getLogger("tasks.stage_process")  # also when run as __main__


class DeadlinePassed(TimeoutError):
    """The child ran past the seconds it was given and was killed."""


class WorkerTraceback(Exception):
    """The child's traceback, as the cause of the error raised again here."""


def is_main_process() -> bool:
    """Rank 0 of a launched stage, or the only process of a local one."""
    return int(os.environ.get("RANK", "0")) == 0


# ------------------------------------------------------------------------ parent side


def _loggers() -> list[logging.Logger]:
    known = logging.root.manager.loggerDict.values()
    return [logging.getLogger(), *(lg for lg in known if isinstance(lg, logging.Logger))]


def _payload(stage: str, ctx: Any, io: Any, result_path: Path) -> dict[str, Any]:
    from tasks.stage_registry import stage_module

    config = ctx.config
    return {
        "stage": stage,
        "module": stage_module(stage),
        "config": config.model_dump(mode="json"),
        "base_dir": str(config._base_dir),
        "ctx": {
            name: getattr(ctx, name)
            for name in (
                "workspace",
                "mlflow_tracking_uri",
                "mlflow_experiment_id",
                "mlflow_parent_run_id",
            )
        },
        "io": {
            "inputs": {role: str(path) for role, path in io.inputs.items()},
            "out": str(io.out),
            "scratch": str(io.scratch),
            "parent_ids": dict(io.parent_ids),
            "code_fingerprint": io.code_fingerprint,
        },
        # The levels set here, so the child logs exactly what this process would.
        "levels": {lg.name: lg.level for lg in _loggers() if lg.level},
        "result_path": str(result_path),
    }


def _relay(line: str) -> None:
    """One line of the child's output, logged here (a record under its own logger name)."""
    record = decode_record(line)
    if record is not None:
        handle_in_parent(record, apply_levels=True)
    elif line.strip():
        logger.info("%s", line)


def _read_lines(stream: Any, lines: queue.Queue[str | None]) -> None:
    try:
        for raw in stream:
            lines.put(raw.rstrip("\n"))
    finally:
        lines.put(None)  # end of output, however reading it ended


def _relay_lines(lines: queue.Queue[str | None], tail: deque[str], wait: float) -> bool:
    """Relay the lines queued by now, waiting up to ``wait`` seconds for the first; whether
    the child's output has ended. A bounded batch: the caller checks the deadline after it."""
    try:
        batch = [lines.get(timeout=wait)]
    except queue.Empty:
        return False
    batch += [lines.get_nowait() for _ in range(lines.qsize())]  # only this thread reads
    for line in batch:
        if line is None:
            return True
        tail.append(line)
        _relay(line)
    return False


def _relay_until_exit(process: subprocess.Popen, seconds: float | None, tail: deque[str]) -> int:
    """Relay the child's lines in this thread until it exits; its exit code. Kills it and
    raises ``DeadlinePassed`` after ``seconds``, once what it wrote until then is relayed.

    The child's exit decides, not the end of its output: a process it started may hold the
    pipe open after it. What it wrote before exiting is relayed for ``EXIT_GRACE_SECONDS``.
    """
    deadline = None if seconds is None else time.monotonic() + seconds
    lines: queue.Queue[str | None] = queue.Queue()
    threading.Thread(target=_read_lines, args=(process.stdout, lines), daemon=True).start()
    exited_at = None
    while not _relay_lines(lines, tail, LOG_POLL_SECONDS):
        if process.poll() is not None:
            exited_at = exited_at or time.monotonic()
            if time.monotonic() - exited_at > EXIT_GRACE_SECONDS:
                break
        elif deadline is not None and time.monotonic() >= deadline:
            process.kill()  # a record it was writing may be cut off
            process.wait()
            _relay_lines(lines, tail, 0)
            raise DeadlinePassed(f"killed after {seconds:g} s")
    return process.wait()


def _raise_child_error(report: dict[str, Any]) -> None:
    blob = report.get("exception")
    error = pickle.loads(base64.b64decode(blob)) if blob else RuntimeError(report["error"])
    raise error from WorkerTraceback(report["traceback"])


def run_stage_process(
    stage: str,
    ctx: Any,
    io: Any,
    *,
    launcher: Sequence[str] = (),
    env: dict[str, str] | None = None,
    seconds: float | None = None,
    merge_stderr: bool = False,
) -> dict[str, Any]:
    """Run ``stage``'s function in a child process; the ``StageResult`` it reported, as a
    dict. ``launcher``: the module and options that start the child (``tasks.launch
    accelerate …``), else it runs alone; ``seconds``: killed after them (``DeadlinePassed``);
    ``merge_stderr``: the child's error output is read (and shown if it dies) too, else it
    goes where this process's goes (a progress bar stays on the terminal)."""
    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"  # two processes never share the files
    scratch = Path(io.scratch)
    payload_path = scratch / f"stage-process-payload-{token}.json"
    result_path = scratch / f"stage-process-result-{token}.json"
    write_json_atomic(payload_path, _payload(stage, ctx, io, result_path))
    prefix = [sys.executable, "-m", *launcher] if launcher else [sys.executable]
    command = [*prefix, "-m", "tasks.stage_process", "run", stage, str(payload_path)]
    # The child imports what this process imports (a test's stage module included).
    path = os.pathsep.join(entry for entry in sys.path if entry)
    tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merge_stderr else None,
        stdin=subprocess.DEVNULL,
        encoding="utf-8",
        errors="replace",  # a library's stray bytes must not stop the relay
        env={**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1", "PYTHONPATH": path},
    )
    try:
        code = _relay_until_exit(process, seconds, tail)
        report = json.loads(result_path.read_text("utf-8")) if result_path.is_file() else None
    except BaseException:
        process.kill()  # and, under accelerate, its workers with it (their death signal)
        process.wait()
        raise
    finally:
        payload_path.unlink(missing_ok=True)
        result_path.unlink(missing_ok=True)
    if report is not None and not report["ok"]:
        _raise_child_error(report)
    if code != 0 or report is None:
        last = "\n".join(tail) or "(none read)"
        raise RuntimeError(
            f"stage {stage!r}: its process exited with code {code}"
            f"{' without a result' if report is None else ''}; its last lines:\n{last}"
        )
    return report["result"]


# ------------------------------------------------------------------------ child side


def _send_records_to_stdout(levels: dict[str, int]) -> None:
    """Every record as a line on standard output, and only there: no console or Prefect
    API handler here (the parent has them, and the run context the API handler needs)."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(RecordLineFormatter())
    for lg in _loggers():
        lg.handlers = []
        lg.propagate = True
    logging.getLogger().handlers = [handler]
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    if not is_main_process():  # other ranks say only what goes wrong
        for name in ("rlmec_core", "tasks"):
            lg = logging.getLogger(name)
            lg.setLevel(max(lg.getEffectiveLevel(), logging.WARNING))


def _rebuild(payload: dict[str, Any]) -> tuple[Any, Any]:
    from rlmec_core.config import PipelineConfig
    from tasks.context import RunContext
    from tasks.stage import StageIO

    config = PipelineConfig.model_validate(payload["config"])
    config._base_dir = Path(payload["base_dir"])
    ctx = RunContext(config=config, **payload["ctx"])
    spec = payload["io"]
    io = StageIO(
        inputs={role: Path(path) for role, path in spec["inputs"].items()},
        out=Path(spec["out"]),
        scratch=Path(spec["scratch"]),
        parent_ids=spec["parent_ids"],
        code_fingerprint=spec["code_fingerprint"],
    )
    return ctx, io


def _pickled(exc: BaseException) -> str | None:
    try:
        blob = pickle.dumps(exc)
        pickle.loads(blob)  # an exception that cannot be rebuilt is sent as text only
    except Exception:
        return None
    return base64.b64encode(blob).decode("ascii")


def run_child(stage: str, payload_path: str) -> int:
    """The child: run the stage's function; rank 0 writes the result (or the error)."""
    die_with_parent(signal.SIGKILL)  # as at a deadline: its resumable state is on disk
    payload = json.loads(Path(payload_path).read_text(encoding="utf-8"))
    try:
        importlib.import_module(payload["module"])  # registers the stage (imports Prefect)
        _send_records_to_stdout(payload["levels"])
        from tasks.peak_memory import peak_rss_mib
        from tasks.stage_registry import raw_stage_function

        result = raw_stage_function(stage)(*_rebuild(payload))
        # This fresh process's own peak; a launched stage's rank 0 reported its own.
        result.metrics.setdefault("peak_rss_mib", peak_rss_mib())
        report: dict[str, Any] = {"ok": True, "result": asdict(result)}
    except BaseException as exc:  # report any failure to the parent, then exit non-zero
        report = {
            "ok": False,
            "error": "".join(traceback.format_exception_only(type(exc), exc)).strip(),
            "traceback": traceback.format_exc(),
            "exception": _pickled(exc),
        }
        if not is_main_process():
            logger.error("rank %s failed: %s", os.environ.get("RANK"), exc)
    if is_main_process():
        write_json_atomic(Path(payload["result_path"]), report)
    return 0 if report["ok"] else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 3 and argv[0] == "run":
        return run_child(argv[1], argv[2])
    print("usage: python -m tasks.stage_process run STAGE PAYLOAD.json", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
