"""The naive reference of ``response_logprobs.batched_response_logprobs``: one unpadded
sequence at a time, full float32 log-softmax over the vocabulary (tests and the batching
benchmark compare against it)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import PreTrainedModel


@torch.no_grad()
def sequential_response_logprobs(
    model: PreTrainedModel,
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]],
) -> list[list[float]]:
    """The straightforward reference: one unpadded sequence at a time, full float32
    log-softmax over the vocabulary. Used by the tests and the batching benchmark."""
    if len(prompt_ids) != len(response_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(response_ids)} responses")
    was_training = model.training
    model.eval()
    out = []
    for prompt, response in zip(prompt_ids, response_ids, strict=True):
        ids = torch.tensor([[*prompt, *response]], dtype=torch.long, device=model.device)
        logp = torch.log_softmax(model(input_ids=ids).logits[0].float(), dim=-1)
        # The logits at position t-1 predict token t.
        rows = torch.arange(len(prompt) - 1, len(prompt) + len(response) - 1)
        out.append(logp[rows, torch.tensor(list(response))].tolist())
    if was_training:
        model.train()
    return out
