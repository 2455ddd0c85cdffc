"""Multi-process training: a stage run under ``accelerate launch``.

A training stage whose section says ``launcher: {kind: accelerate, ...}`` does not train in
the Prefect task's process. ``launched`` writes the stage's context to a JSON payload in its
scratch folder and runs

    python -m tasks.launch accelerate <accelerate launch options> \\
        -m tasks.stage_process run <stage> <payload.json>

The first process (the launcher) is ``accelerate launch`` itself, which starts
``num_processes`` workers (``--config_file`` passes a DeepSpeed or FSDP config through).
Every worker runs the stage's function with the same context; the Trainer sees the
distributed environment and shards the batches. Only rank 0 writes the artifact's files
and the JSON result that the task turns back into its ``StageResult``: the artifact layout,
lineage and MLflow records are those of a local run. Checkpoints go to the stage's scratch
folder as always, so a rerun resumes (with the same ``num_processes``: it is part of the
cache key). On a machine without CUDA the workers use the CPU and gloo.

Payload, log records and result travel as for a time-limited stage
(``tasks.stage_process``): the workers' records come back over the launcher's output, one
line each, and become the task run's logs; other ranks log their warnings only. Launcher
and workers die with their parent.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rlmec_core.processes import die_with_parent, free_port
from tasks.stage_process import run_stage_process

# Set in the workers' environment: the stage function runs its body instead of launching.
CHILD_ENV = "RLMEC_LAUNCHED_STAGE"

logger = logging.getLogger(__name__)

_MIXED_PRECISION = {"fp32": "no", "bf16": "bf16", "fp16": "fp16"}


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


def launch_stage(stage: str, ctx: Any, io: Any, launcher: Any, precision: str) -> dict[str, Any]:
    """Run ``stage`` under ``accelerate launch``; the result rank 0 reported (a StageResult
    as a dict). Raises the workers' error, or shows the launcher's last lines."""
    import torch

    from rlmec_core.precision import resolve_precision

    config_file = (
        ctx.config.resolve_path(launcher.config_file) if launcher.config_file is not None else None
    )
    options = accelerate_options(launcher, resolve_precision(precision), config_file, free_port())
    env = {CHILD_ENV: stage}
    if not torch.cuda.is_available():
        env["ACCELERATE_USE_CPU"] = "1"
    logger.info(
        "stage %s: accelerate launch with %d process(es)%s",
        stage,
        launcher.num_processes,
        f", config {config_file}" if config_file else "",
    )
    return run_stage_process(
        stage,
        ctx,
        io,
        launcher=["tasks.launch", "accelerate", *options],
        env=env,
        merge_stderr=True,  # the launcher's own errors: shown if it dies without a result
    )


# ------------------------------------------------------------------------ child side


def run_launcher(options: list[str]) -> int:
    """``accelerate launch`` in this process, which dies with its parent."""
    die_with_parent(signal.SIGKILL)  # and its workers with it, by their own death signal
    from accelerate.commands.launch import launch_command, launch_command_parser

    launch_command(launch_command_parser().parse_args(options))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "accelerate":
        return run_launcher(argv[1:])
    print(
        "usage: python -m tasks.launch accelerate [accelerate launch options] -m MODULE ...",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
