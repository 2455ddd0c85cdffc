"""MLflow bookkeeping: one parent run per pipeline run, one child run per stage.

Children are linked to the parent by its run id (the ``mlflow.parentRunId`` tag), not by
MLflow's thread-local active run, so stages on other threads, processes or workers nest.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

_BAD_NAME_CHARS = re.compile(r"[^A-Za-z0-9_\-. /]")
MAX_PARAM_LENGTH = 6000


def default_tracking_uri(workspace: Path) -> str:
    return f"sqlite:///{(workspace / 'mlflow.db').resolve()}"


def clean_metric_name(name: str) -> str:
    """MLflow accepts letters, digits, ``_ - . /`` and spaces in names."""
    return _BAD_NAME_CHARS.sub("_", name)


def flatten(payload: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    for key, value in payload.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, f"{name}."))
        else:
            flat[name] = str(value)[:MAX_PARAM_LENGTH]
    return flat


def ensure_experiment(client: MlflowClient, name: str, workspace: Path) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    # Without an explicit location a sqlite-backed store writes artifacts to ./mlruns.
    location = (workspace / "mlartifacts").resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def log_metrics(
    client: MlflowClient,
    run_id: str,
    metrics: Mapping[str, float],
    series: Mapping[str, list[tuple[int, float]]] | None = None,
) -> None:
    import time

    now = int(time.time() * 1000)
    batch = [
        Metric(clean_metric_name(k), float(v), now, 0) for k, v in metrics.items() if _is_number(v)
    ]
    for name, points in (series or {}).items():
        batch.extend(
            Metric(clean_metric_name(name), float(v), now, int(step))
            for step, v in points
            if _is_number(v)
        )
    for start in range(0, len(batch), 900):  # MLflow caps a batch at 1000 entries
        client.log_batch(run_id, metrics=batch[start : start + 900])


def log_params(client: MlflowClient, run_id: str, params: Mapping[str, Any]) -> None:
    items = [Param(k, v) for k, v in flatten(params).items()]
    for start in range(0, len(items), 90):  # MLflow caps params per batch at 100
        client.log_batch(run_id, params=items[start : start + 90])


def set_tags(client: MlflowClient, run_id: str, tags: Mapping[str, Any]) -> None:
    client.log_batch(
        run_id,
        tags=[RunTag(clean_metric_name(k), str(v)) for k, v in tags.items() if v is not None],
    )


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


BEST_ALIAS = "best"
# MLflow reserves the alias `latest`: get_model_version_by_alias(name, "latest") and
# models:/<name>@latest always give the newest version, so every new version holds it.
LATEST_ALIAS = "latest"


def register_model(
    client: MlflowClient, name: str, model_path: Path, run_id: str, artifact_id: str
):
    """A new version of registered model ``name`` pointing at the artifact's weights.

    It becomes the ``latest`` version; ``best`` moves only by ``promote_if_better``.
    """
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(
            name, description="Registered by the rlmec pipeline; versions point at artifacts."
        )
    except MlflowException as exc:
        if exc.error_code != "RESOURCE_ALREADY_EXISTS":
            raise
    return client.create_model_version(
        name,
        source=model_path.resolve().as_uri(),
        run_id=run_id,
        tags={"rlmec.artifact_id": artifact_id},
        description=f"rlmec artifact {artifact_id}",
    )


def version_of_artifact(client: MlflowClient, name: str, artifact_id: str):
    """The newest version of ``name`` made from the artifact, or None."""
    versions = client.search_model_versions(
        f"name = '{name}' and tags.`rlmec.artifact_id` = '{artifact_id}'"
    )
    return max(versions, key=lambda v: int(v.version), default=None)


def accuracy_tag(eval_set: str) -> str:
    return f"rlmec.accuracy.{eval_set}"


def promote_if_better(
    client: MlflowClient, name: str, version: str, eval_set: str, accuracy: float
) -> bool:
    """Record the version's accuracy as a tag, then move ``best`` to it if that beats the
    accuracy recorded on the version holding ``best`` (or nothing holds it yet). Returns
    whether the version holds ``best`` now."""
    tag = accuracy_tag(eval_set)
    client.set_model_version_tag(name, version, tag, repr(float(accuracy)))
    holder = _holder_of(client, name, BEST_ALIAS)
    if holder is not None:
        if str(holder.version) == str(version):
            return True
        recorded = holder.tags.get(tag)
        if recorded is not None and float(recorded) >= accuracy:
            return False
    client.set_registered_model_alias(name, BEST_ALIAS, version)
    return True


def _holder_of(client: MlflowClient, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as exc:
        # MLflow answers "alias not found" with INVALID_PARAMETER_VALUE.
        if exc.error_code in ("INVALID_PARAMETER_VALUE", "RESOURCE_DOES_NOT_EXIST"):
            return None
        raise
