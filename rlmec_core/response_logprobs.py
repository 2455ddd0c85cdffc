"""``log P(response_t | prompt, response_<t)`` for many (prompt, response) pairs at once: the
engine behind annotate's GRM rewards and reference log-probs, and the GRM's likelihood
verdict. It follows ``batch_plan``'s plan: shared prompt prefixes run once into a cache,
then right-padded batches that continue it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import PreTrainedModel

from rlmec_core.batch_plan import Batch, Prefix, plan_batches
from rlmec_core.logprobs import (
    DEFAULT_CHUNK_SIZE,
    prefix_cache,
    right_padded_response_logprobs,
    supports_prefix_cache,
)
from rlmec_core.progress import Progress

# Token positions per batch (rows x (cached prefix + longest row)). On CPU small batches keep
# the activations in cache and beat large ones; an accelerator wants large ones.
CPU_TOKEN_BUDGET = 2048
ACCELERATOR_TOKEN_BUDGET = 32768


def default_token_budget(device: torch.device) -> int:
    return CPU_TOKEN_BUDGET if device.type == "cpu" else ACCELERATOR_TOKEN_BUDGET


def _check_pairs(prompt_ids, response_ids, batch_size: int, token_budget: int | None) -> None:
    if len(prompt_ids) != len(response_ids):
        raise ValueError(f"{len(prompt_ids)} prompts but {len(response_ids)} responses")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if token_budget is not None and token_budget < 1:
        raise ValueError(f"token_budget must be >= 1, got {token_budget}")
    for index, (prompt, response) in enumerate(zip(prompt_ids, response_ids, strict=True)):
        if not prompt:
            raise ValueError(f"pair {index}: empty prompt; the first response token needs one")
        if not response:
            raise ValueError(f"pair {index}: empty response")


@torch.inference_mode()
def batched_response_logprobs(
    model: PreTrainedModel,
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]],
    *,
    pad_id: int,
    batch_size: int,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    token_budget: int | None = None,
    share_prefixes: bool = True,
    progress: bool = False,
    desc: str = "log-probs",
) -> list[list[float]]:
    """``log P(response_t | prompt, response_<t)`` per response token, per pair, in order.

    Equal to running each pair alone through a full log-softmax up to float rounding, but
    each prompt prefix that several pairs share is run once (``batch_plan.plan_batches``;
    ``share_prefixes=False`` turns that off) and the rest goes in length-sorted,
    right-padded batches of at most ``batch_size`` rows and ``token_budget`` token positions
    (default: ``CPU_TOKEN_BUDGET`` on CPU, ``ACCELERATOR_TOKEN_BUDGET`` elsewhere) through
    ``logprobs.right_padded_response_logprobs``, which needs no padding mask and projects
    only the response positions onto the vocabulary, ``chunk_size`` rows at a time.
    """
    _check_pairs(prompt_ids, response_ids, batch_size, token_budget)
    was_training = model.training
    model.eval()
    plan = plan_batches(
        prompt_ids,
        response_ids,
        token_budget=token_budget or default_token_budget(model.device),
        max_rows=batch_size,
        share_prefixes=share_prefixes and supports_prefix_cache(model),
    )
    # A prefix's cache is dropped after the last step that continues it.
    last_use = {}
    for index, step in enumerate(plan):
        parent = step.parent if isinstance(step, Prefix) else step.prefix
        if parent is not None:
            last_use[parent] = index
    caches: dict[int, Any] = {}
    out: list[list[float]] = [[] for _ in prompt_ids]
    with Progress(len(prompt_ids), desc, enabled=progress) as bar:
        for index, step in enumerate(plan):
            if isinstance(step, Prefix):
                tokens = prompt_ids[step.source][step.start : step.end]
                ids = torch.tensor([tokens], dtype=torch.long, device=model.device)
                caches[index] = prefix_cache(model, ids, caches.get(step.parent))
                parent = step.parent
            else:
                past = None if step.prefix is None else caches[step.prefix]
                scores = _score_batch(
                    model, step, prompt_ids, response_ids, pad_id, past, chunk_size
                )
                for i, values in zip(step.pairs, scores, strict=True):
                    out[i] = values
                bar.update(len(step.pairs))
                parent = step.prefix
            if parent is not None and last_use[parent] == index:
                del caches[parent]
    if was_training:
        model.train()
    return out


def _score_batch(
    model: PreTrainedModel,
    step: Batch,
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]],
    pad_id: int,
    past: Any,
    chunk_size: int,
) -> list[list[float]]:
    """One batch's response log-probs, row by row, after the cache ``past`` (or none)."""
    ids = torch.full((len(step.pairs), step.width), pad_id, dtype=torch.long)
    attention = torch.zeros_like(ids)
    wanted = torch.zeros_like(ids)
    for row, i in enumerate(step.pairs):
        own = prompt_ids[i][step.start :]
        n = len(own) + len(response_ids[i])
        ids[row, :n] = torch.tensor([*own, *response_ids[i]], dtype=torch.long)
        attention[row, :n] = 1
        wanted[row, len(own) : n] = 1
    device = model.device
    packed = right_padded_response_logprobs(
        model,
        ids.to(device),
        attention.to(device),
        wanted.to(device),
        past=past,
        chunk_size=chunk_size,
    ).cpu()
    return [packed[row, : len(response_ids[i])].tolist() for row, i in enumerate(step.pairs)]
