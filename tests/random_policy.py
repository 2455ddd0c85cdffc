"""A tiny Llama with large random weights, for tests that compare generation paths."""

from __future__ import annotations

import torch
from datasets import Dataset
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlmec_core.data.synthetic import synthetic_splits
from rlmec_core.policy_prompt import format_policy_prompt
from rlmec_core.tokenizer import train_tokenizer
from tests.tiny_models import tiny_llama


def random_policy(n_dev: int) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, Dataset]:
    """The model, its tokenizer (trained on 100 synthetic problems) and ``n_dev`` held-out
    problems. A freshly initialised model repeats one token; large random weights make its
    greedy continuations differ by prompt, so a padding or batching bug shows as a mismatch.
    """
    splits = synthetic_splits(seed=0, n_train=100, n_dev=n_dev, n_test=0)
    train = splits["train"]
    pairs = zip(train["question"], train["gold_solution"], strict=True)
    tokenizer = train_tokenizer([format_policy_prompt(q) + s for q, s in pairs], vocab_size=320)
    model = tiny_llama(tokenizer, heads=4, positions=256)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(0)
        for param in model.parameters():
            if param.dim() == 2:
                param.copy_(torch.randn(param.shape, generator=gen) * 0.5)
    return model, tokenizer, splits["dev"]
