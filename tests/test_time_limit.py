import os
import time
from types import SimpleNamespace

import pytest

import tests.slow_stage  # noqa: F401  (registers the stage)
from tasks.time_limit import StageTimeoutError, run_with_time_limit
from tests.chatty_stage import MESSAGE


def make_io(tmp_path):
    out, scratch = tmp_path / "out", tmp_path / "scratch"
    out.mkdir()
    scratch.mkdir()
    return SimpleNamespace(out=out, scratch=scratch)


def test_synchronous_work_is_killed_at_the_deadline(tmp_path):
    io = make_io(tmp_path)
    started = time.monotonic()
    with pytest.raises(StageTimeoutError, match="busy_training.timeout_seconds"):
        run_with_time_limit("busy_training", 600, io, seconds=8)
    assert time.monotonic() - started < 30  # not the 600 s the loop wanted
    assert not (io.out / "done.txt").exists()


def test_work_within_the_limit_returns_its_result(tmp_path):
    io = make_io(tmp_path)
    result = run_with_time_limit("busy_training", 0.2, io, seconds=120)
    assert result["kind"] == "test" and result["metrics"]["seconds"] == 0.2
    assert result["metrics"]["peak_rss_mib"] > 10  # the child's own peak (a Python process)
    assert (io.out / "done.txt").read_text() == "finished"


def test_the_childs_log_records_are_handled_in_the_parent(tmp_path, caplog):
    io = make_io(tmp_path)
    with caplog.at_level("WARNING", logger="rlmec_core"):
        run_with_time_limit("chatty", None, io, seconds=120)
    relayed = [r for r in caplog.records if r.name == "rlmec_core.chatty"]
    assert [r.getMessage() for r in relayed] == [MESSAGE]
    assert relayed[0].process != os.getpid()  # emitted in the child, handled here
