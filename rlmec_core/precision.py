"""The numeric precision a stage trains or runs its models in.

``auto`` is bf16 on a CUDA GPU that supports it and fp32 otherwise (on CPU bf16 works but is
slower than fp32 for the small models that fit there). Training uses mixed precision: the
weights stay float32 (the Trainer's ``bf16``/``fp16``), the forward runs under autocast, and
the losses are computed in float32 (``rlmec_core.losses``). Inference (annotate) loads the
weights in the dtype itself.
"""

from __future__ import annotations

from typing import Literal

import torch

Resolved = Literal["fp32", "bf16", "fp16"]

_DTYPES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}


def resolve_precision(precision: str) -> Resolved:
    """``precision`` with ``auto`` replaced by what this machine supports."""
    if precision == "auto":
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
            return "bf16"
        return "fp32"
    if precision not in _DTYPES:
        raise ValueError(f"precision must be auto, fp32, bf16 or fp16, got {precision!r}")
    return precision  # type: ignore[return-value]


def torch_dtype(precision: str) -> torch.dtype:
    """The torch dtype of a precision setting (``auto`` resolved first)."""
    return _DTYPES[resolve_precision(precision)]


def inference_device() -> str:
    """Where inference-only stages put their models: the GPU when there is one."""
    return "cuda" if torch.cuda.is_available() else "cpu"
