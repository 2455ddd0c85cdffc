"""Supervised fine-tuning on (prompt, response) pairs, loss on the response only.

Used to bootstrap the offline policy and, later, to train the generative reward model:
both are "given this prompt, produce this text" with the prompt masked out of the loss.
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from pathlib import Path
from typing import Any

import torch
from transformers import (
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
)
from transformers.trainer_utils import get_last_checkpoint

from rlmec_core.config import TRAINING_ARGUMENTS, TrainingSection
from rlmec_core.precision import resolve_precision
from rlmec_core.progress import on_terminal, use_progress_callbacks
from rlmec_core.trainers.dev_curve import DevEarlyStopping, dev_curve, stopped_early
from rlmec_core.trainers.guards import NonFiniteGuard
from rlmec_core.trainers.lean import IGNORE_INDEX, LeanCausalLMTrainer
from rlmec_core.trainers.lora import merge_lora, wrap_lora

logger = logging.getLogger(__name__)


def tokenize_example(
    tokenizer: PreTrainedTokenizerBase,
    prompt: str,
    response: str,
    max_length: int,
    eos_id: int | None = None,
) -> dict[str, list[int]]:
    """Token ids and labels for one example: prompt ids + response ids + EOS.

    Prompt and response are tokenised separately and concatenated, exactly as generation
    sees them (the prompt with the tokenizer's own special tokens, e.g. a BOS, the
    response with none), so the trained response tokens are the ones sampled later.
    ``eos_id``: the token that ends the response (a chat template's end-of-turn token,
    ``PromptStyle.response_end``); default the tokenizer's EOS.
    Sequences longer than ``max_length`` lose their tail.
    """
    if eos_id is None:
        eos_id = tokenizer.eos_token_id
    if eos_id is None:
        raise ValueError("tokenizer has no eos token; SFT needs one to teach the model to stop")
    prompt_ids = tokenizer(prompt)["input_ids"]
    response_ids = tokenizer(response, add_special_tokens=False)["input_ids"]
    response_ids = [*response_ids, eos_id]
    input_ids = (prompt_ids + response_ids)[:max_length]
    labels = ([IGNORE_INDEX] * len(prompt_ids) + response_ids)[:max_length]
    return {"input_ids": input_ids, "labels": labels}


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict[str, list[int]]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, list[int]]:
        return self.rows[index]


class ResponseOnlyCollator:
    """Right-pads a batch; padding gets label -100 and attention mask 0."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = pad_token_id

    def __call__(self, rows: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(r["input_ids"]) for r in rows)
        ids, labels, mask = [], [], []
        for r in rows:
            pad = width - len(r["input_ids"])
            ids.append(r["input_ids"] + [self.pad_token_id] * pad)
            labels.append(r["labels"] + [IGNORE_INDEX] * pad)
            mask.append([1] * len(r["input_ids"]) + [0] * pad)
        return {
            "input_ids": torch.tensor(ids),
            "labels": torch.tensor(labels),
            "attention_mask": torch.tensor(mask),
        }


# What every trainer of this project shares: checkpoints by step, no hub or reporting
# integrations (we log to MLflow ourselves), the CPU when there is no accelerator (otherwise
# the Trainer or `accelerate launch` picks), and plain-dict rows.
COMMON_TRAINING_ARGUMENTS: dict[str, Any] = {
    "save_strategy": "steps",
    "report_to": "none",
    "dataloader_num_workers": 0,
    "remove_unused_columns": False,
    # Plain AdamW: the fused default of recent transformers was slower on CPU here.
    "optim": "adamw_torch",
    # Under DDP every trained weight gets a gradient (the whole model, or LoRA's adapters):
    # no extra pass over the graph looking for unused ones.
    "ddp_find_unused_parameters": False,
}


def training_arguments(
    training: TrainingSection, output_dir: str | Path, *, seed: int, **overrides: Any
) -> TrainingArguments:
    """The TrainingArguments of a config section, with the project's common settings,
    across transformers 4.56+ and 5.x (whose warm-up option is named differently)."""
    kwargs: dict[str, Any] = {
        **COMMON_TRAINING_ARGUMENTS,
        "output_dir": str(output_dir),
        **{argument: getattr(training, name) for name, argument in TRAINING_ARGUMENTS.items()},
        "max_steps": training.max_steps if training.max_steps is not None else -1,
        "logging_first_step": True,  # a short run still gets a point on every curve
        "seed": seed,
        "data_seed": seed,
        "use_cpu": not (torch.cuda.is_available() or torch.backends.mps.is_available()),
        "disable_tqdm": not on_terminal(),
        **overrides,
    }
    precision = resolve_precision(training.precision)
    kwargs.setdefault("bf16", precision == "bf16")
    kwargs.setdefault("fp16", precision == "fp16")
    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    if "warmup_ratio" in fields:
        kwargs["warmup_ratio"] = training.warmup_ratio
    else:  # 5.x: a float in [0, 1) is a ratio of the total steps
        kwargs["warmup_steps"] = training.warmup_ratio
    if training.gradient_checkpointing:
        # Renamed activation_checkpointing in 5.x; non-reentrant also works with LoRA's
        # frozen embeddings (no input that requires grad).
        name = (
            "activation_checkpointing"
            if "activation_checkpointing" in fields
            else "gradient_checkpointing"
        )
        kwargs[name] = True
        kwargs[f"{name}_kwargs"] = {"use_reentrant": False}
    return TrainingArguments(**kwargs)


def refuse_sharded_weights(trainer: Trainer) -> None:
    """Fail before training when the weights end up sharded across processes.

    The stages save ``model`` as rank 0 holds it after training (LoRA merged into it):
    plain DDP and DeepSpeed ZeRO-1/2 keep a full copy there, ZeRO-3 and FSDP only a shard.
    """
    sharded = bool(getattr(trainer, "is_fsdp_enabled", False))
    if getattr(trainer, "is_deepspeed_enabled", False):
        plugin = trainer.accelerator.state.deepspeed_plugin
        sharded = sharded or getattr(plugin, "zero_stage", 0) == 3
    if sharded:
        raise ValueError(
            "launcher.config_file shards the weights (DeepSpeed ZeRO-3 or FSDP), but the "
            "stage saves rank 0's full copy of the model: use DeepSpeed ZeRO-1/2 or DDP, with "
            "LoRA for a model whose full fine-tuning does not fit"
        )


def train_sft(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    examples: list[dict[str, str]],
    output_dir: str | Path,
    training: TrainingSection,
    *,
    seed: int,
    resume: bool = True,
    eos_id: int | None = None,
    early_stopping: DevEarlyStopping | None = None,
) -> dict[str, Any]:
    """Fine-tune ``model`` in place on ``examples`` (dicts with "prompt" and "response").

    ``training`` is the stage's config section (epochs or max_steps, learning rate, batch
    size, schedule, max_length, save_steps, precision, LoRA...). With ``training.lora`` only
    adapters are trained and then merged into ``model``'s weights. ``eos_id`` ends every
    response (``tokenize_example``). Checkpoints go to
    ``output_dir/checkpoint-<step>`` every ``save_steps`` steps and at the end; with
    ``resume`` an existing checkpoint is picked up, so an interrupted run continues where
    it stopped (and a finished one does no more steps). The caller saves the final model.
    With ``early_stopping`` the model is measured on dev after every epoch, checkpoints are
    written at epoch ends instead, training stops once dev stops improving and the best
    epoch's weights are the ones returned (``training.epochs`` is then the most it trains).

    Returns ``train_loss`` (HF's mean over the run), ``final_loss`` (the last logged
    step), ``steps``, ``runtime_s``, ``n_examples``, ``n_truncated``, ``trainable_params``
    and ``loss_history`` (a list of ``(step, loss)``); with ``early_stopping`` also
    ``dev_curve`` (``(step, epoch, value)`` per epoch) and ``best_epoch``.
    """
    trainable, n_truncated = _sft_rows(tokenizer, examples, training.max_length, eos_id)

    output_dir = Path(output_dir)
    trained = wrap_lora(model, training.lora) if training.lora is not None else model
    last = last_complete_checkpoint(output_dir) if resume else None
    overrides = _early_stopping_overrides(training, early_stopping, last)
    trainer = LeanCausalLMTrainer(
        model=trained,
        args=training_arguments(training, output_dir, seed=seed, **overrides),
        train_dataset=ListDataset(trainable),
        data_collator=ResponseOnlyCollator(tokenizer.pad_token_id),
        callbacks=[early_stopping] if early_stopping is not None else None,
    )
    use_progress_callbacks(trainer)
    trainer.add_callback(NonFiniteGuard())  # a diverged run fails, commits nothing
    refuse_sharded_weights(trainer)
    if last:
        logger.info("train_sft: resuming from %s", last)
    result = trainer.train(resume_from_checkpoint=last)
    n_trainable = sum(p.numel() for p in trained.parameters() if p.requires_grad)
    if training.lora is not None:
        merge_lora(trained)  # into ``model``'s own weights: the caller saves ``model``
    model.eval()

    history = [
        (int(entry["step"]), float(entry["loss"]))
        for entry in trainer.state.log_history
        if "loss" in entry and "step" in entry
    ]
    return {
        "train_loss": float(result.training_loss),
        "final_loss": history[-1][1] if history else float("nan"),
        "steps": int(trainer.state.global_step),
        "runtime_s": float(result.metrics.get("train_runtime", 0.0)),
        "n_examples": len(trainable),
        "n_truncated": int(n_truncated),
        "trainable_params": int(n_trainable),
        "resumed_from": last,
        "loss_history": history,
        **(_curve_summary(trainer.state) if early_stopping is not None else {}),
    }


def _sft_rows(
    tokenizer: PreTrainedTokenizerBase,
    examples: list[dict[str, str]],
    max_length: int,
    eos_id: int | None,
) -> tuple[list[dict[str, list[int]]], int]:
    """The examples tokenised (``tokenize_example``, ``eos_id`` ending each response; None:
    the tokenizer's EOS), those with a response token left to train on, and how many were
    cut at ``max_length``."""
    if not examples:
        raise ValueError("train_sft: no examples")
    for i, ex in enumerate(examples):
        for key in ("prompt", "response"):
            if not isinstance(ex.get(key), str):
                raise ValueError(f"train_sft: example {i} has no string field {key!r}")
    if tokenizer.pad_token_id is None:
        raise ValueError("tokenizer has no pad token; load it with rlmec_core.modeling.load_policy")
    eos_id = tokenizer.eos_token_id if eos_id is None else eos_id
    rows = [
        tokenize_example(tokenizer, e["prompt"], e["response"], max_length, eos_id)
        for e in examples
    ]
    n_truncated = sum(r["input_ids"][-1] != eos_id for r in rows)
    if n_truncated:
        logger.warning(
            "train_sft: %d of %d examples cut at %d tokens", n_truncated, len(rows), max_length
        )
    trainable = [r for r in rows if any(t != IGNORE_INDEX for t in r["labels"])]
    if not trainable:
        raise ValueError(
            f"train_sft: every example's response is cut off by max_length={max_length}"
        )
    return trainable, n_truncated


def _early_stopping_overrides(
    training: TrainingSection, early_stopping: DevEarlyStopping | None, last: str | None
) -> dict[str, Any]:
    """TrainingArguments that early stopping changes: checkpoints at epoch ends, and a
    resumed run that had stopped takes no step more."""
    overrides: dict[str, Any] = {}
    if early_stopping is not None:
        overrides["save_strategy"] = "epoch"
        if training.save_total_limit == 1:
            # The Trainer's end deletes the last checkpoint when the limit is 1, and with it
            # the record that this run had stopped: keep the best and the last.
            overrides["save_total_limit"] = 2
        if last and stopped_early(last, early_stopping.patience):
            overrides["max_steps"] = checkpoint_step(last)  # done: no step more
    return overrides


def _curve_summary(state: Any) -> dict[str, Any]:
    curve = dev_curve(state.log_history)
    best = max(range(len(curve)), key=lambda i: (curve[i][2], -i)) if curve else None
    return {
        "dev_curve": curve,
        "best_epoch": round(curve[best][1]) if best is not None else None,
    }


def last_complete_checkpoint(output_dir: str | Path) -> str | None:
    """The newest Trainer checkpoint that was completely written, or None.

    The Trainer writes ``trainer_state.json`` last; a checkpoint without it was cut off by
    a crash mid-save and must not be resumed from (``get_last_checkpoint`` would pick it).
    """
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return None
    while (last := get_last_checkpoint(str(output_dir))) is not None:
        if (Path(last) / "trainer_state.json").is_file():
            return last
        shutil.rmtree(last)  # partial: remove it so the previous one is found
    return None


def checkpoint_step(checkpoint: str | Path | None) -> int:
    """The global step of a Trainer checkpoint folder (``checkpoint-<step>``); 0 for None."""
    if checkpoint is None:
        return 0
    return int(Path(checkpoint).name.rsplit("-", 1)[-1])
