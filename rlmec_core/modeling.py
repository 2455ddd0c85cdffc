"""Build the tiny offline policy and load any local Hugging Face policy directory."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

from rlmec_core.prompt_format import end_of_turn_id


def build_tiny_llama(
    tokenizer: PreTrainedTokenizerBase,
    *,
    hidden_size: int,
    num_layers: int,
    num_heads: int,
    intermediate_size: int,
    max_position_embeddings: int,
    seed: int,
) -> LlamaForCausalLM:
    """A randomly initialised Llama-architecture causal LM sized for ``tokenizer``.

    The standard architecture (not a custom module) means every later stage, and any
    user's real model, goes through the same ``Auto*`` loading and ``generate`` code.
    """
    if hidden_size % num_heads:
        raise ValueError(f"hidden_size {hidden_size} is not divisible by num_heads {num_heads}")
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        if getattr(tokenizer, name) is None:
            raise ValueError(f"tokenizer has no {name}; train it with rlmec_core.tokenizer")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        tie_word_embeddings=True,  # halves the parameters of a model this small
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    # Seed the initialisation only, without disturbing the caller's global RNG stream.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.bos_token_id = tokenizer.bos_token_id
    return model


def load_policy(
    path: str | Path, *, dtype: torch.dtype | None = None, device: str | None = None
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load a policy (model + tokenizer) from a local directory, never from the hub.

    The tokenizer is set up for batched generation: left padding, and the EOS token as
    padding when the model ships without a pad token. Generation also stops at the chat
    template's end-of-turn token, when the tokenizer has one. ``dtype``: the weights' dtype
    (default: transformers' default); ``device``: where to put the model (default: CPU).
    """
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path}: not a model directory (no config.json)")
    tokenizer = load_generation_tokenizer(path)
    kwargs = {"dtype": dtype} if dtype is not None else {}
    model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, **kwargs)
    if device is not None:
        model.to(device)
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id
    stop_at_end_of_turn(model, tokenizer)
    return model, tokenizer


def load_generation_tokenizer(path: str | Path) -> PreTrainedTokenizerBase:
    """A model folder's tokenizer set up for batched generation: left padding, and the EOS
    token as padding when the model ships without a pad token."""
    tokenizer = AutoTokenizer.from_pretrained(Path(path), local_files_only=True)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return tokenizer


def stop_at_end_of_turn(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Add the chat template's end-of-turn token to the tokens generation stops at."""
    end = end_of_turn_id(tokenizer)
    if end is None:
        return
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    ids = [] if eos is None else list(eos) if isinstance(eos, list) else [eos]
    if end not in ids:
        model.generation_config.eos_token_id = [*ids, end]


def load_tokenizer_folder(path: str | Path) -> PreTrainedTokenizerBase:
    """The tokenizer of a local model folder (no weights loaded)."""
    return AutoTokenizer.from_pretrained(Path(path), local_files_only=True)


def same_vocabulary(a: PreTrainedTokenizerBase, b: PreTrainedTokenizerBase) -> bool:
    """Whether two tokenizers map every token to the same id (so one model can score the
    other's token ids)."""
    return a.get_vocab() == b.get_vocab()
