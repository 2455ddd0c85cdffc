"""A content-addressed artifact store under a workspace directory.

An artifact is a folder ``artifacts/<id>/`` whose id is the hash of its files. It is
written in ``.staging/`` first and renamed into place with its manifest already inside,
so a folder under ``artifacts/`` with a manifest is always complete; a writer killed
mid-write leaves only staging debris, which is never read and is swept by ``sweep_staging``.

Every commit also leaves a production record in ``productions/<id>/``, outside the hashed
folder: identical content made by several runs is one artifact with several productions.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from rlmec_core.durability import fsync_dir
from storage.atomic import write_json_atomic
from storage.manifest import MANIFEST_NAME, Manifest, Production, Provenance, run_fields

ID_LENGTH = 20


class ArtifactNotFoundError(KeyError):
    def __str__(self) -> str:  # KeyError quotes its message; we want it readable
        return str(self.args[0])


def hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def hash_tree(root: Path) -> tuple[str, dict[str, str]]:
    """The content id of a folder (its relative paths and file bytes) and per-file hashes."""
    files = {
        p.relative_to(root).as_posix(): hash_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MANIFEST_NAME
    }
    if not files:
        raise ValueError(f"{root}: an artifact must contain at least one file")
    digest = hashlib.sha256()
    for name, file_hash in files.items():
        digest.update(f"{name}\0{file_hash}\n".encode())
    return digest.hexdigest()[:ID_LENGTH], files


class ArtifactStore:
    def __init__(self, workspace: str | Path):
        self.workspace = Path(workspace).resolve()
        self.root = self.workspace / "artifacts"
        self.staging_root = self.workspace / ".staging"
        self.productions_root = self.workspace / "productions"
        self.root.mkdir(parents=True, exist_ok=True)
        self.staging_root.mkdir(parents=True, exist_ok=True)

    # -- writing -------------------------------------------------------------
    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A fresh folder to write an artifact into; removed if the block fails."""
        path = self.staging_root / f"{os.getpid()}-{uuid.uuid4().hex}"
        path.mkdir(parents=True)
        try:
            yield path
        finally:
            shutil.rmtree(path, ignore_errors=True)

    def commit(self, staged: Path, provenance: Provenance) -> Manifest:
        """Move a staged folder into the store under its content id, with its manifest."""
        artifact_id, files = hash_tree(staged)
        now = datetime.now(UTC)
        production = Production.of(artifact_id, provenance, now.isoformat(timespec="seconds"))
        final = self.root / artifact_id
        if (final / MANIFEST_NAME).is_file():
            # Same content already stored (a deterministic re-run, or another run from other
            # parents): the manifest stays the first production, this one is recorded beside.
            self._record_production(production, now)
            return self.manifest(artifact_id)
        manifest = Manifest(
            id=artifact_id,
            parents=list(provenance.parents),
            created_at=production.created_at,
            files=files,
            extra=dict(provenance.extra),
            **run_fields(provenance),
        )
        write_json_atomic(staged / MANIFEST_NAME, manifest.to_json())
        # Move the whole folder aside first so `staged` (owned by `staging()`) is free
        # to be cleaned up, then rename atomically into place. Named by pid like every
        # staging folder, so another process's sweep never takes it for debris.
        ready = self.staging_root / f"{os.getpid()}-ready-{uuid.uuid4().hex}"
        os.rename(staged, ready)
        staged.mkdir()
        if final.exists() and not (final / MANIFEST_NAME).is_file():
            shutil.rmtree(final)  # a leftover without manifest cannot exist, but be safe
        try:
            os.rename(ready, final)
        except OSError:
            if not (final / MANIFEST_NAME).is_file():
                raise
            # Another process committed the same content meanwhile: keep its copy.
            shutil.rmtree(ready, ignore_errors=True)
            self._record_production(production, now)
            return self.manifest(artifact_id)
        fsync_dir(self.root)
        self._record_production(production, now)
        return manifest

    def _record_production(self, production: Production, now: datetime) -> None:
        # Named by time first, so the folder lists oldest first; the uuid keeps two
        # producers in the same microsecond apart.
        name = f"{now:%Y%m%dT%H%M%S%fZ}-{uuid.uuid4().hex}.json"
        write_json_atomic(
            self.productions_root / production.artifact_id / name, production.to_json()
        )

    def sweep_staging(self) -> int:
        """Remove staging folders left by killed writers of *other* processes."""
        removed = 0
        for path in self.staging_root.iterdir():
            pid = path.name.split("-", 1)[0]
            if pid.isdigit() and _process_alive(int(pid)):
                continue
            shutil.rmtree(path, ignore_errors=True)
            removed += 1
        return removed

    # -- reading -------------------------------------------------------------
    def exists(self, artifact_id: str) -> bool:
        return (self.root / artifact_id / MANIFEST_NAME).is_file()

    def path(self, artifact_id: str) -> Path:
        if not self.exists(artifact_id):
            raise ArtifactNotFoundError(
                f"artifact {artifact_id} is not in the store at {self.root}"
            )
        return self.root / artifact_id

    def manifest(self, artifact_id: str) -> Manifest:
        return Manifest.read(self.path(artifact_id) / MANIFEST_NAME)

    def ids(self) -> list[str]:
        return sorted(p.name for p in self.root.iterdir() if (p / MANIFEST_NAME).is_file())

    def resolve(self, prefix: str) -> str:
        """A full id from a unique prefix, as users copy short ids from the console."""
        matches = [i for i in self.ids() if i.startswith(prefix)]
        if len(matches) != 1:
            what = "no artifact" if not matches else f"{len(matches)} artifacts"
            raise ArtifactNotFoundError(f"{what} in {self.root} match id {prefix!r}")
        return matches[0]

    def productions(
        self, artifact_id: str, warn: Callable[[str], None] | None = None
    ) -> list[Production]:
        """Every run that committed this artifact's content, oldest (the manifest's) first.

        With ``warn``, a production record that cannot be read is skipped (and named)."""
        origin = Production.origin_of(self.manifest(artifact_id))
        folder = self.productions_root / artifact_id
        records = []
        for path in sorted(folder.glob("*.json")):
            try:
                records.append(Production.read(path))
            except ValueError as exc:
                if warn is None:
                    raise
                warn(f"skipping {exc}")
        # An artifact stored before productions were recorded, or whose writer died between
        # the rename and the record, still shows its origin.
        if origin not in records:
            records.insert(0, origin)
        return records

    def lineage(
        self, artifact_id: str, warn: Callable[[str], None] | None = None
    ) -> list[Manifest]:
        """The artifact and all its ancestors, nearest first, each once.

        Ancestors are the parents of every production, not only of the manifest's. With
        ``warn``, an ancestor whose manifest or production record cannot be read is
        skipped and ``warn`` is told which; without it, that raises ValueError.
        """
        seen: dict[str, Manifest] = {}
        skipped: set[str] = set()
        queue = [artifact_id]
        while queue:
            current = queue.pop(0)
            if current in seen or current in skipped:
                continue
            try:
                seen[current] = self.manifest(current)
                productions = self.productions(current, warn)
            except (ValueError, ArtifactNotFoundError) as exc:
                if warn is None or current == artifact_id:
                    raise
                warn(f"skipping {current}: {exc}")
                seen.pop(current, None)
                skipped.add(current)
                continue
            for production in productions:
                queue.extend(production.parents)
        return list(seen.values())


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
