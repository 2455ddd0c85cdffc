"""The initial policy: a local model, or a tokenizer and tiny Llama trained from scratch,
fine-tuned by SFT on the gold solutions.

RLMEC starts from a policy that already solves some problems and fails others. With a
local Hugging Face model (``bootstrap.model_path``) that model is fine-tuned on the train
split's gold solutions first, as the method does, so it writes solutions in the pipeline's
format. Offline, with no hub, we make one: train a tokenizer on the training problems,
build a tiny Llama, fine-tune it the same way. Both then get their greedy dev accuracy.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from datasets import Dataset, DatasetDict
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from rlmec_core.config import BootstrapSection
from rlmec_core.evaluation import greedy_accuracy
from rlmec_core.grm_data import CORRECT_RESPONSE, error_step_prompt, rewrite_prompt
from rlmec_core.modeling import build_tiny_llama, load_policy
from rlmec_core.policy_prompt import format_policy_prompt
from rlmec_core.precision import torch_dtype
from rlmec_core.prompt_format import PromptStyle, prompt_style
from rlmec_core.tokenizer import train_tokenizer
from rlmec_core.trainers.dev_curve import DevEarlyStopping
from rlmec_core.trainers.lora import lora_dtype
from rlmec_core.trainers.sft import checkpoint_step, train_sft

logger = logging.getLogger(__name__)


def tokenizer_corpus(train: Iterable[Mapping[str, Any]]) -> Iterator[str]:
    """What the tokenizer learns its merges from: every text the policy reads and writes,
    and the GRM's prompts around them. The GRM starts from this policy with its tokenizer;
    without its instructions and headers in the corpus they cost a token per letter (380
    tokens per GRM prompt instead of about 250 with the tiny run's vocabulary)."""
    for row in train:
        question, solution = row["question"], row["gold_solution"]
        yield format_policy_prompt(question) + solution
        yield error_step_prompt(question, solution, solution) + CORRECT_RESPONSE
        yield rewrite_prompt(question, solution, solution) + solution


def save_policy_atomically(
    model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, out_dir: Path
) -> None:
    """Write model (safetensors) and tokenizer to a temp dir, then swap it into place,
    so ``out_dir`` is never a half-written model."""
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.tmp-{os.getpid()}"
    old = out_dir.parent / f".{out_dir.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if out_dir.exists():
        os.replace(out_dir, old)
    os.replace(tmp, out_dir)
    shutil.rmtree(old, ignore_errors=True)


def bootstrap_policy(
    splits: DatasetDict,
    out_dir: str | Path,
    cfg: BootstrapSection,
    *,
    seed: int,
    checkpoint_dir: str | Path | None = None,
    model_path: str | Path | None = None,
    prompt_format: str = "auto",
) -> dict[str, Any]:
    """Train the initial policy on ``splits["train"]``, evaluate it on ``splits["dev"]``,
    save it to ``out_dir`` (only the final model and tokenizer). ``model_path``: a local
    Hugging Face model to fine-tune; None: a tiny Llama sized by ``cfg``, with a tokenizer
    trained here. ``cfg`` sets the training (precision, LoRA...); ``seed`` seeds the
    initialisation and the data order. ``prompt_format``: ``prompts.format``.

    SFT checkpoints and the trained tokenizer live in ``checkpoint_dir`` (default:
    ``<out_dir>-checkpoints`` next to it), so a rerun after an interruption resumes.
    Returns metrics: dev_accuracy, dev_n, train_loss, final_loss, sft_steps, n_params,
    vocab_size, sft_seconds, eval_seconds, seconds, loss_history, and ``prompt_format``
    (the resolved style's name, ``plain`` or ``chat``); with ``cfg.dev_patience`` also
    ``dev_curve`` (``(step, epoch, accuracy)`` after each epoch) and ``best_epoch``, the
    epoch whose weights are kept (early stopping on dev).
    """
    _check_splits(splits)
    start = time.perf_counter()
    out_dir = Path(out_dir)
    checkpoint_dir = (
        Path(checkpoint_dir)
        if checkpoint_dir is not None
        else out_dir.with_name(f"{out_dir.name}-checkpoints")
    )
    train = splits["train"]
    model, tokenizer, positions = _initial_model(train, cfg, seed, checkpoint_dir, model_path)
    style = prompt_style(tokenizer, prompt_format)
    examples = [
        {"prompt": format_policy_prompt(q, style), "response": s}
        for q, s in zip(train["question"], train["gold_solution"], strict=True)
    ]
    # A sequence longer than the model's positions cannot be trained on.
    training = cfg.model_copy(update={"max_length": min(cfg.max_length, positions)})

    def dev_accuracy(policy: Any) -> dict[str, Any]:
        return greedy_accuracy(
            policy,
            tokenizer,
            splits["dev"],
            batch_size=cfg.eval_batch_size,
            max_new_tokens=cfg.eval_max_new_tokens,
            style=style,
        )

    early_stopping = None
    if cfg.dev_patience is not None:
        early_stopping = DevEarlyStopping(
            lambda policy: dev_accuracy(policy)["accuracy"], cfg.dev_patience
        )
    sft = train_sft(
        model,
        tokenizer,
        examples,
        checkpoint_dir / "sft",
        training,
        seed=seed,
        eos_id=style.response_end(tokenizer),
        early_stopping=early_stopping,
    )
    dev = dev_accuracy(model)
    save_policy_atomically(model, tokenizer, out_dir)
    return _bootstrap_metrics(model, tokenizer, style, sft, dev, start, early_stopping)


def _check_splits(splits: DatasetDict) -> None:
    for split in ("train", "dev"):
        if split not in splits:
            raise ValueError(f"bootstrap_policy: splits has no {split!r} split ({list(splits)})")
    if len(splits["train"]) == 0:
        raise ValueError("bootstrap_policy: the train split is empty")


def _initial_model(
    train: Dataset,
    cfg: BootstrapSection,
    seed: int,
    checkpoint_dir: Path,
    model_path: str | Path | None,
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, int]:
    """The model to fine-tune, its tokenizer, and how many positions it takes: the local
    model at ``model_path``, or (None) a tiny Llama with a tokenizer trained on ``train``."""
    if model_path is not None:
        model, tokenizer = load_policy(
            model_path, dtype=lora_dtype(torch_dtype(cfg.precision), cfg.lora)
        )
        positions = getattr(model.config, "max_position_embeddings", None) or cfg.max_length
        if cfg.learning_rate >= 1e-3:
            logger.warning(
                "bootstrap: learning_rate %g fine-tunes %s; that suits the tiny model trained "
                "from scratch, a pretrained one wants about 1e-5 (bootstrap.learning_rate)",
                cfg.learning_rate,
                model_path,
            )
    else:
        tokenizer = _offline_tokenizer(train, cfg, checkpoint_dir)
        model = build_tiny_llama(tokenizer, seed=seed, **cfg.tiny_architecture())
        positions = cfg.max_position_embeddings
    return model, tokenizer, positions


def _bootstrap_metrics(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    style: PromptStyle,
    sft: Mapping[str, Any],
    dev: Mapping[str, Any],
    start: float,
    early_stopping: DevEarlyStopping | None,
) -> dict[str, Any]:
    """``bootstrap_policy``'s metrics (see there), ``seconds`` counted from ``start``."""
    return {
        "dev_accuracy": dev["accuracy"],
        "dev_n": dev["n"],
        "train_loss": sft["train_loss"],
        "final_loss": sft["final_loss"],
        "sft_steps": sft["steps"],
        # 0 for a fresh run; the checkpoint's step when an interrupted run was resumed.
        "resumed_from_step": checkpoint_step(sft["resumed_from"]),
        "n_params": sum(p.numel() for p in model.parameters()),
        "trainable_params": sft["trainable_params"],
        "vocab_size": len(tokenizer),
        "sft_seconds": sft["runtime_s"],
        "eval_seconds": dev["seconds"],
        "eval_tokens_per_second": dev["tokens_per_second"],
        "seconds": time.perf_counter() - start,
        "loss_history": sft["loss_history"],
        "prompt_format": style.name,
        # With bootstrap.dev_patience: dev accuracy after each epoch, and the epoch kept.
        **(
            {"dev_curve": sft["dev_curve"], "best_epoch": sft["best_epoch"]}
            if early_stopping
            else {}
        ),
    }


def _offline_tokenizer(
    train: Iterable[Mapping[str, Any]], cfg: BootstrapSection, checkpoint_dir: Path
) -> PreTrainedTokenizerBase:
    """The tiny policy's tokenizer, trained on ``train`` and kept with the checkpoints: a
    resumed run must reuse the same ids."""
    tokenizer_dir = checkpoint_dir / "tokenizer"
    if not (tokenizer_dir / "tokenizer.json").is_file():
        trained = train_tokenizer(tokenizer_corpus(train), cfg.vocab_size)
        tmp = checkpoint_dir / f".tokenizer.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        trained.save_pretrained(tmp)
        os.replace(tmp, tokenizer_dir)
    # Always the saved copy, fresh run or resumed one, so both save byte-identical files.
    return AutoTokenizer.from_pretrained(tokenizer_dir, local_files_only=True)
