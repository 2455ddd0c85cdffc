"""Turns a stage function into a cached, retryable, tracked Prefect task.

A stage function has the signature ``fn(ctx, io) -> StageResult``: it reads its parents
from ``io.inputs``, writes its artifact's files into ``io.out`` and may keep resumable
state in ``io.scratch``. Everything else (cache key, MLflow child run, manifest, lineage)
happens here, once, for every stage.
"""

from __future__ import annotations

import hashlib
import json
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.tracking import MlflowClient
from prefect import task
from prefect.cache_policies import CachePolicy
from prefect.logging import get_run_logger
from prefect.runtime import flow_run, task_run

from rlmec_core.errors import StageFailure
from storage import catalog
from storage.manifest import MANIFEST_NAME, Provenance
from storage.store import ArtifactStore
from tasks import tracking
from tasks.config_reads import stage_hash
from tasks.context import RunContext
from tasks.dataset_inputs import log_dataset_inputs
from tasks.faults import kill_point
from tasks.fingerprint import code_fingerprint
from tasks.locks import StageLockManager
from tasks.peak_memory import peak_rss_mib, reset_peak_rss
from tasks.stage_registry import raw_stage_function as raw_stage_function  # re-exported
from tasks.stage_registry import register_stage_function
from tasks.time_limit import run_with_time_limit

ArtifactRef = dict[str, str]  # {"id", "kind", "stage"}: all a task result ever holds


class StageError(StageFailure):
    """A stage failed: ``cause`` is the error, ``scratch`` holds the stage's resumable work.

    The message names the stage and the error; `rlmec` adds what to do (flows/cli.py).
    """

    def __init__(
        self,
        message: str,
        stage: str | None = None,
        cause: BaseException | None = None,
        scratch: Path | None = None,
        mlflow_run_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.stage = stage
        self.cause = cause
        self.scratch = scratch
        self.mlflow_run_id = mlflow_run_id


@dataclass
class StageIO:
    inputs: dict[str, Path]  # parent role -> artifact folder
    out: Path  # staging folder for this stage's artifact
    scratch: Path  # durable folder for checkpoints and shards
    parent_ids: dict[str, str]
    code_fingerprint: str = ""


@dataclass
class StageResult:
    kind: str
    metrics: dict[str, float] = field(default_factory=dict)
    series: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    summary: dict[str, Any] = field(default_factory=dict)  # small facts for the manifest


def stage_cache_key(
    ctx: RunContext,
    stage: str,
    parents: Mapping[str, ArtifactRef],
    code: str,
    extra: str = "",
    module: str | None = None,
) -> str:
    payload = {
        "stage": stage_hash(ctx.config, stage, module),
        "parents": {role: ref["id"] for role, ref in sorted(parents.items())},
        "code": code,
        "workspace": str(Path(ctx.workspace).resolve()),
        "extra": extra,
    }
    blob = json.dumps(payload, sort_keys=True).encode()
    return f"{stage}-{hashlib.sha256(blob).hexdigest()[:24]}"


def stage_task(
    stage: str, register_as: str | None = None
) -> Callable[[Callable[[RunContext, StageIO], StageResult]], Any]:
    """Decorator: make ``fn(ctx, io)`` the Prefect task of ``stage``.

    Its code fingerprint covers the import closure of ``fn``'s module (see
    ``tasks.fingerprint``), this module included since every stage module imports it.
    ``register_as``: the MLflow registered-model name the stage's model is versioned under.
    """

    def decorate(fn: Callable[[RunContext, StageIO], StageResult]):
        module = fn.__module__
        register_stage_function(stage, fn)

        def cache_key(_context: Any, parameters: dict[str, Any]) -> str:
            return stage_cache_key(
                parameters["ctx"],
                stage,
                parameters["parents"],
                code_fingerprint(module),
                parameters.get("extra_key", ""),
                module,
            )

        # SERIALIZABLE: of two runs reaching one cache key, one computes while the other
        # waits for its lock, then finds the result cached (tasks/locks.py).
        policy = CachePolicy.from_cache_key_fn(cache_key).configure(
            isolation_level="SERIALIZABLE", lock_manager=StageLockManager()
        )

        @task(name=stage, cache_policy=policy, persist_result=True, result_serializer="json")
        def run_stage(
            ctx: RunContext, parents: dict[str, ArtifactRef], extra_key: str = ""
        ) -> ArtifactRef:
            fingerprint = code_fingerprint(module)
            key = stage_cache_key(ctx, stage, parents, fingerprint, extra_key, module)
            return _execute(ctx, stage, fn, parents, fingerprint, key, register_as)

        run_stage.code_module = module  # code_closure(run_stage.code_module): what it covers
        run_stage.registered_model = register_as
        return run_stage

    return decorate


def _execute(
    ctx: RunContext,
    stage: str,
    fn: Callable[[RunContext, StageIO], StageResult],
    parents: dict[str, ArtifactRef],
    fingerprint: str,
    cache_key: str,
    register_as: str | None = None,
) -> ArtifactRef:
    store = ctx.store
    client = MlflowClient(tracking_uri=ctx.mlflow_tracking_uri)
    section = ctx.config.stage(stage)
    prefect_ids = {
        "prefect.flow_run_id": flow_run.id,
        "prefect.task_run_id": task_run.id,
    }
    run_id = None
    try:
        run_id = _create_stage_run(client, ctx, stage, cache_key, parents, prefect_ids)
        tracking.log_params(client, run_id, section.model_dump(mode="json"))
        inputs = {role: store.path(ref["id"]) for role, ref in parents.items()}
        log_dataset_inputs(
            client, run_id, {role: (ref["id"], inputs[role]) for role, ref in parents.items()}
        )
        with store.staging() as out:
            io = StageIO(
                inputs=inputs,
                out=out,
                scratch=ctx.scratch(stage, cache_key),
                parent_ids={role: ref["id"] for role, ref in parents.items()},
                code_fingerprint=fingerprint,
            )
            result = _run_stage_function(stage, fn, ctx, io, section.timeout_seconds)
            kill_point(stage, "before_commit")
            manifest = store.commit(
                out,
                Provenance(
                    stage=stage,
                    kind=result.kind,
                    parents=tuple(ref["id"] for ref in parents.values()),
                    config_hash=stage_hash(ctx.config, stage, fn.__module__),
                    code_fingerprint=fingerprint,
                    prefect_flow_run_id=prefect_ids["prefect.flow_run_id"],
                    prefect_task_run_id=prefect_ids["prefect.task_run_id"],
                    mlflow_run_id=run_id,
                    extra={"summary": result.summary, "metrics": result.metrics},
                ),
            )
        _log_stage_outcome(client, run_id, store, manifest.id, result, register_as)
        client.set_terminated(run_id, "FINISHED")
    except BaseException as exc:
        if run_id is not None:
            _close_failed_run(client, run_id, exc)
        if isinstance(exc, StageError | KeyboardInterrupt | SystemExit):
            raise
        scratch = Path(ctx.workspace) / "scratch" / stage / cache_key
        message = f"stage {stage!r} failed: {_short_error(exc)}"
        raise StageError(message, stage, exc, scratch, run_id) from exc
    get_run_logger().info("stage %s wrote artifact %s (MLflow run %s)", stage, manifest.id, run_id)
    return {"id": manifest.id, "kind": result.kind, "stage": stage}


def _create_stage_run(
    client: MlflowClient,
    ctx: RunContext,
    stage: str,
    cache_key: str,
    parents: dict[str, ArtifactRef],
    prefect_ids: dict[str, Any],
) -> str:
    """The stage's MLflow run, a child of the pipeline's run, tagged with its lineage."""
    return client.create_run(
        ctx.mlflow_experiment_id,
        run_name=stage,
        tags={
            "mlflow.parentRunId": ctx.mlflow_parent_run_id,
            "rlmec.stage": stage,
            "rlmec.cache_key": cache_key,
            **{f"rlmec.parent.{role}": ref["id"] for role, ref in parents.items()},
            **{k: v for k, v in prefect_ids.items() if v},
        },
    ).info.run_id


def _run_stage_function(
    stage: str,
    fn: Callable[[RunContext, StageIO], StageResult],
    ctx: RunContext,
    io: StageIO,
    timeout_seconds: float | None,
) -> StageResult:
    """``fn(ctx, io)`` here with its peak memory, or under ``timeout_seconds`` in a child."""
    if timeout_seconds is None:
        reset_peak_rss()
        result = fn(ctx, io)
        # A stage under accelerate launch reported rank 0's own peak: this process only waited.
        result.metrics.setdefault("peak_rss_mib", peak_rss_mib())
        return result
    return StageResult(**run_with_time_limit(stage, ctx, io, timeout_seconds))


def _log_stage_outcome(
    client: MlflowClient,
    run_id: str,
    store: ArtifactStore,
    artifact_id: str,
    result: StageResult,
    register_as: str | None,
) -> None:
    """On the stage's MLflow run: its metrics and curves, its artifact's id and kind, its
    manifest, and (with ``register_as``) its model's registered version."""
    # A summary value named like a curve (train_loss) would become the curve's step 0.
    summary_metrics = {
        (f"{k}_summary" if k in result.series else k): v for k, v in result.metrics.items()
    }
    tracking.log_metrics(client, run_id, summary_metrics, result.series)
    tracking.set_tags(client, run_id, {"rlmec.artifact_id": artifact_id, "rlmec.kind": result.kind})
    client.log_artifact(run_id, str(store.path(artifact_id) / MANIFEST_NAME))
    if register_as is not None:
        model_path = catalog.MODEL_FOLDER.path(store.path(artifact_id))
        version = tracking.register_model(client, register_as, model_path, run_id, artifact_id)
        tracking.set_tags(
            client, run_id, {"rlmec.registered_model": f"{register_as}/{version.version}"}
        )


def _close_failed_run(client: MlflowClient, run_id: str, exc: BaseException) -> None:
    """Mark the stage's MLflow run failed, if MLflow still can (not on a full disk)."""
    try:
        tracking.set_tags(client, run_id, {"rlmec.error": _short_error(exc)})
        client.set_terminated(run_id, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
    except Exception:  # the stage's own error is the one to report
        pass


def _short_error(exc: BaseException) -> str:
    """``Type: message`` on one line, at most a few hundred characters."""
    text = " ".join("".join(traceback.format_exception_only(type(exc), exc)).split())
    return text if len(text) <= 300 else text[:297] + "..."
