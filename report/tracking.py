"""What the report reads from MLflow: the parent run's tags, its stage runs and their
metric histories. The client is opened on first use, so a page without MLflow data still
renders, and a missing sqlite store is never created by reading it."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from report.unavailable import Unavailable


class MlflowReader:
    def __init__(self, uri: str | None, parent_run_id: str):
        self.uri = uri
        self.parent_run_id = parent_run_id
        self._client: Any = None
        self._children: dict[str, Any] | None = None

    def client(self) -> Any:
        if self._client is None:
            if self.uri is None:
                raise Unavailable("no MLflow tracking URI")
            if self.uri.startswith("sqlite:///"):
                db = Path(self.uri.removeprefix("sqlite:///"))
                if not db.is_file():  # opening it would create an empty store
                    raise Unavailable(f"no MLflow store at {db}")
            from mlflow.tracking import MlflowClient

            self._client = MlflowClient(tracking_uri=self.uri)
        return self._client

    def parent_tag(self, key: str) -> str | None:
        return self.client().get_run(self.parent_run_id).data.tags.get(key)

    def children(self) -> dict[str, Any]:
        """The parent run's child runs, by stage label (the run name)."""
        if self._children is None:
            client = self.client()
            parent = client.get_run(self.parent_run_id)
            runs = client.search_runs(
                [parent.info.experiment_id],
                filter_string=f"tags.mlflow.parentRunId = '{self.parent_run_id}'",
                max_results=1000,
                order_by=["attributes.start_time ASC"],  # a retried stage: the last try wins
            )
            self._children = {
                r.info.run_name or r.data.tags.get("rlmec.stage", ""): r for r in runs
            }
        return self._children

    def stage_error(self, label: str) -> str | None:
        """The error a failed stage's run recorded, if any."""
        try:
            child = self.children().get(label) or self.children().get(label.split("[", 1)[0])
        except Exception:  # the error is extra detail, never worth failing for
            return None
        return child.data.tags.get("rlmec.error") if child is not None else None

    def metric_series(self, run_id: str, key: str) -> list[tuple[int, float]]:
        """A metric's history by step; a step logged twice (a resumed run) keeps its last
        value, and non-finite values are left out."""
        history = self.client().get_metric_history(run_id, key)
        by_step: dict[int, float] = {}
        for m in sorted(history, key=lambda m: (m.step, m.timestamp)):
            if math.isfinite(m.value):
                by_step[int(m.step)] = float(m.value)
        return sorted(by_step.items())
