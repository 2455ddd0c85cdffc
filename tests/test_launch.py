"""Multi-process training under `accelerate launch` (gloo on CPU): same result, same artifact.

Two processes with per-process batch 2 take the same global batches as one process with
batch 2 and 2 accumulation steps (accelerate gives rank r the r-th of each pair of
batches of the one sampler order); DDP averages the two micro-batch gradients as the
accumulation does. Only the summation order differs, so the weights agree to float32
round-off: TOLERANCE (measured difference: about 1e-7).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlmec_core.config import LauncherSection
from tasks import train_policy as _registers_the_stage  # noqa: F401
from tasks.launch import accelerate_options
from tasks.stage import raw_stage_function
from tasks.stage_process import WorkerTraceback
from tests.tiny_rl import policy_stage

TOLERANCE = 1e-5  # absolute, on weights of order 0.02-1 after 3 steps at lr 1e-2
TRAINING = {
    "max_steps": 3,
    "learning_rate": 1e-2,
    "warmup_ratio": 0.0,
    "lr_scheduler": "constant",
    "logging_steps": 1,
    "save_steps": 2,
}


def test_accelerate_options_pass_the_processes_precision_and_config_file(tmp_path):
    two = accelerate_options(LauncherSection(kind="accelerate", num_processes=2), "fp32", None, 1)
    assert two[:5] == ["--num_machines", "1", "--dynamo_backend", "no", "--multi_gpu"]
    assert two[5:] == [
        "--num_processes",
        "2",
        "--mixed_precision",
        "no",
        "--main_process_port",
        "1",
    ]
    config = tmp_path / "zero2.yaml"
    opts = accelerate_options(
        LauncherSection(kind="accelerate", num_processes=4), "bf16", config, 7
    )
    assert opts[:2] == ["--config_file", str(config)] and "--multi_gpu" not in opts
    assert opts[opts.index("--num_processes") + 1] == "4"
    assert opts[opts.index("--mixed_precision") + 1] == "bf16"


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "model" / "model.safetensors")


def test_two_gloo_processes_train_the_policy_one_process_trains(tmp_path):
    ctx, io = policy_stage(
        tmp_path, {**TRAINING, "batch_size": 2, "gradient_accumulation_steps": 2}, "one"
    )
    one = raw_stage_function("train_policy")(ctx, io)
    launcher = {"kind": "accelerate", "num_processes": 2}
    ctx2, io2 = policy_stage(tmp_path, {**TRAINING, "batch_size": 2, "launcher": launcher}, "two")
    two = raw_stage_function("train_policy")(ctx2, io2)

    assert two.metrics["steps"] == one.metrics["steps"] == 3
    assert two.metrics["n_rows"] == one.metrics["n_rows"] == 16
    # The same artifact: files, and what training.json states (plus the process count).
    assert sorted(p.name for p in io2.out.rglob("*")) == sorted(p.name for p in io.out.rglob("*"))
    facts = json.loads((io2.out / "training.json").read_text())
    assert facts.pop("processes") == 2
    assert facts == json.loads((io.out / "training.json").read_text())
    # The same training, to float32 round-off: the loss curve and every final weight.
    for (step, a), (step2, b) in zip(
        one.series["train_loss"], two.series["train_loss"], strict=True
    ):
        assert step == step2 and b == pytest.approx(a, abs=TOLERANCE)
    w1, w2 = _weights(io.out), _weights(io2.out)
    assert w1.keys() == w2.keys()
    worst = max((w1[k] - w2[k]).abs().max().item() for k in w1)
    assert worst < TOLERANCE, f"weights differ by up to {worst:.2e}"
    # It resumes like a local run: its checkpoints are in the stage's scratch folder.
    assert (io2.scratch / "checkpoints" / "checkpoint-2" / "trainer_state.json").is_file()


def test_a_launched_stage_reports_the_workers_error(tmp_path):
    launcher = {"kind": "accelerate", "num_processes": 1}
    ctx, io = policy_stage(tmp_path, {**TRAINING, "batch_size": 2, "launcher": launcher})
    io.inputs["rl_data"] = tmp_path / "missing"
    # Raised here as the error it was in rank 0, with rank 0's traceback as its cause.
    with pytest.raises(FileNotFoundError, match="rl_data.parquet") as failure:
        raw_stage_function("train_policy")(ctx, io)
    cause = failure.value.__cause__
    assert isinstance(cause, WorkerTraceback) and "Traceback" in str(cause)
    assert not list(io.scratch.glob("stage-process-*"))  # payload and result cleaned up
