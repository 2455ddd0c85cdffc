"""A fingerprint of the code a stage runs, so editing that code invalidates its cache.

Prefect's TASK_SOURCE policy sees only the task function's own lines, and a hand-kept
list of modules goes stale as soon as someone adds an import. So the code a stage runs
is derived from the code itself: the static import closure of the stage's module inside
the project's own packages, found by parsing every ``import`` statement with ``ast``
(lazy imports inside functions included). Third-party code is pinned by the
environment, not fingerprinted here.
"""

from __future__ import annotations

import ast
import hashlib
import tomllib
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path

# The folder holding the project's packages (a copy of the project fingerprints its own).
PROJECT_ROOT = Path(__file__).resolve().parents[1]
# Used only where pyproject.toml is absent (an installed wheel, not a checkout).
FALLBACK_PACKAGES: tuple[str, ...] = ("rlmec_core", "storage", "tasks", "flows")


@cache
def project_packages(root: Path = PROJECT_ROOT) -> tuple[str, ...]:
    """The top-level packages pyproject's ``[tool.setuptools.packages.find] include`` names."""
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file():
        return FALLBACK_PACKAGES
    config = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    include = config["tool"]["setuptools"]["packages"]["find"]["include"]
    return tuple(sorted({pattern.split(".")[0].rstrip("*") for pattern in include}))


def module_file(module: str, root: Path) -> Path | None:
    """The source file of a dotted module name under ``root``, or None if it is no module."""
    base = root.joinpath(*module.split("."))
    for candidate in (base / "__init__.py", base.with_suffix(".py")):
        if candidate.is_file():
            return candidate
    return None


def _package_of(module: str, path: Path) -> str:
    """The package a module's relative imports start from."""
    return module if path.name == "__init__.py" else module.rpartition(".")[0]


def _resolve_relative(package: str, level: int, name: str | None) -> str:
    parts = package.split(".") if package else []
    if level > len(parts):
        raise ImportError(f"relative import beyond the top-level package in {package!r}")
    base = parts[: len(parts) - (level - 1)]
    return ".".join([*base, *([name] if name else [])])


def imported_names(module: str, path: Path, root: Path) -> Iterator[str]:
    """Every module name ``module`` may import: its own ``import`` statements, anywhere.

    ``from pkg import name`` yields ``pkg`` and, when ``name`` is a submodule, ``pkg.name``.
    """
    tree = ast.parse(path.read_bytes(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = _resolve_relative(_package_of(module, path), node.level, node.module)
            yield base
            for alias in node.names:
                submodule = ".".join(filter(None, (base, alias.name)))
                if alias.name != "*" and module_file(submodule, root):
                    yield submodule


def _with_parent_packages(module: str) -> Iterator[str]:
    """Importing ``a.b.c`` runs ``a/__init__.py`` and ``a/b/__init__.py`` first."""
    parts = module.split(".")
    for depth in range(1, len(parts) + 1):
        yield ".".join(parts[:depth])


def import_closure(
    module: str, root: Path = PROJECT_ROOT, packages: Iterable[str] | None = None
) -> list[str]:
    """``module`` and every module of ``packages`` it imports, directly or not, sorted.

    ``packages`` defaults to the project's own (see ``project_packages``).
    """
    own = tuple(packages) if packages is not None else project_packages(root)
    return sorted(closure_files(module, root, own))


def closure_files(module: str, root: Path, packages: tuple[str, ...]) -> dict[str, Path]:
    """{module name: source file} of ``module``'s import closure inside ``packages``.

    ``module`` itself need not be in ``packages`` (a test's stage is not); names that are
    no module under ``root`` (a function imported from a module, third-party code) are
    left out.
    """
    start = module_file(module, root)
    if start is None:
        raise ValueError(f"cannot fingerprint module {module!r}: no source file under {root}")
    found: dict[str, Path] = {module: start}
    queue = [module]

    def visit(name: str) -> None:
        if name.split(".")[0] not in packages:
            return
        for candidate in _with_parent_packages(name):
            path = module_file(candidate, root)
            if candidate not in found and path is not None:
                found[candidate] = path
                queue.append(candidate)

    visit(module)
    while queue:
        current = queue.pop()
        for name in imported_names(current, found[current], root):
            visit(name)
    return found


@cache
def project_closure(module: str) -> dict[str, Path]:
    """{module: file} of ``module``'s import closure in this project, found once per process
    (the code fingerprint hashes these files; ``tasks.config_reads`` searches them)."""
    return closure_files(module, PROJECT_ROOT, project_packages())


def code_closure(module: str) -> list[str]:
    """The modules a stage module's fingerprint covers (cached once per process)."""
    return sorted(project_closure(module))


def fingerprint_files(paths: Iterable[Path], root: Path) -> str:
    """A hash of the files' paths relative to ``root`` and their bytes, in path order."""
    digest = hashlib.sha256()
    for relative in sorted(p.relative_to(root).as_posix() for p in paths):
        digest.update(relative.encode() + b"\0" + (root / relative).read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def code_fingerprint(module: str) -> str:
    """The fingerprint of ``module``'s import closure in this project.

    The closure is cached, the bytes are read on every call: a cache key always describes
    the files as they are on disk now.
    """
    return fingerprint_files(project_closure(module).values(), PROJECT_ROOT)
