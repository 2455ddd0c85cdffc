"""Locks between processes sharing a workspace: one computes a stage, the others wait and
then take its result from the cache; one creates the MLflow store, the others wait.

They are ``filelock`` locks on ``flock(2)``, so the kernel releases a lock when its holder
dies: a rerun after ``kill -9`` never waits on a dead run's lock (Prefect's
``FileSystemLockManager``, whose interface ``StageLockManager`` keeps, marks a lock by a
file's existence, which a killed holder leaves behind for ever).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
from filelock import FileLock, Timeout
from prefect.locking.filesystem import FileSystemLockManager

logger = logging.getLogger(__name__)

POLL_SECONDS = 0.2
LOCKS_FOLDER = ".locks"
# "No timeout" as a finite one: for an unlimited wait filelock refuses a lock another holder
# took in the same thread, and anyio's reused worker threads wait for each other's locks.
_NO_TIMEOUT_S = 10 * 365 * 24 * 3600.0

# Held locks of this process, shared by every copy of a manager (Prefect deep-copies cache
# policies): lock file -> (holder, lock).
_held: dict[str, tuple[str, FileLock]] = {}
_guard = threading.Lock()


def _flock(path: Path | str) -> FileLock:
    # Never the soft (existence) fallback: a killed holder would leave it taken for ever.
    # Not thread-local: Prefect may release a lock from another thread than took it.
    return FileLock(path, thread_local=False, fallback_to_soft=False, poll_interval=POLL_SECONDS)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if needed) for the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with _flock(path):
        yield


class StageLockManager(FileSystemLockManager):
    """Prefect's lock-manager interface over ``FileLock`` on ``<key>.lock`` files.

    The folder defaults to ``.locks`` in Prefect's result storage, read when a lock is
    taken: the cached results it guards live there, so every process that shares them
    shares the locks.
    """

    def __init__(self, lock_files_directory: Path | None = None) -> None:
        self._directory = lock_files_directory
        self._locks = {}

    @property
    def lock_files_directory(self) -> Path:  # type: ignore[override]
        if self._directory is not None:
            return self._directory
        from prefect.settings import get_current_settings

        results = get_current_settings().results.local_storage_path
        return Path(results).expanduser().resolve() / LOCKS_FOLDER

    def _path(self, key: str) -> str:
        return str(self.lock_files_directory / f"{key}.lock")

    def acquire_lock(
        self,
        key: str,
        holder: str,
        acquire_timeout: float | None = None,
        hold_timeout: float | None = None,  # no expiry: the lock ends with its holder
    ) -> bool:
        path = self._path(key)
        with _guard:
            if _held.get(path, ("",))[0] == holder:
                return True
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        lock = _flock(path)
        try:
            lock.acquire(blocking=False)
        except Timeout:
            logger.info("waiting for another run computing %s (lock %s)", key, path)
            try:
                lock.acquire(timeout=_NO_TIMEOUT_S if acquire_timeout is None else acquire_timeout)
            except Timeout:
                return False
        with _guard:
            _held[path] = (holder, lock)
        return True

    async def aacquire_lock(
        self,
        key: str,
        holder: str,
        acquire_timeout: float | None = None,
        hold_timeout: float | None = None,
    ) -> bool:
        return await anyio.to_thread.run_sync(
            self.acquire_lock, key, holder, acquire_timeout, hold_timeout
        )

    def release_lock(self, key: str, holder: str) -> None:
        path = self._path(key)
        with _guard:
            if _held.get(path, ("",))[0] != holder:
                raise ValueError(f"No lock held by {holder} for transaction with key {key}")
            _, lock = _held.pop(path)
        lock.release()

    def is_locked(self, key: str, use_cache: bool = False) -> bool:
        path = self._path(key)
        with _guard:
            if path in _held:
                return True
        if not os.path.exists(path):
            return False
        probe = _flock(path)
        try:
            probe.acquire(blocking=False)
        except Timeout:
            return True
        probe.release()
        return False

    def is_lock_holder(self, key: str, holder: str) -> bool:
        with _guard:
            return _held.get(self._path(key), ("",))[0] == holder

    def wait_for_lock(self, key: str, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_locked(key):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(POLL_SECONDS)
        return True

    async def await_for_lock(self, key: str, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.is_locked(key):
            if deadline is not None and time.monotonic() >= deadline:
                return False
            await anyio.sleep(POLL_SECONDS)
        return True
