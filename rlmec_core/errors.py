"""The error types the command line tells apart, each with what the user can do about it.

``rlmec``'s last line on a failure (``flows.cli_errors``) is chosen by type, not by reading
messages: a user's file or setting at fault (``InputError``: refused before anything runs),
or another ``RlmecError`` whose ``hint`` says what to do. The concrete errors live with the
code that raises them and derive from these; this module imports nothing heavy, so the
CLI can check types without importing Prefect, torch or MLflow.
"""

from __future__ import annotations

# What a failed run can always do: stages are cached and partial work resumes.
RUN_AGAIN = "run again: finished stages are cached and partial work resumes"


class RlmecError(Exception):
    """An error the user can act on. ``hint`` ends the CLI's last line; ``{stage}`` in it
    is the failed stage's name."""

    hint = RUN_AGAIN


class InputError(RlmecError):
    """A user's file or setting is wrong (config, data file, model file, a fetch): nothing
    ran, or nothing that needs undoing."""

    hint = "fix it and run again"


class StageFailure(RuntimeError):
    """A stage failed. Its ``stage`` is the stage's name, ``cause`` the stage's own error
    and ``scratch`` the folder its partial work is kept in (each None where unknown)."""

    stage: str | None = None
    cause: BaseException | None = None
    scratch: object = None
