"""The undecorated function of each stage, by stage name.

``tasks.stage`` fills it when a stage module is imported; ``tasks.time_limit`` reads it in
the child process that runs a time-limited stage. Neither imports the other for it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_FUNCTIONS: dict[str, Callable[..., Any]] = {}


def register_stage_function(stage: str, fn: Callable[..., Any]) -> None:
    _FUNCTIONS[stage] = fn


def raw_stage_function(stage: str) -> Callable[..., Any]:
    """The undecorated function of a stage (what a time-limited child process runs)."""
    return _FUNCTIONS[stage]


def stage_module(stage: str) -> str:
    """The module that defines the stage: importing it registers the stage's function."""
    return _FUNCTIONS[stage].__module__
