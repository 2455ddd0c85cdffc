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
