"""Which config sections a stage's code reads: the shared part of its cache key.

A stage that reads a section its key leaves out reuses a stale artifact when that section
changes, and a hand-kept list of those sections goes stale as soon as someone reads one
more. So the list is derived from the code, as its fingerprint is (``tasks.fingerprint``):
the modules of the stage's import closure are searched for ``<...>config.<section>``.

The search relies on one convention: the pipeline config is only ever named ``config`` or
``<something>config``. What it can see of a breach stops the derivation with its file and
line: a parameter or variable annotated ``PipelineConfig``, or a name or attribute bound to
a run context's ``.config``, under another name. What it cannot see: the config passed to
an unannotated parameter of another name (annotate such a parameter).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

from rlmec_core.config import PipelineConfig
from tasks.fingerprint import project_closure

SECTIONS = frozenset(PipelineConfig.model_fields)
# In no stage's shared key: run (its seed is in every key already) and tracking (where runs
# are logged, not what a stage computes).
NEVER_SHARED = frozenset({"run", "tracking"})


class ConfigNamingError(ValueError):
    """The config under a name the search cannot follow: its sections would be missed."""


def _name(node: ast.AST) -> str:
    """The name ``node`` is known by: ``x`` for ``x`` and ``….x``; "" for anything else."""
    return node.id if isinstance(node, ast.Name) else getattr(node, "attr", "")


def _is_pipeline_config(value: ast.AST | None, annotation: ast.AST | None) -> bool:
    """An annotation naming ``PipelineConfig``, or a value ``<ctx>.config`` (the run
    context's; a model's ``.config`` is another thing)."""
    if annotation is not None and "PipelineConfig" in ast.unparse(annotation):
        return True
    if not (isinstance(value, ast.Attribute) and value.attr == "config"):
        return False
    return _name(value.value).endswith(("ctx", "context"))


def _misnamed_config(node: ast.AST) -> str | None:
    """The name ``node`` gives the pipeline config, when the search cannot follow it."""
    if isinstance(node, ast.arg):
        bound, targets = _is_pipeline_config(None, node.annotation), [node.arg]
    elif isinstance(node, ast.Assign):
        bound, targets = _is_pipeline_config(node.value, None), node.targets
    elif isinstance(node, ast.AnnAssign | ast.NamedExpr):
        annotation = getattr(node, "annotation", None)
        bound, targets = _is_pipeline_config(node.value, annotation), [node.target]
    else:
        return None
    if not bound:
        return None
    names = [t if isinstance(t, str) else _name(t) for t in targets]
    return next((n for n in names if n and not n.endswith("config")), None)


def sections_read(path: Path) -> set[str]:
    """The top-level sections ``path`` reads off an object named ``config``/``*config``."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        misnamed = _misnamed_config(node)
        if misnamed is not None:
            raise ConfigNamingError(
                f"{path}:{node.lineno}: {misnamed!r} holds the pipeline config; name it "
                "'config' (or '<something>config') so that its reads are part of the cache key"
            )
        if (
            isinstance(node, ast.Attribute)
            and node.attr in SECTIONS
            and _name(node.value).endswith("config")
        ):
            found.add(node.attr)
    return found


@cache
def shared_sections(module: str, stage: str) -> tuple[str, ...]:
    """The sections besides its own that the code of ``stage`` (defined in ``module``)
    reads, sorted; found once per process, like the module's import closure."""
    files = project_closure(module)
    read = set().union(
        *(sections_read(path) for name, path in files.items() if name != "rlmec_core.config")
    )
    return tuple(sorted(read - {stage} - NEVER_SHARED))


def stage_hash(config: PipelineConfig, stage: str, module: str | None = None) -> str:
    """``config.stage_hash`` with the sections ``stage``'s code reads (``module``: where
    the stage is defined; the pipeline's own ``tasks.<stage>`` unless given)."""
    return config.stage_hash(stage, shared_sections(module or f"tasks.{stage}", stage))
