"""Scheduled runs against a real Prefect server on loopback.

`prefect deploy` of the repo's prefect.yaml, `rlmec serve`, and a process worker, each as
the real CLI in a subprocess. Every subprocess gets its own environment dict pointing at
the server; this process talks to it only inside `temporary_settings`, so the global
Prefect settings other tests rely on are never changed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from rlmec_core.processes import free_port
from tests.pipeline_helpers import REPO

pytestmark = pytest.mark.slow

BIN = Path(sys.executable).parent
MICRO = REPO / "configs" / "micro.yaml"
POOL = "rlmec"  # the work pool prefect.yaml names
NIGHTLY = "rlmec-pipeline/nightly"
SERVED = "rlmec-pipeline/served-test"
SERVED_CRON = "0 3 1 1 *"  # never due while the test runs: no stray scheduled run
UPSTREAM = ("data", "bootstrap", "collect")


@dataclass
class Server:
    url: str  # the API URL, ending in /api
    env: dict[str, str]  # environment for client subprocesses (CLI, serve, worker)
    log: Path


def _tail(path: Path, chars: int = 6000) -> str:
    text = path.read_text(errors="replace") if path.exists() else "(no output)"
    return f"--- {path.name} (tail) ---\n{text[-chars:]}"


def _command(script: str) -> list[str]:
    """The console script installed beside this interpreter (the real CLI)."""
    path = BIN / script
    assert path.exists(), f"{path} missing: install the project into this venv"
    return [str(path)]


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    # Own session: teardown can kill the process with the flow-run children it spawned.
    with log.open("w") as out:
        return subprocess.Popen(
            args,
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen, first: int = signal.SIGINT, grace: float = 10) -> None:
    """Ask politely, then kill the whole process group; never waits unbounded."""
    if proc.poll() is None:
        with suppress(ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, first)
            proc.wait(timeout=grace)
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # children left behind in the group, if any
    proc.wait(timeout=10)


def _run(args: list[str], env: dict[str, str], timeout: float) -> subprocess.CompletedProcess:
    result = subprocess.run(
        args,
        cwd=REPO,
        env=env,
        stdin=subprocess.DEVNULL,  # a prompt would fail instead of hanging
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, (
        f"{' '.join(args)} exited {result.returncode}:\n"
        f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    )
    return result


def _wait_healthy(url: str, proc: subprocess.Popen, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"prefect server exited {proc.returncode}\n{_tail(log)}"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    pytest.fail(f"prefect server not healthy after {timeout:.0f} s\n{_tail(log)}")


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("prefect-server")
    port = free_port()
    url = f"http://127.0.0.1:{port}/api"
    base = {k: v for k, v in os.environ.items() if k != "PREFECT_API_URL"}
    server_env = {
        **base,
        "PREFECT_HOME": str(root / "server-home"),
        "PREFECT_UI_ENABLED": "false",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    }
    log = root / "server.log"
    proc = _start(
        [*_command("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        server_env,
        log,
    )
    try:
        _wait_healthy(url, proc, log, timeout=120)
        client_env = {
            **base,
            "PREFECT_API_URL": url,
            "PREFECT_HOME": str(root / "client-home"),
            "PREFECT_LOGGING_LEVEL": "INFO",
            "PREFECT_RUNNER_POLL_FREQUENCY": "1",  # serve picks up triggered runs fast
            "PREFECT_WORKER_QUERY_SECONDS": "1",
        }
        # Where task results go is each test's business (configure_environment or the
        # deployment's job variables), not the suite-wide default from conftest.
        client_env.pop("PREFECT_RESULTS_LOCAL_STORAGE_PATH", None)
        yield Server(url=url, env=client_env, log=log)
    finally:
        _stop(proc, first=signal.SIGTERM, grace=15)


@contextmanager
def api(server: Server):
    """A sync Prefect client on the test server, without touching global settings."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with (
        temporary_settings(updates={PREFECT_API_URL: server.url}),
        get_client(sync_client=True) as client,
    ):
        yield client


def _wait_for_deployment(server: Server, name: str, proc: subprocess.Popen, log: Path):
    from prefect.exceptions import ObjectNotFound

    deadline = time.monotonic() + 120
    with api(server) as client:
        while time.monotonic() < deadline:
            assert proc.poll() is None, f"process exited {proc.returncode}\n{_tail(log)}"
            try:
                return client.read_deployment_by_name(name)
            except ObjectNotFound:
                time.sleep(1)
    pytest.fail(f"deployment {name} not registered within 120 s\n{_tail(log)}")


def _assert_collect_run(workspace: Path, flow_run_id: str) -> None:
    """The run left artifacts, JSON task results and a finished run record."""
    assert any((workspace / "artifacts").iterdir()), "no artifacts written"
    records = [json.loads(p.read_text()) for p in (workspace / "runs").glob("*.json")]
    assert [r["prefect_flow_run_id"] for r in records] == [flow_run_id]
    record = records[0]
    assert record["status"] == "FINISHED"
    statuses = {s["stage"]: s["status"] for s in record["stages"]}
    assert [statuses[s] for s in UPSTREAM] == ["ran"] * len(UPSTREAM)
    assert statuses.get("distill", "not reached") == "not reached"  # `until` reached the flow
    results = [p for p in (workspace / "prefect-results").iterdir() if p.is_file()]
    assert results, "no task results in the workspace"
    for path in results:
        json.loads(path.read_text())  # JSON, never a pickle


@pytest.fixture(scope="module")
def nightly(server: Server):
    """The repo's prefect.yaml deployed non-interactively, as the README says."""
    _run(
        [*_command("prefect"), "work-pool", "create", POOL, "--type", "process"],
        server.env,
        timeout=60,
    )
    _run([*_command("prefect"), "--no-prompt", "deploy", "--all"], server.env, timeout=120)
    with api(server) as client:
        return client.read_deployment_by_name(NIGHTLY)


def test_prefect_deploy_registers_nightly_cron_with_config_parameter(server, nightly):
    assert nightly.work_pool_name == POOL
    [schedule] = nightly.schedules
    assert schedule.active
    assert (schedule.schedule.cron, schedule.schedule.timezone) == ("0 2 * * *", "UTC")
    assert nightly.parameters == {"config_path": "configs/tiny.yaml", "workspace": "workspace"}
    assert "config_path" in nightly.parameter_openapi_schema["properties"]
    # Runs start in the checkout `prefect deploy` ran from, whatever the worker's cwd.
    assert nightly.pull_steps == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(REPO)}}
    ]
    env = nightly.job_variables["env"]
    assert env["PREFECT_RESULTS_DEFAULT_SERIALIZER"] == "json"
    assert env["PREFECT_RESULTS_LOCAL_STORAGE_PATH"] == str(REPO / "workspace/prefect-results")
    with api(server) as client:
        assert client.read_work_pool(POOL).type == "process"


@pytest.fixture
def served(server: Server, tmp_path):
    """`rlmec serve` in the background until the test ends."""
    workspace = tmp_path / "ws"
    log = tmp_path / "serve.log"
    args = [
        *_command("rlmec"),
        "serve",
        "--config",
        str(MICRO),
        "--workspace",
        str(workspace),
        "--cron",
        SERVED_CRON,
        "--name",
        SERVED.split("/")[1],
    ]
    proc = _start(args, server.env, log)
    try:
        yield workspace, _wait_for_deployment(server, SERVED, proc, log), log
    finally:
        _stop(proc)


def test_rlmec_serve_registers_cron_and_runs_a_triggered_flow(server, served):
    from prefect.client.schemas.objects import StateType
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    workspace, deployment, log = served
    [schedule] = deployment.schedules
    assert schedule.schedule.cron == SERVED_CRON
    # Absolute paths, so the served runs do not depend on the server's working directory.
    assert deployment.parameters == {"config_path": str(MICRO), "workspace": str(workspace)}

    with temporary_settings(updates={PREFECT_API_URL: server.url}):
        # Only `until` is given: config and workspace must come from `rlmec serve`.
        flow_run = run_deployment(
            SERVED, parameters={"until": "collect"}, timeout=150, poll_interval=1, as_subflow=False
        )
    assert flow_run.state.type == StateType.COMPLETED, f"{flow_run.state}\n{_tail(log)}"
    _assert_collect_run(workspace, str(flow_run.id))


def test_process_worker_runs_nightly_deployment_with_overridden_config(server, nightly, tmp_path):
    from prefect.client.schemas.objects import StateType

    workspace = tmp_path / "ws"
    queue = "test-worker"  # the nightly schedule's runs go to "default": never picked here
    with api(server) as client:
        client.create_work_queue(queue, work_pool_name=POOL)
        flow_run = client.create_flow_run_from_deployment(
            nightly.id,
            parameters={"config_path": str(MICRO), "workspace": str(workspace), "until": "collect"},
            work_queue_name=queue,
            # prefect.yaml keeps results beside the default workspace; follow the override.
            job_variables={
                "env": {"PREFECT_RESULTS_LOCAL_STORAGE_PATH": str(workspace / "prefect-results")}
            },
        )
    log = tmp_path / "worker.log"
    worker = _start(
        [
            *_command("prefect"),
            "worker",
            "start",
            "--pool",
            POOL,
            "--work-queue",
            queue,
            "--run-once",
            "--install-policy",
            "never",
        ],
        server.env,
        log,
    )
    try:
        worker.wait(timeout=150)  # --run-once returns once the runs it picked up finish
    except subprocess.TimeoutExpired:
        pytest.fail(f"worker still running after 150 s\n{_tail(log)}")
    finally:
        _stop(worker)
    with api(server) as client:
        state = client.read_flow_run(flow_run.id).state
    assert state.type == StateType.COMPLETED, f"{state}\n{_tail(log)}"
    _assert_collect_run(workspace, str(flow_run.id))
