"""What `rlmec` shows on the console while a flow runs: Prefect's and MLflow's own reports of
an error are left to the last `rlmec:` line, tracebacks to ``--debug``."""

from __future__ import annotations

import logging
import sys


class QuietConsole(logging.Filter):
    """The console without Prefect's and MLflow's reports of an error (the last `rlmec:`
    line says it once) and without tracebacks, unless ``--debug``.

    On the console handlers only: Prefect's API handler, which runs first, still sends
    the full records, tracebacks included, to the Prefect UI.
    """

    debug = False

    def filter(self, record: logging.LogRecord) -> bool:
        if self.debug:
            return True
        if record.name.startswith(("prefect.task_runs", "prefect.flow_runs", "mlflow")) and (
            record.levelno >= logging.ERROR
            or record.getMessage().startswith(
                ("Finished in state Failed", "Finished in state Crashed")
            )
        ):
            return False
        record.exc_info = record.exc_text = None
        return True


_QUIET = QuietConsole()


def quiet_console(debug: bool) -> None:
    """Put the filter on Prefect's console handlers and MLflow's stream handler."""
    from prefect.logging.handlers import PrefectConsoleHandler

    _QUIET.debug = debug
    consoles = [h for h in logging.getLogger().handlers if isinstance(h, PrefectConsoleHandler)]
    consoles += logging.getLogger("mlflow").handlers  # MLflow logs to its own stream handler
    for handler in consoles:
        if _QUIET not in handler.filters:
            handler.addFilter(_QUIET)


def warn(message: str) -> None:
    print(f"rlmec: warning: {message}", file=sys.stderr)
