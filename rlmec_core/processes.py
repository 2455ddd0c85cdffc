"""Helpers for the child processes the pipeline starts: a free local port, dying with the
parent, and relaying a child's log records to the parent.

A child's record travels as one line of its output (``encode_record``, read back by
``decode_record``): ``tasks.stage_process``'s children, a time-limited stage or the
workers of ``accelerate launch``. The parent hands it to ``handle_in_parent``, which logs it
under the logger name, process id and time it had in the child.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import logging
import socket

LOG_MARKER = "rlmec-log"  # first field of a record's line: level, name, pid, time, JSON message
_PR_SET_PDEATHSIG = 1
_FORMATTER = logging.Formatter()  # only for formatException


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def die_with_parent(sig: int) -> None:
    """In a child (or a ``preexec_fn``): receive ``sig`` when the parent dies, so a killed
    pipeline leaves no orphans. Linux only; elsewhere nothing happens."""
    with contextlib.suppress(OSError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, sig)


# ------------------------------------------------------------------------ log records


def encode_record(record: logging.LogRecord) -> str:
    """One line for ``record``: marker, level number, logger name, process id, creation
    time and the JSON-encoded message, its exception's traceback included (newlines and
    any text survive)."""
    message = record.getMessage()
    if record.exc_info:
        message = f"{message}\n{_FORMATTER.formatException(record.exc_info)}"
    fields = (LOG_MARKER, record.levelno, record.name, record.process, repr(record.created))
    return "\t".join(map(str, fields)) + "\t" + json.dumps(message)


def decode_record(line: str) -> logging.LogRecord | None:
    """The record ``encode_record`` wrote as ``line``; None for any other line."""
    parts = line.split("\t", 5)
    if len(parts) != 6 or parts[0] != LOG_MARKER:
        return None
    try:
        level, name, process = int(parts[1]), parts[2], int(parts[3])
        created, message = float(parts[4]), json.loads(parts[5])
    except ValueError:
        return None
    record = logging.makeLogRecord(
        {
            "name": name,
            "levelno": level,
            "levelname": logging.getLevelName(level),
            "msg": message,
            "process": process,
            "created": created,
        }
    )
    record.msecs = (created - int(created)) * 1000  # as LogRecord derives them from created
    return record


class RecordLineFormatter(logging.Formatter):
    """A child's handler formatter: each record as ``encode_record``'s line."""

    def format(self, record: logging.LogRecord) -> str:
        return encode_record(record)


def handle_in_parent(record: logging.LogRecord, *, apply_levels: bool = False) -> None:
    """Handle a child's record here, under its own logger name, so that this process's
    handlers (Prefect's task-run logs, the console) get it like a record logged here.

    ``apply_levels``: drop it unless that logger here is enabled for its level (for a
    child that was not given all of this process's logger levels)."""
    logger = logging.getLogger(record.name)
    if apply_levels and not logger.isEnabledFor(record.levelno):
        return
    logger.handle(record)
