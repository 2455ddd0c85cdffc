"""Multi-process training: a stage run under ``accelerate launch``.

A training stage whose section says ``launcher: {kind: accelerate, ...}`` does not train in
the Prefect task's process. ``launched`` writes the stage's context to a JSON payload in its
scratch folder and runs

    python -m tasks.launch accelerate <accelerate launch options> \\
        -m tasks.launch run <stage> <payload.json>

The first process (the launcher) is ``accelerate launch`` itself, which starts
``num_processes`` workers (``--config_file`` passes a DeepSpeed or FSDP config through).
Every worker runs the stage's function with the same context; the Trainer sees the
distributed environment and shards the batches. Only rank 0 writes the artifact's files
and the JSON result that the task turns back into its ``StageResult``: the artifact layout,
lineage and MLflow records are those of a local run. Checkpoints go to the stage's scratch
folder as always, so a rerun resumes (with the same ``num_processes``: it is part of the
cache key). On a machine without CUDA the workers use the CPU and gloo.

The workers' log records come back over the launcher's output, one line each
(``rlmec_core.processes.encode_record``), and are
logged here under their own logger names, so they become the task run's logs. Launcher
and workers die with their parent, like a time-limited stage's child process.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import traceback
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from rlmec_core.processes import (
    RecordLineFormatter,
    decode_record,
    die_with_parent,
    free_port,
    handle_in_parent,
)

# Set in the workers' environment: the stage function runs its body instead of launching.
CHILD_ENV = "RLMEC_LAUNCHED_STAGE"
OUTPUT_TAIL_LINES = 60

logger = logging.getLogger(__name__)

_MIXED_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


def is_main_process() -> bool:
    """Rank 0 of a launched stage, or the only process of a local one."""
    return int(os.environ.get("RANK", "0")) == 0


def launched(
    stage: str, ctx: Any, io: Any, launcher: Any, precision: str, body: Callable[[Any, Any], Any]
) -> Any:
    """``body(ctx, io)`` here (``launcher.kind == "local"``, or inside a worker), or in
    ``launcher.num_processes`` processes under ``accelerate launch``; the StageResult."""
    if launcher.kind == "local" or os.environ.get(CHILD_ENV) == stage:
        return body(ctx, io)
    from tasks.stage import StageResult  # not at import: workers' launcher stays light

    return StageResult(**launch_stage(stage, ctx, io, launcher, precision))


# ------------------------------------------------------------------------ parent side


def accelerate_options(
    launcher: Any, precision: str, config_file: Path | None, port: int
) -> list[str]:
    """``accelerate launch`` options: the config file if any, the process count and the
    mixed precision of the stage (``precision`` resolved: fp32, bf16 or fp16)."""
    options: list[str] = []
    if config_file is not None:
        options += ["--config_file", str(config_file)]
    else:
        options += ["--num_machines", "1", "--dynamo_backend", "no"]
        if launcher.num_processes > 1:
            options.append("--multi_gpu")  # with ACCELERATE_USE_CPU: gloo on the CPU
    options += [
        "--num_processes",
        str(launcher.num_processes),
        "--mixed_precision",
        _MIXED_PRECISION[precision],
        "--main_process_port",
        str(port),
    ]
    return options


def _payload(stage: str, ctx: Any, io: Any) -> dict[str, Any]:
    from tasks.stage_registry import stage_module

    config = ctx.config
    return {
        "stage": stage,
        "module": stage_module(stage),
        "config": config.model_dump(mode="json"),
        "base_dir": str(config._base_dir),
        "ctx": {
            name: getattr(ctx, name, "")
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
        "log_level": logging.getLogger("rlmec_core").getEffectiveLevel(),
    }


def _relay(line: str) -> None:
    """One line of the launcher's output, logged here (a worker's record under its name)."""
    record = decode_record(line)
    if record is not None:
        # Workers get this process's level for rlmec_core and tasks only: levels apply here.
        handle_in_parent(record, apply_levels=True)
    elif line.strip():
        logger.info("%s", line)


def launch_stage(stage: str, ctx: Any, io: Any, launcher: Any, precision: str) -> dict[str, Any]:
    """Run ``stage`` under ``accelerate launch``; the result rank 0 reported (a StageResult
    as a dict). Raises with the workers' error, or the launcher's last lines."""
    import torch

    from rlmec_core.precision import resolve_precision

    token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    scratch = Path(io.scratch)
    payload_path = scratch / f"launch-payload-{token}.json"
    result_path = scratch / f"launch-result-{token}.json"
    payload = _payload(stage, ctx, io)
    payload["result_path"] = str(result_path)
    payload_path.write_text(json.dumps(payload), encoding="utf-8")
    config_file = (
        ctx.config.resolve_path(launcher.config_file) if launcher.config_file is not None else None
    )
    options = accelerate_options(launcher, resolve_precision(precision), config_file, free_port())
    command = [
        sys.executable,
        "-m",
        "tasks.launch",
        "accelerate",
        *options,
        "-m",
        "tasks.launch",
        "run",
        stage,
        str(payload_path),
    ]
    env = {**os.environ, CHILD_ENV: stage, "PYTHONUNBUFFERED": "1"}
    if not torch.cuda.is_available():
        env["ACCELERATE_USE_CPU"] = "1"
    logger.info(
        "stage %s: accelerate launch with %d process(es)%s",
        stage,
        launcher.num_processes,
        f", config {config_file}" if config_file else "",
    )
    tail: deque[str] = deque(maxlen=OUTPUT_TAIL_LINES)
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert process.stdout is not None
        for raw in process.stdout:
            line = raw.rstrip("\n")
            tail.append(line)
            _relay(line)
        code = process.wait()
    except BaseException:
        process.kill()  # the launcher; its workers die with it
        process.wait()
        raise
    finally:
        payload_path.unlink(missing_ok=True)
    report = None
    if result_path.is_file():
        report = json.loads(result_path.read_text(encoding="utf-8"))
        result_path.unlink()
    if report is not None and not report["ok"]:
        raise RuntimeError(f"{report['error']}\n--- rank 0 traceback ---\n{report['traceback']}")
    if code != 0 or report is None:
        lines = "\n".join(tail)
        raise RuntimeError(
            f"stage {stage!r}: accelerate launch exited with code {code} "
            f"{'without a result' if report is None else ''}; its last lines:\n{lines}"
        )
    return report["result"]


# ------------------------------------------------------------------------ child side


def _configure_worker_logging(level: int) -> None:
    """Rank 0's records at the parent's level, other ranks' warnings, one line each."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(RecordLineFormatter())
    root = logging.getLogger()
    root.handlers = [handler]
    worker_level = level if is_main_process() else max(level, logging.WARNING)
    for name in ("rlmec_core", "tasks"):
        logging.getLogger(name).setLevel(worker_level)


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


def run_worker(stage: str, payload_path: str) -> int:
    """One launched process: run the stage's function; rank 0 writes the result."""
    die_with_parent(signal.SIGKILL)  # nothing to clean up: its checkpoints are on disk
    payload = json.loads(Path(payload_path).read_text(encoding="utf-8"))
    _configure_worker_logging(int(payload.get("log_level", logging.INFO)))
    os.environ[CHILD_ENV] = stage
    try:
        importlib.import_module(payload["module"])  # registers the stage's function
        from tasks.stage_registry import raw_stage_function

        ctx, io = _rebuild(payload)
        result = raw_stage_function(stage)(ctx, io)
        report: dict[str, Any] = {"ok": True, "result": asdict(result)}
    except BaseException as exc:
        report = {
            "ok": False,
            "error": "".join(traceback.format_exception_only(type(exc), exc)).strip(),
            "traceback": traceback.format_exc(),
        }
        logging.getLogger(__name__).error("rank %s failed: %s", os.environ.get("RANK", "0"), exc)
    if is_main_process():
        path = Path(payload["result_path"])
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(report, default=str), encoding="utf-8")
        os.replace(tmp, path)
    return 0 if report["ok"] else 1


def run_launcher(options: list[str]) -> int:
    """``accelerate launch`` in this process, which dies with its parent."""
    die_with_parent(signal.SIGKILL)  # and its workers with it, by their own death signal
    from accelerate.commands.launch import launch_command, launch_command_parser

    launch_command(launch_command_parser().parse_args(options))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 3 and argv[0] == "run":
        return run_worker(argv[1], argv[2])
    if argv and argv[0] == "accelerate":
        return run_launcher(argv[1:])
    print(
        "usage: python -m tasks.launch run STAGE PAYLOAD.json\n"
        "       python -m tasks.launch accelerate [accelerate launch options] -m MODULE ...",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
