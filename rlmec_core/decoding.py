"""Batched decoding with a KV cache in which a finished row leaves the batch.

``model.generate`` runs every row of a batch until the last one ends: with a hundred
samples of 30 to 128 tokens, most of its decoding steps compute rows that have already
emitted EOS, and on a CPU a step costs in proportion to its rows. Here a row that emits an
EOS is removed from the batch and from the KV cache (``Cache.batch_select_indices``), so the
work is the sum of the rows' lengths, not the batch size times the longest.

Two more savings: k samples of a prompt share one run of the prompt (its KV cache is
repeated), and top-p sorts a row's few hundred most likely tokens, not the whole
vocabulary, when they hold the mass (checked; else it sorts all).

The choices follow ``generate`` with the same settings: greedy is the arg-max (the same
tokens); sampling divides the logits by the temperature, keeps the tokens
``TopPLogitsWarper`` keeps and draws from their renormalised probabilities with the global
torch generator, so a caller's ``torch.manual_seed`` makes it repeatable (the same
distribution as ``generate``, not the same draws).
"""

from __future__ import annotations

import torch
from torch import nn

from rlmec_core.logprobs import _cache_keyword, position_ids_from_mask

TOP_P_CANDIDATES = 256  # tokens sorted per row for top-p; the full vocabulary only if short


def top_p_candidates(
    logits: torch.Tensor, top_p: float, candidates: int = TOP_P_CANDIDATES
) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens top-p keeps and their renormalised probabilities, ``[rows, n]`` each
    (probability 0 where a row keeps fewer than ``n``).

    The kept set is ``TopPLogitsWarper``'s: a token stays while the tokens more likely
    than it hold less than ``top_p`` of the mass (at least one stays). Sorting the whole
    vocabulary for every row and step cost a CPU decoding step about a quarter of its
    time; the set lies within the ``candidates`` most likely tokens whenever they hold
    ``top_p`` of the mass, which is checked, else the whole vocabulary is sorted.
    """
    log_total = torch.logsumexp(logits, dim=-1, keepdim=True)
    width = min(candidates, logits.shape[-1])
    top_logits, top_ids = torch.topk(logits, width, dim=-1)
    probs = (top_logits - log_total).exp()
    if width < logits.shape[-1] and (probs.sum(dim=-1) < top_p).any():
        top_logits, top_ids = torch.sort(logits, dim=-1, descending=True)
        probs = (top_logits - log_total).exp()
    above = probs.cumsum(dim=-1) - probs  # mass of the more likely tokens
    keep = above < top_p
    keep[:, 0] = True
    kept = torch.where(keep, probs, torch.zeros_like(probs))
    return top_ids, kept / kept.sum(dim=-1, keepdim=True)


def next_tokens(logits: torch.Tensor, temperature: float, top_p: float) -> torch.Tensor:
    """One token per row of ``[rows, vocab]`` logits: arg-max when ``temperature == 0``,
    else a draw after temperature and top-p."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    scaled = logits.float() / temperature
    if top_p >= 1:
        return torch.multinomial(scaled.softmax(dim=-1), num_samples=1).squeeze(1)
    ids, probs = top_p_candidates(scaled, top_p)
    return ids.gather(-1, torch.multinomial(probs, num_samples=1)).squeeze(1)


def left_padded(
    prompt_ids: list[list[int]], pad_id: int, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` of prompts padded on the left, so that every
    prompt ends in the last column, where decoding continues."""
    if any(len(ids) == 0 for ids in prompt_ids):
        raise ValueError("an empty prompt: decoding needs at least one token")
    width = max(len(ids) for ids in prompt_ids)
    ids = torch.full((len(prompt_ids), width), pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompt_ids):
        ids[row, width - len(prompt) :] = torch.tensor(list(prompt), dtype=torch.long)
        mask[row, width - len(prompt) :] = 1
    return ids.to(device), mask.to(device)


def _returned_cache(output, keyword: str):
    cache = getattr(output, keyword, None)
    return cache if cache is not None else output.past_key_values


@torch.no_grad()
def decode(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_ids: set[int] | list[int],
    temperature: float = 0.0,
    top_p: float = 1.0,
    num_return_sequences: int = 1,
) -> list[list[int]]:
    """The new token ids of each row of a left-padded batch, up to and including its first
    EOS (or ``max_new_tokens`` of them); with ``num_return_sequences`` k, k continuations
    of each prompt, row ``i * k + j`` (``generate``'s layout). A prompt is run once and its
    KV cache repeated for its k continuations (``generate`` runs it k times)."""
    if max_new_tokens < 1 or num_return_sequences < 1:
        raise ValueError(
            "max_new_tokens and num_return_sequences must be >= 1, got "
            f"{max_new_tokens}, {num_return_sequences}"
        )
    if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"input_ids [batch, length] and an attention_mask of its shape, got "
            f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}"
        )
    if not attention_mask[:, -1].bool().all():
        raise ValueError("decode needs left padding: every row's last column a real token")
    keyword = _cache_keyword(model)  # "cache" in transformers 5, "past_key_values" before
    if keyword is None:
        raise ValueError(f"{type(model).__name__}.forward takes no KV cache")
    eos = torch.tensor(sorted(eos_ids), device=input_ids.device)
    positions = position_ids_from_mask(attention_mask)
    out = model(
        input_ids=input_ids,
        attention_mask=attention_mask,
        position_ids=positions,
        use_cache=True,
        logits_to_keep=1,
    )
    cache, mask, logits = _returned_cache(out, keyword), attention_mask, out.logits[:, -1, :]
    next_position = positions[:, -1:] + 1
    if num_return_sequences > 1:
        k = num_return_sequences
        cache.batch_repeat_interleave(k)
        mask, logits = mask.repeat_interleave(k, 0), logits.repeat_interleave(k, 0)
        next_position = next_position.repeat_interleave(k, 0)
    rows = torch.arange(mask.shape[0], device=input_ids.device)  # each live row's index
    generated: list[list[int]] = [[] for _ in range(mask.shape[0])]
    for step in range(max_new_tokens):
        tokens = next_tokens(logits, temperature, top_p)
        for row, token in zip(rows.tolist(), tokens.tolist(), strict=True):
            generated[row].append(token)
        live = ~torch.isin(tokens, eos)
        if step == max_new_tokens - 1 or not live.any():
            break
        if not live.all():
            keep = live.nonzero().squeeze(1)
            cache.batch_select_indices(keep)
            rows, mask, tokens = rows[keep], mask[keep], tokens[keep]
            next_position = next_position[keep]
        mask = torch.cat([mask, mask.new_ones((mask.shape[0], 1))], dim=1)
        out = model(
            input_ids=tokens.unsqueeze(1),
            attention_mask=mask,
            position_ids=next_position,
            use_cache=True,
            **{keyword: cache},
        )
        cache, logits = _returned_cache(out, keyword), out.logits[:, -1, :]
        next_position = next_position + 1
    return generated
