"""LoRA training through peft: adapters only, a merged loadable model, resumable, in lineage."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaForCausalLM

from rlmec_core.config import LoraSection, TrainingSection, TrainPolicySection
from rlmec_core.trainers import rlmec_trainer
from rlmec_core.trainers.sft import train_sft
from tasks import train_policy as _registers_the_stage  # noqa: F401
from tasks.stage import raw_stage_function
from tests.tiny_rl import policy_stage, rl_rows, tiny_model, tiny_tokenizer

# Every linear module of the tiny Llama.
MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LORA = LoraSection(r=4, alpha=8, dropout=0.0, target_modules=MODULES)
EXAMPLES = [
    {"prompt": f"Q: {a} + {b} = ?\n", "response": f"{a} + {b} = {a + b}\nThe answer is {a + b}"}
    for a in range(1, 5)
    for b in range(1, 5)
]


@pytest.fixture(scope="module")
def tokenizer():
    return tiny_tokenizer()


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(input_ids=ids).logits


def test_only_adapters_train_and_the_merged_artifact_gives_the_adapted_logits(
    tokenizer, tmp_path, monkeypatch
):
    model = tiny_model(tokenizer)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = torch.tensor([tokenizer("Q: 2 + 3 = ?\n2 + 3 = 5")["input_ids"]])
    seen = {}
    merge = rlmec_trainer.merge_lora

    def inspect_then_merge(peft_model):
        # The trained PeftModel just before merging: base weights untouched, adapters moved.
        for name, p in peft_model.named_parameters():
            base = name.removeprefix("base_model.model.").replace(".base_layer", "")
            if "lora_" in name:
                seen.setdefault("lora_trainable", []).append(p.requires_grad)
                if "lora_B" in name:  # initialised to zero, so any change shows training
                    seen.setdefault("lora_B_moved", []).append(bool(p.abs().sum() > 0))
            else:
                assert not p.requires_grad, name
                assert torch.equal(p, initial[base]), f"base weight {base} changed"
        seen["adapted"] = _logits(peft_model, ids)
        return merge(peft_model)

    monkeypatch.setattr(rlmec_trainer, "merge_lora", inspect_then_merge)
    cfg = TrainPolicySection(
        max_steps=3, batch_size=4, learning_rate=1e-2, warmup_ratio=0.0, lora=LORA
    )
    result = rlmec_trainer.train_policy(model, tokenizer, rl_rows(tokenizer), tmp_path, cfg)
    assert all(seen["lora_trainable"]) and all(seen["lora_B_moved"])
    # 2 layers x 7 modules x r(in + out); the tiny model's own weights are far more.
    assert 0 < result["trainable_params"] < sum(p.numel() for p in initial.values()) / 4

    # The caller's model is a plain Llama again, with the adapters folded in.
    assert type(model) is LlamaForCausalLM
    assert not [n for n, _ in model.named_modules() if "lora" in n]
    assert all(p.requires_grad for p in model.parameters())
    torch.testing.assert_close(_logits(model, ids), seen["adapted"], rtol=1e-5, atol=1e-5)
    model.save_pretrained(tmp_path / "merged")
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "merged", local_files_only=True)
    torch.testing.assert_close(_logits(loaded, ids), seen["adapted"], rtol=1e-5, atol=1e-5)
    assert not (tmp_path / "merged" / "adapter_config.json").exists()


def test_an_interrupted_lora_run_resumes_from_its_adapter_checkpoint(tokenizer, tmp_path):
    # Constant LR: stopping at step 2 and going on to 4 is the same schedule as 4 at once.
    # Gradient checkpointing on too: non-reentrant, it works with LoRA's frozen embeddings.
    settings = {
        "batch_size": 4,
        "learning_rate": 1e-2,
        "lr_scheduler": "constant",
        "warmup_ratio": 0.0,
        "save_steps": 2,
        "logging_steps": 1,
        "gradient_checkpointing": True,
        "lora": LORA,
    }

    def sft(model, folder: str, steps: int) -> dict:
        section = TrainingSection(max_steps=steps, **settings)
        return train_sft(model, tokenizer, EXAMPLES, tmp_path / folder, section, seed=0)

    straight = tiny_model(tokenizer)
    sft(straight, "a", 4)
    resumed = tiny_model(tokenizer)
    first = sft(tiny_model(tokenizer), "b", 2)
    assert first["steps"] == 2
    checkpoint = tmp_path / "b" / "checkpoint-2"
    assert (checkpoint / "adapter_model.safetensors").is_file()  # the adapters only
    assert not (checkpoint / "model.safetensors").exists()
    second = sft(resumed, "b", 4)
    assert second["resumed_from"] == str(checkpoint) and second["steps"] == 4
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6, msg=name)
    assert any(
        not torch.equal(a, b)
        for a, b in zip(
            straight.state_dict().values(), tiny_model(tokenizer).state_dict().values(), strict=True
        )
    )


def test_the_stage_records_lora_and_its_base_in_lineage(tmp_path):
    lora = {"r": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    section = {"max_steps": 2, "batch_size": 4, "learning_rate": 1e-2, "lora": lora}
    ctx, io = policy_stage(tmp_path, section)
    result = raw_stage_function("train_policy")(ctx, io)
    assert result.summary == {
        "variant": "rlmec",
        "lora": lora,
        "base": "policy-artifact-id",  # the parent policy the adapters were merged into
    }
    assert json.loads((io.out / "training.json").read_text())["lora"] == lora
    AutoModelForCausalLM.from_pretrained(io.out / "model", local_files_only=True)
