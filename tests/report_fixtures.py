"""A hand-made workspace for the report tests: artifacts, run records and an MLflow store
as the pipeline writes them, with no training (a tiny tokenizer is the only model part)."""

from __future__ import annotations

import json
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from rlmec_core.config import STAGES
from rlmec_core.editing import minimum_edit_weights
from rlmec_core.eval_table import ablation_summary, summarize_results
from rlmec_core.tokenizer import train_tokenizer
from storage.atomic import write_json_atomic
from storage.manifest import Provenance
from storage.store import ArtifactStore

# Text from data that would run or load something if it reached the page unescaped.
EVIL_SCRIPT = "<script>alert(1)</script>"
EVIL_ATTR = '"><img src=x onerror=alert(2)>'
EVIL = f"{EVIL_SCRIPT} {EVIL_ATTR} 'quoted' & more"
STAGE_ERROR = f"ValueError: boom {EVIL_ATTR}"

GOOD = "7 + 5 = 12\n12 * 2 = 24\nThe answer is 24"
WRONG = [
    ("7 + 5 = 13\n13 * 2 = 26\nThe answer is 26", GOOD, 0),
    ("3 * 4 = 12\n12 - 5 = 8\nThe answer is 8", "3 * 4 = 12\n12 - 5 = 7\nThe answer is 7", 1),
    (f"9 + 1 = 10\n{EVIL}\nThe answer is 11", "9 + 1 = 10\n10 + 0 = 10\nThe answer is 10", 1),
]
# Correct answers of 50 per seed of each variant, for two ablations in one workspace.
ABLATION_A = {"rlmec": [26, 27, 28], "sft": [20], EVIL: [5, 5]}
ABLATION_B = {"rlmec": [30], "rft": [24, 25]}
BOOTSTRAP_MEAN_LOSS = 0.123
LOSSES = {
    "bootstrap": {"train_loss": [(s, 3.0 * 0.9**s) for s in range(1, 41)]},
    "train_grm": {"train_loss": [(s, 2.0 * 0.92**s + 0.1) for s in range(0, 30)]},
    "train_policy": {
        "train_loss": [(s, 1.0 - 0.02 * s) for s in range(0, 20)],
        "l_rl": [(s, 0.05 - 0.001 * s) for s in range(0, 20)],
        "l_im": [(s, 0.9 - 0.02 * s) for s in range(0, 20)],
    },
}


def _write_rows(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)


def _commit(store: ArtifactStore, stage: str, kind: str, files: dict, **extra: Any) -> str:
    """Commit an artifact; ``files`` maps a relative path to bytes, rows (list) or a callable."""
    with store.staging() as out:
        for name, content in files.items():
            target = out / name
            target.parent.mkdir(parents=True, exist_ok=True)
            if callable(content):
                content(target)
            elif isinstance(content, list):
                _write_rows(target, content)
            else:
                target.write_bytes(content if isinstance(content, bytes) else content.encode())
        manifest = store.commit(
            out,
            Provenance(
                stage=stage,
                kind=kind,
                config_hash="cfg-" + stage,
                mlflow_run_id=extra.pop("mlflow_run_id", None),
                extra={"metrics": extra.pop("metrics", {}), "summary": extra.pop("summary", {})},
            ),
        )
    return manifest.id


def _record(workspace: Path, parent_id: str, stages: list[dict], status: str, started: str) -> None:
    record = {
        "mlflow_run_id": parent_id,
        "prefect_flow_run_id": "prefect-" + parent_id[:6],
        "config_path": f"configs/{EVIL}.yaml",
        "config_hash": "abc123",
        "host": "another-host",  # never judged INTERRUPTED by pid
        "pid": 1,
        "status": status,
        "started_at": started,
        "finished_at": started,
        "stages": stages,
    }
    write_json_atomic(
        workspace / "runs" / f"{started.replace(':', '')}-{parent_id[:8]}.json", record
    )


def _outcomes(n_correct: int, n: int = 50) -> list[bool]:
    return [i < n_correct for i in range(n)]


def ablation_json(variants: dict[str, list[int]], eval_set: str, initial: int) -> str:
    """ablation.json as `rlmec ablate` writes it, from each variant's correct answers (of 50)
    per seed and the initial policy's."""
    results = [
        {
            "variant": variant,
            "seed": seed,
            "eval_set": eval_set,
            "outcomes": _outcomes(n_correct),
            "policy_artifact": f"policy-{variant}-{seed}",
        }
        for variant, per_seed in variants.items()
        for seed, n_correct in enumerate(per_seed)
    ]
    summary = ablation_summary(results, {eval_set: _outcomes(initial)})
    return json.dumps({"summary": summary, "results": results})


def _experiment(workspace: Path) -> tuple[MlflowClient, str]:
    """The workspace's MLflow store and experiment, created on first use."""
    client = MlflowClient(tracking_uri=f"sqlite:///{(workspace / 'mlflow.db').resolve()}")
    experiment = client.get_experiment_by_name("rlmec")
    if experiment is not None:
        return client, experiment.experiment_id
    location = (workspace / "mlartifacts").resolve().as_uri()
    return client, client.create_experiment("rlmec", artifact_location=location)


def add_ablation_run(
    workspace: Path, started: str, payload: str, stages: list[dict] | None = None
) -> str:
    """An `rlmec ablate` run: its MLflow parent run names its ablation artifact by tag, as
    flows/ablation.py does. Returns the parent run id."""
    workspace.mkdir(parents=True, exist_ok=True)
    client, experiment = _experiment(workspace)
    parent = client.create_run(experiment, run_name="rlmec-ablation").info.run_id
    artifact = _commit(
        ArtifactStore(workspace),
        "ablate",
        "ablation",
        {"ablation.json": payload, "ablation.md": "x"},
        mlflow_run_id=parent,
    )
    client.set_tag(parent, "rlmec.ablation_artifact", artifact)
    _record(workspace, parent, stages or [], "FINISHED", started)
    client.set_terminated(parent, "FINISHED")
    return parent


def _log_series(client: MlflowClient, run_id: str, series: dict) -> None:
    now = int(time.time() * 1000)
    metrics = [Metric(k, v, now, step) for k, pts in series.items() for step, v in pts]
    client.log_batch(run_id, metrics=metrics)


def build_workspace(workspace: Path) -> dict[str, str]:
    """Four runs in one workspace: a full one, one that failed in train_grm, and two
    ablations (the second made after the first, with other variants and eval set).

    Returns the parent run ids: ``full``, ``failed``, ``ablation_a``, ``ablation_b``.
    """
    workspace.mkdir(parents=True, exist_ok=True)
    store = ArtifactStore(workspace)
    client, experiment = _experiment(workspace)
    parent = client.create_run(experiment, run_name="rlmec-full").info.run_id

    def child(stage: str, parent_id: str = parent) -> str:
        return client.create_run(
            experiment, run_name=stage, tags={"mlflow.parentRunId": parent_id, "rlmec.stage": stage}
        ).info.run_id

    children = {stage: child(stage) for stage in STAGES}
    for stage, series in LOSSES.items():
        _log_series(client, children[stage], series)
    # As the stages do: the summary train_loss (a mean) lands at step 0 of the same key.
    _log_series(client, children["bootstrap"], {"train_loss": [(0, BOOTSTRAP_MEAN_LOSS)]})

    texts = [GOOD, *(w[0] for w in WRONG), *(w[1] for w in WRONG), EVIL] * 3
    tokenizer = train_tokenizer(texts, vocab_size=300)

    def encode(text: str) -> list[int]:
        return tokenizer(text, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]

    ids: dict[str, str] = {}
    ids["data"] = _commit(
        store,
        "data",
        "dataset",
        {"train.parquet": [{"id": "p0", "question": "q"}]},
        metrics={"n_train": 3, "n_test": 2},
        mlflow_run_id=children["data"],
    )
    ids["bootstrap"] = _commit(
        store,
        "bootstrap",
        "policy",
        {"model/tokenizer": lambda p: tokenizer.save_pretrained(p.parent)},
        metrics={
            "train_loss": BOOTSTRAP_MEAN_LOSS,
            "dev_accuracy": 0.5,
            "params": {"lr": "not a number"},
        },
        mlflow_run_id=children["bootstrap"],
    )
    samples = [
        {"sample_id": f"p{i}/0", "question": f"Question {i}: {EVIL if i == 2 else 'compute'}"}
        for i in range(len(WRONG))
    ]
    ids["collect"] = _commit(
        store,
        "collect",
        "samples",
        {"samples.parquet": samples},
        metrics={"n_samples": 4, "accuracy": 0.25},
        mlflow_run_id=children["collect"],
    )
    distilled = [{**s, "teacher_status": "kept"} for s in samples]
    ids["distill"] = _commit(
        store,
        "distill",
        "rewrites",
        {"distilled.parquet": distilled, "grm_train.parquet": [{"prompt": "p"}]},
        metrics={"kept": 3, f"odd {EVIL}": 1.5},
        mlflow_run_id=children["distill"],
    )
    ids["train_grm"] = _commit(
        store,
        "train_grm",
        "grm",
        {"model/weights.bin": b"grm"},
        metrics={"final_loss": 0.2},
        mlflow_run_id=children["train_grm"],
    )
    rows = []
    for i, (prediction, rewrite, step) in enumerate(WRONG):
        response, target = encode(prediction), encode(rewrite)
        rewards = [-0.1 * ((t * 7) % 11) / 10 for t in range(len(response))]
        rows.append(
            {
                "sample_id": f"p{i}/0",
                "problem_id": f"p{i}",
                "correct": False,
                "prediction": prediction,
                "rewrite": rewrite,
                "grm_error_step": step,
                "teacher_error_step": step,
                "prompt_ids": encode("Question"),
                "response_ids": response,
                "rewards": rewards,
                "ref_logprobs": [-1.0] * len(response),
                "target_ids": target,
                "target_weights": minimum_edit_weights(response, target),
            }
        )
    correct = encode(GOOD)
    rows.append(
        {
            **rows[0],
            "sample_id": "p9/0",
            "correct": True,
            "prediction": GOOD,
            "rewrite": GOOD,
            "grm_error_step": -1,
            "response_ids": correct,
            "rewards": [0.4] * len(correct),
            "ref_logprobs": [-1.0] * len(correct),
            "target_ids": correct,
            "target_weights": [0.5] * len(correct),
        }
    )
    ids["annotate"] = _commit(
        store,
        "annotate",
        "rl_data",
        {"rl_data.parquet": rows},
        metrics={"n_rows": len(rows)},
        mlflow_run_id=children["annotate"],
    )
    ids["train_policy"] = _commit(
        store,
        "train_policy",
        "policy",
        {"model/w.bin": b"policy", "training.json": json.dumps({"variant": "rlmec"})},
        metrics={"final_loss": 0.61, "steps": 20},
        summary={"variant": "rlmec"},
        mlflow_run_id=children["train_policy"],
    )
    rows = [  # as evaluate_policies returns them
        {
            "policy": p,
            "eval_set": e,
            "n": 50,
            "n_correct": c,
            "accuracy": c / 50,
            "outcomes": _outcomes(c),
        }
        for p, e, c in [
            ("initial", "synthetic_test", 20),
            ("initial", f"held {EVIL}", 10),
            ("rlmec", "synthetic_test", 27),
            ("rlmec", f"held {EVIL}", 9),
        ]
    ]
    results = summarize_results(rows)
    ids["evaluate"] = _commit(
        store,
        "evaluate",
        "evaluation",
        {"results.json": json.dumps(results), "results.md": "|table|"},
        metrics={"rlmec.synthetic_test.accuracy": 0.54},
        summary={"results": results},
        mlflow_run_id=children["evaluate"],
    )
    stages = [
        {
            "stage": s,
            "status": "cached" if s == "data" else "ran",
            "artifact": ids[s],
            "seconds": 1.5,
        }
        for s in STAGES
    ]
    _record(workspace, parent, stages, "FINISHED", "2026-01-01T10:00:00+0000")
    client.set_terminated(parent, "FINISHED")

    # The second run: data cached, bootstrap ran, train_grm failed after logging some loss.
    failed = client.create_run(experiment, run_name="rlmec-failed").info.run_id
    grm_child = child("train_grm", failed)
    _log_series(client, grm_child, {"train_loss": [(0, 2.0), (1, 1.7), (2, 1.6)]})
    client.set_tag(grm_child, "rlmec.error", STAGE_ERROR)
    client.set_terminated(grm_child, "FAILED")
    stages = [
        {"stage": "data", "status": "cached", "artifact": ids["data"], "seconds": 0.1},
        {"stage": "bootstrap", "status": "cached", "artifact": ids["bootstrap"], "seconds": 0.2},
        {"stage": "collect", "status": "ran", "artifact": ids["collect"], "seconds": 3.0},
        {"stage": "distill", "status": "ran", "artifact": ids["distill"], "seconds": 2.0},
        {"stage": "train_grm", "status": "failed", "artifact": None, "seconds": 4.0},
    ]
    _record(workspace, failed, stages, "FAILED", "2026-01-02T10:00:00+0000")
    client.set_terminated(failed, "FAILED")

    # Two ablations on the full run's upstream artifacts, each variant with its own lines.
    def ablation_lines(variants: dict[str, list[int]]) -> list[dict]:
        shared = [
            {"stage": s, "status": "cached", "artifact": ids[s], "seconds": 0.1}
            for s in STAGES[: STAGES.index("annotate") + 1]
        ]
        return shared + [
            {"stage": f"{s}[{v},seed={i}]", "status": "ran", "artifact": ids[s], "seconds": 1.0}
            for v, per_seed in variants.items()
            for i in range(len(per_seed))
            for s in ("train_policy", "evaluate")
        ]

    runs = {"full": parent, "failed": failed}
    for name, started, variants, eval_set in (
        ("ablation_a", "2026-01-01T11:00:00+0000", ABLATION_A, "synthetic_test"),
        ("ablation_b", "2026-01-01T12:00:00+0000", ABLATION_B, "svamp"),
    ):
        payload = ablation_json(variants, eval_set, initial=20)
        runs[name] = add_ablation_run(workspace, started, payload, ablation_lines(variants))
    return runs


def build_bare_workspace(workspace: Path, status: str = "FINISHED") -> str:
    """A run that stopped after `data` (or is still running: ``status``), with no MLflow
    store."""
    store = ArtifactStore(workspace)
    data = _commit(store, "data", "dataset", {"train.parquet": b"x"}, metrics={"n_train": 3})
    stages = [{"stage": "data", "status": "ran", "artifact": data, "seconds": 0.3}]
    run_id = "0123456789abcdef0123456789abcdef"
    _record(workspace, run_id, stages, status, "2026-01-03T10:00:00+0000")
    return run_id


def decode_png(data: bytes) -> np.ndarray:
    """Pixels of an 8-bit, non-interlaced PNG as a (height, width, channels) array.

    Written here with zlib + struct so the browser test needs no image library.
    """
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError("not a PNG file")
    pos, chunks, header = 8, [], None
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            chunks.append(body)
        pos += 12 + length
    if header is None:
        raise ValueError("PNG without IHDR chunk")
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or interlace or colour not in (0, 2, 4, 6):
        raise ValueError(f"unsupported PNG: depth {depth}, colour {colour}, interlace {interlace}")
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[colour]
    raw = zlib.decompress(b"".join(chunks))
    stride = width * channels
    out = np.zeros((height, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.uint8)
    for y in range(height):
        start = y * (stride + 1)
        kind = raw[start]
        line = np.frombuffer(raw, np.uint8, stride, start + 1)
        if kind == 0:  # None
            row = line.copy()
        elif kind == 1:  # Sub: running sum along the row, per channel (uint8 wraps)
            pixels = line.reshape(width, channels).astype(np.uint32)
            row = np.cumsum(pixels, axis=0).astype(np.uint8).reshape(-1)
        elif kind == 2:  # Up
            row = line + prev
        else:  # Average / Paeth depend on the decoded left byte: byte by byte
            row_b, up = bytearray(line.tobytes()), prev.tobytes()
            for i in range(stride):
                a = row_b[i - channels] if i >= channels else 0
                b = up[i]
                if kind == 3:
                    row_b[i] = (row_b[i] + ((a + b) >> 1)) & 255
                    continue
                c = up[i - channels] if i >= channels else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                row_b[i] = (row_b[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            row = np.frombuffer(bytes(row_b), np.uint8)
        out[y] = row
        prev = out[y]
    return out.reshape(height, width, channels)
