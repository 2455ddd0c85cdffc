"""The SFT trainer's loss on the lean path (output head at trained positions only) against
the model's own causal-LM loss: the same value and the same gradients, with and without the
Trainer's token count, for a plain model and for LoRA."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Trainer, TrainingArguments

from rlmec_core.config import LoraSection
from rlmec_core.trainers.lean import LeanCausalLMTrainer
from rlmec_core.trainers.lora import wrap_lora
from rlmec_core.trainers.sft import ResponseOnlyCollator

PAD_ID = 0
ROWS = [  # prompt tokens labelled -100, then the response; lengths differ (right padding)
    {"input_ids": [5, 6, 7, 8, 20, 21, 2], "labels": [-100, -100, -100, -100, 20, 21, 2]},
    {
        "input_ids": [9, 10, 30, 31, 32, 33, 34, 35, 2],
        "labels": [-100, -100, 30, 31, 32, 33, 34, 35, 2],
    },
    {"input_ids": [11, 12, 13, 40, 2], "labels": [-100, -100, -100, 40, 2]},
]


def _model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=100, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
    )  # fmt: skip
    return LlamaForCausalLM(config)


def _loss_and_grads(trainer_class, model, num_items, tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    trainer = trainer_class(model=model, args=args)
    inputs = ResponseOnlyCollator(PAD_ID)(ROWS)
    model.train()
    model.zero_grad()
    loss = trainer.compute_loss(model, inputs, num_items_in_batch=num_items)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


@pytest.mark.parametrize("num_items", [None, torch.tensor(25)])
@pytest.mark.parametrize("lora", [False, True])
def test_lean_loss_equals_the_models_own(num_items, lora, tmp_path):
    results = []
    for trainer_class in (Trainer, LeanCausalLMTrainer):
        model = _model()
        if lora:
            model = wrap_lora(model, LoraSection(r=4, alpha=8, dropout=0.0))
            for name, p in model.named_parameters():  # B starts at 0: give it a gradient path
                if "lora_B" in name:
                    torch.nn.init.normal_(p, std=0.1, generator=torch.Generator().manual_seed(1))
        results.append(_loss_and_grads(trainer_class, model, num_items, tmp_path))
    (own_loss, own_grads), (lean_loss, lean_grads) = results
    # 12 trained tokens in ROWS; with a count the sum is divided by it, else by 12.
    assert own_loss.item() > 0
    torch.testing.assert_close(lean_loss, own_loss, rtol=1e-5, atol=1e-6)
    assert lean_grads.keys() == own_grads.keys() and own_grads
    for name, grad in own_grads.items():
        torch.testing.assert_close(lean_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def test_lean_loss_ignores_prompt_tokens(tmp_path):
    """Changing a prompt token's label-free logits path must not matter: only response
    tokens are scored (a prompt-only row adds nothing)."""
    args = TrainingArguments(output_dir=str(tmp_path), report_to="none", use_cpu=True)
    model = _model()
    trainer = LeanCausalLMTrainer(model=model, args=args)
    base = trainer.compute_loss(model, ResponseOnlyCollator(PAD_ID)(ROWS[:2]))
    prompt_only = {"input_ids": [7, 8, 9], "labels": [-100, -100, -100]}
    with_extra = trainer.compute_loss(model, ResponseOnlyCollator(PAD_ID)([*ROWS[:2], prompt_only]))
    torch.testing.assert_close(with_extra, base, rtol=1e-5, atol=1e-6)
