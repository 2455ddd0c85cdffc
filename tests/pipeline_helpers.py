"""Run the real `rlmec` CLI in a subprocess and read its stage table."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def run_cli(
    *args: str, prefect_home: Path, timeout: float = 600, log_level: str = "WARNING"
) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_LOGGING_LEVEL": log_level,
    }
    return subprocess.run(
        [sys.executable, "-m", "flows.cli", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_in_process(*args: str) -> subprocess.CompletedProcess:
    """The same CLI entry point, in this process: one Prefect server serves every run."""
    import contextlib
    import io

    from flows.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(list(args))
    return subprocess.CompletedProcess(args, code, out.getvalue(), "")


def stage_table(result: subprocess.CompletedProcess) -> dict[str, dict]:
    """{stage: report} from the JSON table `rlmec run --json` prints last."""
    assert result.returncode == 0, (
        f"rlmec failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    )
    start = result.stdout.rindex("\n[") + 1 if "\n[" in result.stdout else result.stdout.index("[")
    return {report["stage"]: report for report in json.loads(result.stdout[start:])}


def markdown_artifacts(flow_run_id: str) -> dict[str, str]:
    """{key: markdown} of the Prefect markdown artifacts a flow run created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

    run_filter = ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[flow_run_id]))
    with get_client(sync_client=True) as client:
        artifacts = client.read_artifacts(artifact_filter=run_filter)
    return {a.key: a.data for a in artifacts if a.type == "markdown"}
