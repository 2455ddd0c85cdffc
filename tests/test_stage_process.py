"""A stage run in a child process (tasks/stage_process.py): what comes back, and how.

The time-limit and accelerate tests run real stages through it; these cover the child's
other ways to behave: output that is no record, dying without a result, a typed error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import time

import pytest

from rlmec_core.errors import InputError
from tasks.stage_process import WorkerTraceback, run_stage_process
from tests.slow_stage import stage_in


def test_other_output_is_logged_as_it_is_and_stray_bytes_do_not_stop_the_relay(tmp_path, caplog):
    ctx, io = stage_in(tmp_path)
    # INFO for this logger here (another test may have set the project's loggers' level).
    with caplog.at_level(logging.INFO, logger="tasks.stage_process"):
        result = run_stage_process("noisy", ctx, io)
    assert result["kind"] == "test"
    lines = [r.getMessage() for r in caplog.records if r.name == "tasks.stage_process"]
    assert lines == ["raw \ufffd\ufffd bytes", "a plain line"]
    [record] = [r for r in caplog.records if r.name == "rlmec_core.noisy"]
    assert record.getMessage() == "and a record"  # after the bytes: the relay went on


def test_a_child_that_dies_without_a_result_shows_its_exit_code_and_last_lines(tmp_path):
    ctx, io = stage_in(tmp_path)
    with pytest.raises(RuntimeError, match="exited with code 3 without a result") as failure:
        run_stage_process("vanishing", ctx, io)
    assert str(failure.value).endswith("last words")
    assert not list(io.scratch.glob("stage-process-*"))  # payload cleaned up


def test_the_childs_error_is_raised_as_itself_with_its_traceback(tmp_path):
    ctx, io = stage_in(tmp_path)
    with pytest.raises(InputError, match="line 3: no 'question' field") as failure:
        run_stage_process("refusing", ctx, io)
    cause = failure.value.__cause__
    assert isinstance(cause, WorkerTraceback)
    assert "in refusing" in str(cause) and "Traceback" in str(cause)


def test_the_childs_exit_ends_the_wait_even_while_its_helper_holds_the_output(tmp_path):
    # Not reported as timed out, nor waited on until the helper closes the pipe.
    ctx, io = stage_in(tmp_path)
    started = time.monotonic()
    try:
        result = run_stage_process("leaving_a_helper", ctx, io, seconds=40)
    finally:
        with contextlib.suppress(OSError, ValueError):
            os.kill(int((io.scratch / "helper.pid").read_text()), signal.SIGKILL)
    assert result["kind"] == "test"
    assert time.monotonic() - started < 30  # the helper sleeps 60 s
