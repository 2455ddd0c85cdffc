"""A stage's log lines, the library's included, become its Prefect task run's logs,
whether the stage runs in the flow's process or in a time-limited child process."""

from __future__ import annotations

import pytest
from prefect import flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import LogFilter, LogFilterTaskRunId
from prefect.logging.handlers import APILogHandler

from flows.runner import pipeline_run
from rlmec_core.config import load_config
from storage.store import ArtifactStore
from tasks.stage_registry import raw_stage_function, register_stage_function
from tests.chatty_stage import MESSAGE, chatty_task, say_something
from tests.pipeline_helpers import REPO

pytestmark = pytest.mark.slow


@pytest.fixture
def chatty_as_data():
    """The chatty function stands in for `data` in the stage registry, then gives it back."""
    import tasks.data  # noqa: F401  (registers the real one first)

    real = raw_stage_function("data")
    register_stage_function("data", say_something)
    yield
    register_stage_function("data", real)


@flow(name="stage-log-test", persist_result=False)
def run_chatty(timeout_seconds: float | None, workspace: str) -> dict:
    config = load_config(REPO / "configs" / "micro.yaml")
    data = config.data.model_copy(update={"timeout_seconds": timeout_seconds})
    config = config.model_copy(update={"data": data})
    with pipeline_run(config, workspace, "micro.yaml") as stages:
        return stages.run(chatty_task, {})


def task_run_logs(task_run_id: str) -> list[str]:
    APILogHandler().flush()  # logs reach the API in batches: send what is queued
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(task_run_id=LogFilterTaskRunId(any_=[task_run_id]))
        )
    return [f"{log.name}: {log.message}" for log in logs]


@pytest.mark.parametrize("timeout_seconds", [None, 120], ids=["in-process", "child-process"])
def test_library_log_lines_are_the_task_runs_logs(
    tmp_path, caplog, chatty_as_data, timeout_seconds
):
    caplog.set_level("INFO", logger="prefect.task_runs")  # the suite runs Prefect at WARNING
    ref = run_chatty(timeout_seconds, str(tmp_path / "ws"))
    manifest = ArtifactStore(tmp_path / "ws").manifest(ref["id"])
    logs = task_run_logs(manifest.prefect_task_run_id)
    assert f"rlmec_core.chatty: {MESSAGE}" in logs, logs
    assert any("wrote artifact" in line for line in logs), logs  # the task wrapper's own line
