"""Progress off a terminal: plain lines, at most one per interval, always the last one."""

from __future__ import annotations

import logging

import pytest

from rlmec_core import progress as progress_module
from rlmec_core.progress import Progress, progress_line


def test_at_most_one_line_per_interval_and_the_last(monkeypatch, caplog) -> None:
    now = [0.0]
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: now[0])
    monkeypatch.setattr(progress_module, "on_terminal", lambda: False)
    caplog.set_level(logging.INFO, logger="rlmec_core.progress")
    bar = Progress(1000, "generate", interval_s=30.0, unit="batch")
    for _ in range(1000):  # 1000 steps of 0.3 s: 300 s in all
        now[0] += 0.3
        bar.update()
    lines = [r.getMessage() for r in caplog.records]
    assert 9 <= len(lines) <= 11  # one per 30 s, and the final one
    assert lines[-1] == "generate: 1000/1000 (3.33 batch/s, 300 s)"
    assert all("\r" not in line for line in lines)


def test_the_line_states_rate_and_eta() -> None:
    assert progress_line("collect", 25, 100, 10.0) == "collect: 25/100 (2.5 it/s, 10 s, ETA 30 s)"
    assert progress_line("x", 3, None, 1.0) == "x: 3/? (3 it/s, 1 s)"


@pytest.mark.parametrize("enabled", [False])
def test_disabled_progress_says_nothing(enabled, caplog, monkeypatch) -> None:
    monkeypatch.setattr(progress_module, "on_terminal", lambda: False)
    caplog.set_level(logging.INFO, logger="rlmec_core.progress")
    bar = Progress(3, "quiet", enabled=enabled, interval_s=0)
    for _ in range(3):
        bar.update()
    assert caplog.records == []


def test_training_lines_at_most_one_per_interval_with_the_first_and_last(
    monkeypatch, caplog
) -> None:
    from types import SimpleNamespace

    now = [0.0]
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: now[0])
    caplog.set_level(logging.INFO, logger="rlmec_core.progress")
    lines = progress_module._LogLines(interval_s=30.0)
    state = SimpleNamespace(is_local_process_zero=True, global_step=0, max_steps=1250)
    lines.on_train_begin(None, state, None)
    for step in range(10, 1251, 10):  # a logging step every 10 steps, 2 s apart: 250 s
        now[0] += 2.0
        state.global_step = step
        lines.on_log(None, state, None, logs={"loss": 0.5, "learning_rate": 1e-3, "epoch": 1.0})
    got = [r.getMessage() for r in caplog.records]
    assert 8 <= len(got) <= 11  # the first, one per 30 s, the last: not 125
    assert got[0] == "step: 10/1250 (5 it/s, 2 s, ETA 248 s): loss=0.5, learning_rate=0.001"
    assert got[-1].startswith("step: 1250/1250 (5 it/s, 250 s): loss=0.5")
    assert all("\r" not in line and "epoch" not in line for line in got)
