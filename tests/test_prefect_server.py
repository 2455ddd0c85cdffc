"""The temporary Prefect server `rlmec run` starts before importing the pipeline.

Each case runs in a fresh interpreter: the early start only applies before Prefect has
read its settings, which this test process has long done.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.pipeline_helpers import REPO

pytestmark = pytest.mark.slow


def run_fresh(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_flows_use_the_early_server_and_it_stops_at_exit():
    result = run_fresh(
        """
        from flows.prefect_server import start_temporary_server, wait_until_ready, _healthy
        server = start_temporary_server()
        wait_until_ready(server)
        from prefect import flow
        from prefect.settings import get_current_settings

        @flow
        def hello():
            return get_current_settings().api.url

        assert hello() == server.api_url and _healthy(server.api_url)
        print(server.api_url)
        """
    )
    assert result.returncode == 0, result.stderr[-3000:]
    from flows.prefect_server import _healthy

    assert not _healthy(result.stdout.split()[-1])  # stopped when the process ended


def test_a_server_that_cannot_start_hands_the_start_back_to_prefect():
    result = run_fresh(
        """
        import subprocess, sys
        from flows import prefect_server

        # A server that exits at once, as uvicorn does when its port was taken meanwhile.
        popen = subprocess.Popen
        subprocess.Popen = lambda *args, **kwargs: popen([sys.executable, "-c", "exit(3)"])
        server = prefect_server.start_temporary_server()
        assert not server.wait_until_ready()
        from prefect.settings import get_current_settings

        assert get_current_settings().api.url is None  # Prefect starts its own, as without us
        """
    )
    assert result.returncode == 0, result.stderr[-3000:]
