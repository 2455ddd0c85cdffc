"""A tiny local "instruct model" for tests: a trained tokenizer with a chat template (its
own end-of-turn token, distinct from EOS) and a tiny Llama, saved as a HF model folder."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import processors
from transformers import PreTrainedTokenizerFast

from rlmec_core.tokenizer import train_tokenizer
from tests.tiny_models import tiny_llama

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
# ChatML-like, opening with the BOS as text (as Llama 3's and Gemma's templates do).
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}"
    "<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def chat_tokenizer(texts: Iterable[str], *, adds_bos: bool = False) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer with the chat template; ``adds_bos``: its encoding puts
    the BOS first by itself (then the template's text BOS must not double it)."""
    tokenizer = train_tokenizer(texts, vocab_size=320)
    tokenizer.add_special_tokens({"additional_special_tokens": [IM_START, IM_END]})
    tokenizer.chat_template = CHAT_TEMPLATE
    if adds_bos:
        bos = tokenizer.bos_token
        tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A $B", special_tokens=[(bos, tokenizer.bos_token_id)]
        )
    return tokenizer


def save_chat_model(path: Path, texts: Iterable[str], *, seed: int = 0) -> Path:
    """A tiny Llama with ``chat_tokenizer(texts)``, saved to ``path``."""
    tokenizer = chat_tokenizer(texts)
    model = tiny_llama(tokenizer, seed=seed)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path
