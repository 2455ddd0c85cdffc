"""Bootstrap from a local model folder: SFT on the gold solutions in the model's chat format,
or (epochs 0) the folder as it is."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from rlmec_core import bootstrap as bootstrap_module
from rlmec_core.bootstrap import bootstrap_policy
from rlmec_core.config import BootstrapSection, PipelineConfig
from rlmec_core.data.io import save_parquet
from rlmec_core.data.synthetic import synthetic_splits
from rlmec_core.policy_prompt import format_policy_prompt
from storage import catalog
from tasks import bootstrap as _registers_the_stage  # noqa: F401
from tasks.models import model_dir
from tasks.stage import StageIO, raw_stage_function
from tests.chat_model import IM_END, save_chat_model

TRAINING = {
    "epochs": 1.0,
    "learning_rate": 3e-3,
    "batch_size": 16,
    "warmup_ratio": 0.0,
    "logging_steps": 1,
    "eval_batch_size": 8,
    "eval_max_new_tokens": 16,
}


@pytest.fixture(scope="module")
def splits():
    return synthetic_splits(seed=0, n_train=32, n_dev=8, n_test=8)


@pytest.fixture(scope="module")
def model_folder(splits, tmp_path_factory):
    train = splits["train"]
    pairs = zip(train["question"], train["gold_solution"], strict=True)
    texts = [format_policy_prompt(q) + s for q, s in pairs]
    return save_chat_model(tmp_path_factory.mktemp("instruct") / "model", texts)


def test_bootstrap_fine_tunes_a_local_model_in_its_chat_format(
    splits, model_folder, tmp_path, monkeypatch
):
    trained_on = {}
    train_sft = bootstrap_module.train_sft

    def spy(model, tokenizer, examples, *args, **kwargs):
        trained_on.update(examples=examples, eos_id=kwargs["eos_id"], tokenizer=tokenizer)
        return train_sft(model, tokenizer, examples, *args, **kwargs)

    monkeypatch.setattr(bootstrap_module, "train_sft", spy)
    out = tmp_path / "policy"
    cfg = BootstrapSection(model_path=str(model_folder), **TRAINING)
    metrics = bootstrap_policy(
        splits, out, cfg, seed=0, checkpoint_dir=tmp_path / "ckpt", model_path=model_folder
    )
    assert metrics["prompt_format"] == "chat" and metrics["sft_steps"] == 2
    assert metrics["dev_n"] == 8 and 0.0 <= metrics["dev_accuracy"] <= 1.0

    # Trained on the gold solutions, after chat-template prompts, ending at the end of turn.
    tokenizer = trained_on["tokenizer"]
    examples = trained_on["examples"]
    assert [e["response"] for e in examples] == list(splits["train"]["gold_solution"])
    assert examples[0]["prompt"].startswith("<|bos|><|im_start|>user\n")
    assert examples[0]["prompt"].endswith("<|im_start|>assistant\n")
    assert trained_on["eos_id"] == tokenizer.convert_tokens_to_ids(IM_END)

    # The artifact: the fine-tuned weights, the model's tokenizer with its template, and a
    # generation config that stops at the end of turn.
    before, after = (
        load_file(model_folder / "model.safetensors"),
        load_file(out / "model.safetensors"),
    )
    assert any(not torch.equal(before[k], after[k]) for k in before)
    loaded = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    assert tokenizer.convert_tokens_to_ids(IM_END) in loaded.generation_config.eos_token_id
    assert AutoTokenizer.from_pretrained(out).chat_template == tokenizer.chat_template


def _stage(tmp_path, splits, bootstrap: dict):
    data = tmp_path / "data"
    if not data.is_dir():
        for name in ("train", "dev"):
            save_parquet(splits[name], data / f"{name}.parquet")
    config = PipelineConfig.model_validate({"bootstrap": bootstrap})
    out = tmp_path / f"out-{len(list(tmp_path.glob('out-*')))}"
    out.mkdir()
    io = StageIO(inputs={"data": data}, out=out, scratch=out / "scratch", parent_ids={})
    return SimpleNamespace(config=config, run=None, workspace=str(tmp_path)), io


def test_the_stage_keeps_a_folder_reference_for_epochs_0_and_trains_otherwise(
    splits, model_folder, tmp_path
):
    ctx, io = _stage(tmp_path, splits, {"model_path": str(model_folder), "epochs": 0})
    result = raw_stage_function("bootstrap")(ctx, io)
    assert result.kind == "model_ref" and result.summary == {"model_path": str(model_folder)}
    assert json.loads(catalog.MODEL_REF.path(io.out).read_text())["path"] == str(model_folder)
    assert model_dir(io.out) == model_folder

    lora = {"r": 4, "alpha": 8.0, "dropout": 0.0, "target_modules": "all-linear"}
    section = {"model_path": str(model_folder), **TRAINING, "lora": lora}
    ctx, io = _stage(tmp_path, splits, section)
    result = raw_stage_function("bootstrap")(ctx, io)
    assert result.kind == "policy"
    assert result.summary == {
        "prompt_format": "chat",
        "model_path": str(model_folder),
        "lora": lora,
        "base": str(model_folder),
    }
    assert result.metrics["trainable_params"] < result.metrics["n_params"] / 4
    AutoModelForCausalLM.from_pretrained(io.out / "model", local_files_only=True)


def test_epochs_0_needs_a_model_to_start_from():
    with pytest.raises(ValueError, match="needs model_path"):
        BootstrapSection(epochs=0)
    with pytest.raises(ValueError, match="max_steps"):
        BootstrapSection(model_path="m", epochs=0, max_steps=3)
