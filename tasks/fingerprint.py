"""A fingerprint of the code a stage runs, so editing that code invalidates its cache.

Prefect's TASK_SOURCE policy sees only the task function's own lines; a stage's
behaviour lives in rlmec_core, so we hash the source files of the modules it names.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Iterable
from functools import cache
from pathlib import Path


@cache
def _module_source(module: str) -> bytes:
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ValueError(f"cannot fingerprint module {module!r}: not importable")
    return Path(spec.origin).read_bytes()


def code_fingerprint(modules: Iterable[str]) -> str:
    digest = hashlib.sha256()
    for module in sorted(set(modules)):
        digest.update(module.encode() + b"\0" + _module_source(module) + b"\0")
    return digest.hexdigest()[:16]
