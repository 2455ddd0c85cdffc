"""The child-process helpers: a free port, dying with the parent, relayed log records."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rlmec_core.processes import (
    RecordLineFormatter,
    decode_record,
    encode_record,
    free_port,
    handle_in_parent,
)

REPO = Path(__file__).resolve().parents[1]
MESSAGE = "first line\n\tsecond line: 100% naïve → 数学 ✓"

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux's")


def python(script: str, **kwargs) -> subprocess.Popen:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(script)], cwd=REPO, env=env, text=True, **kwargs
    )


def test_free_port_can_be_listened_on():
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as server:
        server.bind(("127.0.0.1", port))
        server.listen()
        with socket.create_connection(("127.0.0.1", port), timeout=5):
            pass


def _gone(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"  # dead, not yet reaped
    except FileNotFoundError:
        return True


def _start_grandchild(sig: int, tmp_path: Path) -> tuple[subprocess.Popen, int]:
    """A parent process whose child calls ``die_with_parent(sig)``; the child's pid once it
    has. On SIGTERM the child writes ``terminated`` into tmp_path and exits."""
    grandchild = f"""
        import pathlib, signal, sys, time
        from rlmec_core.processes import die_with_parent

        def on_term(signum, frame):
            pathlib.Path({str(tmp_path)!r}, "terminated").write_text("yes")
            sys.exit(0)

        signal.signal(signal.SIGTERM, on_term)
        die_with_parent({int(sig)})
        print("ready", flush=True)
        time.sleep(120)
    """
    parent = python(
        f"""
        import subprocess, sys, time
        child = subprocess.Popen([sys.executable, "-c", {textwrap.dedent(grandchild)!r}])
        print(child.pid, flush=True)
        time.sleep(120)
        """,
        stdout=subprocess.PIPE,
    )
    assert parent.stdout is not None
    # The parent's line (the pid) and the grandchild's (it shares the pipe), in either order.
    lines = {parent.stdout.readline().strip() for _ in range(2)}
    assert "ready" in lines, lines
    [pid] = (int(line) for line in lines - {"ready"})
    return parent, pid


def _kill_parent_then_wait_for(parent: subprocess.Popen, done, seconds: float = 10) -> bool:
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if done():
            return True
        time.sleep(0.05)
    return False


@linux_only
def test_a_child_dies_with_its_killed_parent(tmp_path):
    parent, pid = _start_grandchild(signal.SIGKILL, tmp_path)
    try:
        assert not _gone(pid)
        assert _kill_parent_then_wait_for(parent, lambda: _gone(pid))
        assert not (tmp_path / "terminated").exists()  # killed, no handler ran
    finally:
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)


@linux_only
def test_a_child_asking_for_sigterm_gets_sigterm(tmp_path):
    parent, pid = _start_grandchild(signal.SIGTERM, tmp_path)
    try:
        done = tmp_path / "terminated"
        assert _kill_parent_then_wait_for(parent, lambda: done.exists() and _gone(pid))
    finally:
        if not _gone(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_record_round_trips_through_its_line():
    record = logging.LogRecord("rlmec_core.x.y", 25, __file__, 1, "%s %d", (MESSAGE, 7), None)
    line = encode_record(record)
    assert "\n" not in line
    decoded = decode_record(line)
    assert decoded is not None
    assert (decoded.levelno, decoded.levelname) == (25, "Level 25")
    assert decoded.name == "rlmec_core.x.y"
    assert decoded.getMessage() == f"{MESSAGE} 7"
    assert (decoded.process, decoded.created) == (record.process, record.created)


def test_a_records_exception_travels_with_its_message():
    try:
        raise ValueError("bad value")
    except ValueError:
        record = logging.LogRecord("tasks", logging.ERROR, "", 0, "failed", (), sys.exc_info())
    decoded = decode_record(encode_record(record))
    assert decoded is not None and decoded.levelname == "ERROR"
    message = decoded.getMessage()
    assert message.startswith("failed\nTraceback")
    assert message.endswith("ValueError: bad value")


@pytest.mark.parametrize(
    "line",
    [
        "",
        "plain output",
        "rlmec-log\t20\tname",
        'rlmec-log\t20\tname\t"m"',
        'rlmec-log\tINFO\tname\t1\t2.0\t"m"',
        'rlmec-log\t20\tname\tpid\t2.0\t"m"',
        "rlmec-log\t20\tn\t1\t2.0\t{",
    ],
)
def test_other_lines_are_not_records(line):
    assert decode_record(line) is None


def test_a_child_process_records_come_back_over_its_output():
    child = python(
        f"""
        import logging, sys
        from rlmec_core.processes import RecordLineFormatter

        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(RecordLineFormatter())
        logging.getLogger().handlers = [handler]
        logging.getLogger("rlmec_core.child").warning("%s", {MESSAGE!r})
        """,
        stdout=subprocess.PIPE,
    )
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0
    [line] = out.splitlines()
    record = decode_record(line)
    assert record is not None
    assert (record.levelno, record.name, record.getMessage()) == (
        logging.WARNING,
        "rlmec_core.child",
        MESSAGE,
    )
    assert record.process == child.pid and record.process != os.getpid()
    assert RecordLineFormatter().format(record) == line  # decoded, it encodes the same


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def parent_logger():
    logger = logging.getLogger("rlmec_test_processes.parent")
    collect = _Collect()
    logger.addHandler(collect)
    logger.setLevel(logging.WARNING)
    yield collect
    logger.removeHandler(collect)
    logger.setLevel(logging.NOTSET)


def test_a_childs_record_is_handled_under_its_own_logger_name(parent_logger):
    info = logging.makeLogRecord(
        {"name": "rlmec_test_processes.parent.child", "levelno": logging.INFO, "msg": "hi"}
    )
    handle_in_parent(info)  # the child's levels already chose it
    handle_in_parent(info, apply_levels=True)  # this process's WARNING drops it
    assert parent_logger.records == [info]
