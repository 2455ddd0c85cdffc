"""Micro bootstrap end to end, and SFT's response-only loss and checkpoint resume."""

from __future__ import annotations

import shutil

import pytest
import torch
from datasets import DatasetDict
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlmec_core.bootstrap import bootstrap_policy
from rlmec_core.config import TrainingSection
from rlmec_core.policy_prompt import format_policy_prompt
from rlmec_core.trainers.sft import (
    IGNORE_INDEX,
    ResponseOnlyCollator,
    tokenize_example,
    train_sft,
)
from tests.micro_sft import MICRO, one_layer_llama, sft_examples


def test_micro_bootstrap_saves_a_loadable_policy(micro_splits, tmp_path):
    out_dir = tmp_path / "policy"
    metrics = bootstrap_policy(
        micro_splits, out_dir, MICRO, seed=0, checkpoint_dir=tmp_path / "ckpt"
    )
    assert 0.0 <= metrics["dev_accuracy"] <= 1.0 and metrics["dev_n"] == 16
    assert metrics["sft_steps"] == 4  # 64 examples / batch 16, one epoch
    assert metrics["loss_history"][-1][1] < metrics["loss_history"][0][1]
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(
        [
            "config.json",
            "generation_config.json",
            "model.safetensors",
            "tokenizer.json",
            "tokenizer_config.json",
        ]
    )  # the final model only; checkpoints live elsewhere
    assert (tmp_path / "ckpt" / "sft").is_dir()

    tokenizer = AutoTokenizer.from_pretrained(out_dir, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(out_dir, local_files_only=True)
    text = format_policy_prompt(micro_splits["dev"][0]["question"])
    assert tokenizer.decode(tokenizer(text)["input_ids"]) == text
    assert model.config.vocab_size == len(tokenizer) == metrics["vocab_size"]

    # A rerun finds the finished checkpoint and trains no further.
    again = bootstrap_policy(micro_splits, out_dir, MICRO, seed=0, checkpoint_dir=tmp_path / "ckpt")
    assert again["sft_steps"] == 4
    assert again["dev_accuracy"] == metrics["dev_accuracy"]


def test_bootstrap_needs_train_and_dev(micro_splits, tmp_path):
    with pytest.raises(ValueError, match="'dev'"):
        bootstrap_policy(
            DatasetDict({"train": micro_splits["train"]}), tmp_path / "p", MICRO, seed=0
        )


def test_loss_is_on_response_tokens_only(micro_tokenizer):
    row = tokenize_example(micro_tokenizer, "Question: q\nAnswer:\n", "The answer is 5", 512)
    prompt_ids = micro_tokenizer("Question: q\nAnswer:\n")["input_ids"]
    response_ids = micro_tokenizer("The answer is 5", add_special_tokens=False)["input_ids"]
    eos = [micro_tokenizer.eos_token_id]
    assert row["input_ids"] == prompt_ids + response_ids + eos
    assert row["labels"] == [IGNORE_INDEX] * len(prompt_ids) + response_ids + eos

    short = tokenize_example(micro_tokenizer, "Question: q\nAnswer:\n", "x", 3)
    batch = ResponseOnlyCollator(micro_tokenizer.pad_token_id)([row, short])
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape
    assert batch["labels"][1].tolist() == [IGNORE_INDEX] * batch["labels"].shape[1]
    assert batch["attention_mask"][1].sum() == 3
    assert (batch["input_ids"][1, 3:] == micro_tokenizer.pad_token_id).all()


def test_sft_resumes_from_the_last_checkpoint(micro_splits, micro_tokenizer, tmp_path):
    examples = sft_examples(micro_splits, 32)
    training = TrainingSection(
        epochs=1.0,
        learning_rate=3e-3,
        batch_size=4,
        warmup_ratio=0.1,
        max_length=512,
        save_steps=3,
        save_total_limit=None,
        logging_steps=1,
    )
    full_model = one_layer_llama(micro_tokenizer)
    full = train_sft(full_model, micro_tokenizer, examples, tmp_path / "full", training, seed=0)
    assert full["steps"] == 8
    assert [step for step, _ in full["loss_history"]] == list(range(1, 9))

    # Simulate a run killed after step 3: only checkpoint-3 survives.
    run_dir = tmp_path / "run"
    shutil.copytree(tmp_path / "full" / "checkpoint-3", run_dir / "checkpoint-3")
    resumed_model = one_layer_llama(micro_tokenizer)
    resumed = train_sft(resumed_model, micro_tokenizer, examples, run_dir, training, seed=0)
    assert resumed["resumed_from"].endswith("checkpoint-3")
    assert resumed["steps"] == 8
    assert [step for step, _ in resumed["loss_history"]] == list(range(1, 9))
    # Same data order, optimizer and scheduler state: it ends where the full run ended.
    assert [s for s, _ in resumed["loss_history"]] == [s for s, _ in full["loss_history"]]
    resumed_losses = [loss for _, loss in resumed["loss_history"][3:]]
    assert resumed_losses == pytest.approx([loss for _, loss in full["loss_history"][3:]], rel=1e-4)
    for a, b in zip(full_model.parameters(), resumed_model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)
    assert (run_dir / "checkpoint-8").is_dir()


def test_sft_rejects_malformed_examples(micro_tokenizer, tmp_path):
    with pytest.raises(ValueError, match="example 1 has no string field 'response'"):
        train_sft(
            one_layer_llama(micro_tokenizer),
            micro_tokenizer,
            [{"prompt": "a", "response": "b"}, {"prompt": "a"}],
            tmp_path,
            TrainingSection(epochs=1, learning_rate=1e-3, batch_size=2, warmup_ratio=0.0),
            seed=0,
        )
