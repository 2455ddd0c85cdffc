"""Prefect's temporary API server for one `rlmec` command, started before the heavy imports.

With no API URL configured, Prefect starts a temporary server (uvicorn in a subprocess)
when a flow first needs the API: only after this process has imported the pipeline
(torch, transformers, MLflow) and then Prefect's server code, one after the other. The
same server started at the top of the command instead boots on the other core while this
process imports, and this process never imports the server code: a fully cached
`rlmec run` waits for the slower of the two, not for their sum.

When Prefect is configured with a server, or anything goes wrong (a port taken, a slow
start), Prefect behaves exactly as without this module.
"""

from __future__ import annotations

import atexit
import fcntl
import functools
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

from rlmec_core.processes import die_with_parent, free_port

PARENT_ENV = "RLMEC_SERVER_PARENT_PID"
# SIGKILL: once the `rlmec` that started it is gone, the server serves no one.
_die_with_rlmec = functools.partial(die_with_parent, signal.SIGKILL)


def create_temporary_app():
    """The uvicorn factory: Prefect's API app as Prefect's own temporary server builds it
    (no UI, only the services an ephemeral server runs)."""
    _die_with_rlmec()  # also when Popen could not ask for it (threads were running)
    if os.environ.get(PARENT_ENV) not in (None, str(os.getppid())):
        os._exit(0)  # the `rlmec` that started it is already gone
    from prefect.server.api.server import create_app

    return create_app(ephemeral=True, final=True)


class TemporaryServer:
    def __init__(
        self,
        process: subprocess.Popen,
        port: int,
        startup_timeout: float,
        first_start: int | None = None,
    ):
        self.process = process
        self.api_url = f"http://127.0.0.1:{port}/api"
        self.startup_timeout = startup_timeout
        self._first_start = first_start  # the held lock of a new database, see below

    def wait_until_ready(self) -> bool:
        """Block until the API answers; on failure stop it and let Prefect start its own."""
        deadline = time.monotonic() + self.startup_timeout
        try:
            while time.monotonic() < deadline and self.process.poll() is None:
                if _healthy(self.api_url):
                    return True
                time.sleep(0.05)
        finally:
            if self._first_start is not None:
                os.close(self._first_start)  # the database is made: others may start
                self._first_start = None
        self.stop()
        _use_api_url(None)
        return False

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_temporary_server() -> TemporaryServer | None:
    """Start the server now if this process's flows would get a temporary one; None when
    Prefect is configured otherwise or its settings were read before this call."""
    if "prefect" in sys.modules:
        return None  # an in-process caller (tests): its settings and server are in place
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        return None
    first_start = _lock_new_database(settings)
    port = free_port()
    process = subprocess.Popen(
        [
            *(sys.executable, "-m", "uvicorn", "--factory", f"{__name__}:create_temporary_app"),
            *("--host", "127.0.0.1", "--port", str(port), "--log-level", "error"),
        ],
        env={
            **os.environ,
            **settings.to_environment_variables(exclude_unset=True),
            PARENT_ENV: str(os.getpid()),
        },
        # Its errors (a full disk...) reach the user as rlmec's last line; --debug shows them.
        stdout=None if os.environ.get("RLMEC_DEBUG") else subprocess.DEVNULL,
        stderr=None if os.environ.get("RLMEC_DEBUG") else subprocess.DEVNULL,
        # A killed `rlmec` leaves no server behind (preexec_fn is unsafe once threads run).
        preexec_fn=_die_with_rlmec if threading.active_count() == 1 else None,
    )
    server = TemporaryServer(
        process, port, settings.server.ephemeral.startup_timeout_seconds, first_start
    )
    atexit.register(server.stop)
    _use_api_url(server.api_url)
    return server


def _lock_new_database(settings) -> int | None:
    """Two servers creating one new sqlite database at once collide on its tables: while
    the database does not exist, the first `rlmec` holds a lock until its server answers,
    and any other waits for it before starting its own."""
    url = settings.server.database.connection_url
    url = url.get_secret_value() if hasattr(url, "get_secret_value") else str(url or "")
    if not url.startswith("sqlite") or ":///" not in url:
        return None
    database = Path(url.split(":///", 1)[1])
    if database.exists():
        return None
    try:
        database.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(f"{database}.rlmec-start.lock", os.O_RDWR | os.O_CREAT, 0o666)
    except OSError:
        return None  # Prefect reports what is wrong with its home itself
    fcntl.flock(fd, fcntl.LOCK_EX)
    if database.exists():  # made while this process waited
        os.close(fd)
        return None
    return fd


def wait_until_ready(server: TemporaryServer | None) -> None:
    """Before the first flow: the early server answers, or Prefect will start its own."""
    if server is not None:
        server.wait_until_ready()


def _use_api_url(url: str | None) -> None:
    """Point this process's Prefect settings at ``url`` (None: back to a temporary one)."""
    from prefect.context import refresh_global_settings_context

    if url is None:
        os.environ.pop("PREFECT_API_URL", None)
    else:
        os.environ["PREFECT_API_URL"] = url
    refresh_global_settings_context()


# Loopback: never through a proxy named in the environment.
_DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def _healthy(api_url: str) -> bool:
    try:
        with _DIRECT.open(f"{api_url}/health", timeout=1) as response:
            return response.status == 200
    except OSError:
        return False
