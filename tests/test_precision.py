"""Mixed precision and gradient checkpointing of the training stages, on CPU."""

from __future__ import annotations

import math

import pytest
import torch

from rlmec_core.config import TrainingSection, TrainPolicySection
from rlmec_core.precision import resolve_precision, torch_dtype
from rlmec_core.trainers.rlmec_trainer import (
    RlmecTrainer,
    build_policy_trainer,
    policy_rows,
    train_policy,
)
from rlmec_core.trainers.sft import train_sft, training_arguments
from tests.tiny_rl import rl_rows, tiny_model, tiny_tokenizer


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def _cfg(**kw) -> TrainPolicySection:
    settings = {"max_steps": 1, "batch_size": 4, "learning_rate": 1e-2, "warmup_ratio": 0.0}
    return TrainPolicySection(**{**settings, "logging_steps": 1, **kw})


def _checkpointing(args) -> tuple[bool, dict]:
    # transformers 5 renamed gradient_checkpointing to activation_checkpointing
    if hasattr(args, "activation_checkpointing"):
        return bool(args.activation_checkpointing), args.activation_checkpointing_kwargs or {}
    return bool(args.gradient_checkpointing), args.gradient_checkpointing_kwargs or {}


def test_fp32_is_the_default_on_cpu_and_each_setting_maps_to_the_trainer(tmp_path):
    if not torch.cuda.is_available():
        assert resolve_precision("auto") == "fp32" and torch_dtype("auto") == torch.float32
    args = training_arguments(TrainingSection(), tmp_path, seed=0)
    assert (args.bf16, args.fp16) == (resolve_precision("auto") == "bf16", False)
    assert _checkpointing(args)[0] is False
    args = training_arguments(
        TrainingSection(precision="bf16", gradient_checkpointing=True), tmp_path, seed=0
    )
    assert args.bf16 and not args.fp16
    assert _checkpointing(args) == (True, {"use_reentrant": False})
    assert torch_dtype("fp16") == torch.float16


def test_bf16_on_cpu_trains_a_step_with_float32_losses_and_weights(
    tokenizer, tmp_path, monkeypatch
):
    seen = []
    original = RlmecTrainer.loss_terms

    def spy(self, model, inputs):
        terms = original(self, model, inputs)
        autocast = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu")
        seen.append((terms["loss"].dtype, terms["l_rl"].dtype, terms["l_im"].dtype, autocast))
        return terms

    monkeypatch.setattr(RlmecTrainer, "loss_terms", spy)
    model = tiny_model(tokenizer)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    result = train_policy(model, tokenizer, rl_rows(tokenizer, 8), tmp_path, _cfg(precision="bf16"))
    assert result["steps"] == 1 and math.isfinite(result["train_loss"])
    # The forward ran under bf16 autocast; every loss term came out float32.
    assert seen and all(s == (torch.float32,) * 3 + (torch.bfloat16,) for s in seen)
    assert all(p.dtype == torch.float32 for p in model.parameters())  # master weights
    assert any(not torch.equal(before[n], p) for n, p in model.named_parameters())


def test_bf16_sft_on_cpu_trains_a_step(tokenizer, tmp_path):
    model = tiny_model(tokenizer)
    examples = [{"prompt": "Q: 2 + 3 = ?\n", "response": "2 + 3 = 5\nThe answer is 5"}] * 4
    training = TrainingSection(precision="bf16", max_steps=1, batch_size=4, logging_steps=1)
    result = train_sft(model, tokenizer, examples, tmp_path, training, seed=0)
    assert result["steps"] == 1 and math.isfinite(result["train_loss"])


def _gradients(tokenizer, rows, tmp_path, checkpointing: bool) -> tuple[dict, int]:
    """The gradients of one RLMEC batch, and how often the first decoder layer ran."""
    model = tiny_model(tokenizer).train()
    cfg = _cfg(gradient_checkpointing=checkpointing)
    trainer = build_policy_trainer(model, tokenizer, rows, tmp_path / str(checkpointing), cfg)
    enabled, kwargs = _checkpointing(trainer.args)
    assert enabled is checkpointing
    if enabled:  # what Trainer.train does with these arguments
        enable = getattr(model, "activation_checkpointing_enable", None)
        if enable is not None:
            enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)
    calls = []
    mlp = model.model.layers[0].mlp  # recomputed in the backward pass when checkpointed
    forward = mlp.forward
    mlp.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
    batch = trainer.data_collator(policy_rows(rows, "rlmec"))
    trainer.compute_loss(model, batch).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}, len(calls)


def test_gradient_checkpointing_gives_the_same_gradients(tokenizer, tmp_path):
    rows = rl_rows(tokenizer, 4)
    plain, plain_calls = _gradients(tokenizer, rows, tmp_path, False)
    checkpointed, checkpointed_calls = _gradients(tokenizer, rows, tmp_path, True)
    # Recomputed in the backward pass: each of the two forwards (y and ŷ) runs twice.
    assert (plain_calls, checkpointed_calls) == (2, 4)
    for name, grad in plain.items():
        torch.testing.assert_close(checkpointed[name], grad, rtol=1e-5, atol=1e-7, msg=name)
    assert any(g.abs().sum() > 0 for g in plain.values())
