"""The one ``rlmec: ...`` line that ends a failure, and the exit code.

Our own errors are told apart by type (``rlmec_core.errors``: a user's input at fault, or
an error with its own hint); the operating system's by errno. Only where a library reports
a full or read-only disk in words alone (sqlite3's "database or disk is full", "attempt to
write a readonly database"; torch's writers) is the message read.
"""

from __future__ import annotations

import errno
import shutil
from collections.abc import Iterator

from rlmec_core.errors import RUN_AGAIN, InputError, RlmecError, StageFailure

MAX_DETAIL = 400  # characters of an error's own message in the last line
DEBUG = "(--debug shows the traceback)"
# Libraries that report these conditions without an errno, in their own words.
DISK_FULL_TEXTS = ("disk is full", "No space left")
READ_ONLY_TEXTS = ("readonly database", "Read-only file")


def failure_line(exc: BaseException, workspace: str | None, started: bool) -> tuple[str, int]:
    """The one `rlmec:` line that ends a failure, and the exit code (2: refused before
    anything ran, 130: interrupted, 1: a run failed)."""
    chain = list(_chain(exc))
    stage_error = _first(chain, StageFailure)
    stage = getattr(stage_error, "stage", None)
    what, hint = _what_and_hint(exc, chain, stage_error, workspace)
    prefix = f"stage {stage!r} failed: " if stage else ""
    runs = f"; `rlmec runs --workspace {workspace}` lists every stage" if started else ""
    refused = isinstance(exc, OSError) or _first(chain, InputError) is not None
    code = 130 if isinstance(exc, KeyboardInterrupt) else 2 if refused and not started else 1
    return f"rlmec: {prefix}{what}{'' if hint[0] == '(' else ';'} {hint}{runs}", code


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """The error, what caused it, what that was raised while handling, and so on."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        context = None if current.__suppress_context__ else current.__context__
        current = getattr(current, "cause", None) or current.__cause__ or context


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= MAX_DETAIL else text[: MAX_DETAIL - 3] + "..."


def _first(chain: list[BaseException], kind: type[BaseException]) -> BaseException | None:
    return next((e for e in chain if isinstance(e, kind)), None)


def _os_error(chain: list[BaseException], codes: tuple[int, ...], texts: tuple[str, ...]):
    for e in chain:
        if isinstance(e, OSError) and e.errno in codes:
            return e
        if any(text in str(e) for text in texts):
            return e
    return None


def _disk_full(workspace: str | None) -> bool:
    try:
        return workspace is not None and shutil.disk_usage(workspace).free < 1 << 20
    except OSError:
        return False


def _disk_trouble(
    exc: BaseException, chain: list[BaseException], workspace: str | None
) -> tuple[str, str] | None:
    """A full or read-only disk, whatever raised it."""
    full = _os_error(chain, (errno.ENOSPC, errno.EDQUOT), DISK_FULL_TEXTS)
    if full is None and _disk_full(workspace):
        full = exc  # torch and others report a full disk without its errno
    if full is not None:
        where = f" writing {full.filename}" if getattr(full, "filename", None) else ""
        return f"no space left on device{where}", f"free some space, then {RUN_AGAIN}"
    read_only = _os_error(chain, (errno.EROFS, errno.EACCES, errno.EPERM), READ_ONLY_TEXTS)
    if read_only is not None:
        where = getattr(read_only, "filename", None) or workspace
        reason = getattr(read_only, "strerror", None) or _one_line(read_only)
        return (
            f"cannot write {where} ({reason})",
            "make the workspace writable or pass another --workspace",
        )
    return None


def _what_and_hint(
    exc: BaseException,
    chain: list[BaseException],
    stage_error: BaseException | None,
    workspace: str | None,
) -> tuple[str, str]:
    """What went wrong, and what to do about it."""
    if isinstance(exc, KeyboardInterrupt):
        return "interrupted", RUN_AGAIN
    disk = _disk_trouble(exc, chain, workspace)
    if disk is not None:
        return disk
    if isinstance(exc, NotADirectoryError):
        return f"--workspace {exc.filename} is not a folder", "pass a folder"
    known = _first(chain, InputError) or _first(chain, RlmecError)
    if known is not None:
        stage = getattr(stage_error, "stage", None) or "<stage>"
        return _one_line(known), type(known).hint.replace("{stage}", stage)
    if stage_error is not None:
        cause = getattr(stage_error, "cause", None) or stage_error
        scratch = getattr(stage_error, "scratch", None)
        kept = f"its partial work in {scratch} resumes" if scratch else "it resumes"
        return f"{type(cause).__name__}: {_one_line(cause)}", f"{kept} on the next run {DEBUG}"
    return f"unexpected error: {type(exc).__name__}: {_one_line(exc)}", DEBUG
