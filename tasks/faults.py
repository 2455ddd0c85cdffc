"""Fault injection for crash-safety tests: die at a named point, as a killed worker would.

``RLMEC_KILL_AT=collect:before_commit`` makes the process SIGKILL itself when it reaches
that point. Unset (always, outside tests) it costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

ENV = "RLMEC_KILL_AT"


def kill_point(stage: str, point: str) -> None:
    wanted = os.environ.get(ENV)
    if wanted and f"{stage}:{point}" in wanted.split(","):
        os.kill(os.getpid(), signal.SIGKILL)
