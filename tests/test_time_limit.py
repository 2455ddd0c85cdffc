import os
import time

import pytest

import tests.slow_stage  # noqa: F401  (registers the stage)
from tasks.time_limit import StageTimeoutError, run_with_time_limit
from tests.chatty_stage import MESSAGE
from tests.slow_stage import stage_in


def test_synchronous_work_is_killed_at_the_deadline(tmp_path):
    ctx, io = stage_in(tmp_path, busy_seconds=600)
    started = time.monotonic()
    with pytest.raises(StageTimeoutError, match="busy_training.timeout_seconds"):
        run_with_time_limit("busy_training", ctx, io, seconds=8)
    assert time.monotonic() - started < 30  # not the 600 s the loop wanted
    assert not (io.out / "done.txt").exists()
    assert not list(io.scratch.glob("stage-process-*"))  # payload and result cleaned up


def test_work_within_the_limit_returns_its_result(tmp_path):
    ctx, io = stage_in(tmp_path, busy_seconds=0.2)
    result = run_with_time_limit("busy_training", ctx, io, seconds=120)
    assert result["kind"] == "test" and result["metrics"]["seconds"] == 0.2
    assert result["metrics"]["peak_rss_mib"] > 10  # the child's own peak (a Python process)
    assert (io.out / "done.txt").read_text() == "finished"


def test_the_childs_log_records_are_handled_in_the_parent(tmp_path, caplog):
    ctx, io = stage_in(tmp_path)
    with caplog.at_level("WARNING", logger="rlmec_core"):
        run_with_time_limit("chatty", ctx, io, seconds=120)
    relayed = [r for r in caplog.records if r.name == "rlmec_core.chatty"]
    assert [r.getMessage() for r in relayed] == [MESSAGE]
    assert relayed[0].process != os.getpid()  # emitted in the child, handled here
    assert not list(io.scratch.glob("stage-process-*"))
