"""Per-token log-probabilities of given tokens under a causal LM, memory-lean.

Used for the GRM's token probabilities (stage 4b), the reference log-probs (stage 4c) and the
policy's log-probs during training (stage 5, with gradient). A full float32 log-softmax over
``[batch, length, vocab]`` is the largest tensor of the whole step for a modern vocabulary,
so only the positions whose next token is wanted are pushed through the output head, a chunk
of rows at a time, and each chunk is reduced to one number per row (logsumexp + gather)
before the next one starts. Under autograd each chunk is checkpointed, so its logits are
recomputed in the backward pass instead of being kept.

Layout: ``input_ids`` is ``[B, L]`` prompt + response with padding on either side;
``response_mask`` is ``[B, L]`` and marks the tokens whose log-prob is wanted (the response).

Scoring (no gradient) has two shortcuts, both exact for a causal LM:
``right_padded_response_logprobs`` takes rows padded on the right only, where no real token
can attend to the padding after it, so the model runs without a padding mask (no mask to
build, and SDPA's plain causal kernel, which is faster than its masked one on CPU); and it
can continue a KV cache of a prompt prefix that every row shares (``prefix_cache``), so that
prefix is run once, not once per row.
"""

from __future__ import annotations

import copy
import inspect
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

DEFAULT_CHUNK_SIZE = 512  # rows of [chunk, vocab] logits alive at once

HeadMode = Literal["auto", "hidden", "logits"]


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions that count only real tokens, so left padding does not shift them."""
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.clamp(min=0)


def _check_inputs(
    input_ids: torch.Tensor, attention_mask: torch.Tensor, response_mask: torch.Tensor
) -> torch.Tensor:
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be [batch, length], got shape {tuple(input_ids.shape)}")
    for name, mask in (("attention_mask", attention_mask), ("response_mask", response_mask)):
        if mask.shape != input_ids.shape:
            raise ValueError(
                f"{name} shape {tuple(mask.shape)} differs from input_ids {tuple(input_ids.shape)}"
            )
    wanted = response_mask.bool()
    if (wanted & ~attention_mask.bool()).any():
        raise ValueError("response_mask marks padding positions (attention_mask == 0)")
    if wanted[:, 0].any():
        raise ValueError("response_mask marks position 0, which has no prefix to predict it from")
    return wanted


def _plain_head(model: nn.Module) -> bool:
    # Some heads post-process the projection (Gemma soft-capping, Cohere logit scale); for
    # those the model's own forward is the only faithful source of logits.
    config = getattr(model, "config", None)
    if getattr(config, "final_logit_softcapping", None) is not None:
        return False
    if getattr(config, "logit_scale", None) is not None or hasattr(model, "logit_scale"):
        return False
    return model.get_output_embeddings() is not None


def _chunk_logprobs(
    head: nn.Module | None, rows: torch.Tensor, targets: torch.Tensor
) -> torch.Tensor:
    # rows: [n, hidden] (head given) or [n, vocab] logits (head None); one log-prob per row.
    logits = rows if head is None else head(rows)
    logits = logits.float()
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)


def _reduce_rows(
    head: nn.Module | None, rows: torch.Tensor, targets: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    pieces = []
    for start in range(0, rows.shape[0], chunk_size):
        r, t = rows[start : start + chunk_size], targets[start : start + chunk_size]
        if torch.is_grad_enabled() and r.requires_grad:
            pieces.append(checkpoint(_chunk_logprobs, head, r, t, use_reentrant=False))
        else:
            pieces.append(_chunk_logprobs(head, r, t))
    if not pieces:
        return rows.new_zeros((0,), dtype=torch.float32)
    return torch.cat(pieces)


def _resolve_head(model: nn.Module, head: HeadMode) -> str:
    if head == "auto":
        return "hidden" if _plain_head(model) else "logits"
    if head not in ("hidden", "logits"):
        raise ValueError(f"head must be 'auto', 'hidden' or 'logits', got {head!r}")
    return head


def _target_logprobs(
    model: nn.Module,
    head: str,
    inputs: dict[str, Any],
    input_ids: torch.Tensor,
    wanted: torch.Tensor,
    chunk_size: int,
) -> torch.Tensor:
    """Run the model on ``inputs``; float32 ``[B, L]`` log-probs of the ``wanted`` tokens."""
    # The state at position t-1 predicts token t, so shift the mask one step left.
    predictor = torch.zeros_like(wanted)
    predictor[:, :-1] = wanted[:, 1:]
    targets = input_ids[wanted]
    if head == "hidden":
        hidden = model.get_decoder()(**inputs)[0]
        values = _reduce_rows(model.get_output_embeddings(), hidden[predictor], targets, chunk_size)
    else:
        logits = model(**inputs).logits
        values = _reduce_rows(None, logits[predictor], targets, chunk_size)
    out = torch.zeros(input_ids.shape, dtype=torch.float32, device=input_ids.device)
    return out.masked_scatter(wanted, values)


def sequence_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    head: HeadMode = "auto",
) -> torch.Tensor:
    """``log π(input_ids[b, t] | input_ids[b, <t])`` where ``response_mask[b, t]``, else 0.

    Returns float32 ``[B, L]`` aligned with ``input_ids``. Differentiable when grad is on.
    ``head="hidden"`` runs the decoder and applies the output head only at the needed
    positions; ``head="logits"`` uses the model's full forward (logits in the model dtype)
    and reduces them in chunks; ``"auto"`` picks ``hidden`` when the head is a plain
    projection.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    wanted = _check_inputs(input_ids, attention_mask, response_mask)
    head = _resolve_head(model, head)
    inputs = {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "position_ids": position_ids_from_mask(attention_mask),
        "use_cache": False,
    }
    return _target_logprobs(model, head, inputs, input_ids, wanted, chunk_size)


def pack_response(values: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Move each row's response entries to the front: ``[B, L] -> [B, T]``, zero-padded.

    ``T`` is the longest response; row ``b`` holds its ``response_mask[b].sum()`` values in
    order, which is the layout of the rewards and weights the loss takes. Differentiable.
    """
    if values.shape != response_mask.shape:
        raise ValueError(
            f"values shape {tuple(values.shape)} differs from response_mask {tuple(response_mask.shape)}"
        )
    wanted = response_mask.bool()
    lengths = wanted.sum(-1)
    width = int(lengths.max()) if lengths.numel() else 0
    slot = wanted.long().cumsum(-1) - 1
    rows = torch.arange(values.shape[0], device=values.device).unsqueeze(-1).expand_as(slot)
    out = values.new_zeros((values.shape[0], width))
    return out.index_put((rows[wanted], slot[wanted]), values[wanted])


def response_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    **options: Any,
) -> torch.Tensor:
    """Response-token log-probs packed to ``[B, T]`` (row ``b``'s tokens first, then zeros);
    ``options`` (``chunk_size``, ``head``) as for :func:`sequence_logprobs`."""
    full = sequence_logprobs(model, input_ids, attention_mask, response_mask, **options)
    return pack_response(full, response_mask)


# ---------------------------------------------------------------- scoring shortcuts


def _cache_keyword(module: nn.Module) -> str | None:
    """The keyword ``module.forward`` takes a KV cache under (``past_key_values`` before
    transformers 5, ``cache`` since), or None when it takes none."""
    parameters = inspect.signature(module.forward).parameters
    for name in ("cache", "past_key_values"):
        if name in parameters:
            return name
    return None


def supports_prefix_cache(model: nn.Module) -> bool:
    """Whether ``prefix_cache`` and ``right_padded_response_logprobs(past=...)`` work."""
    decoder = model.get_decoder()
    return _cache_keyword(decoder) is not None and _cache_keyword(model) is not None


def prefix_cache(model: nn.Module, prefix_ids: torch.Tensor, past: Any = None) -> Any:
    """The KV cache of ``prefix_ids`` (``[1, n]``), continuing ``past`` when given.

    ``past`` (a cache from an earlier call) is copied, never changed, so one prefix can be
    continued in several ways. Meant for inference; the caller disables grad.
    """
    if prefix_ids.dim() != 2 or prefix_ids.shape[0] != 1 or prefix_ids.shape[1] < 1:
        raise ValueError(f"prefix_ids must be [1, n] with n >= 1, got {tuple(prefix_ids.shape)}")
    decoder = model.get_decoder()
    keyword = _cache_keyword(decoder)
    if keyword is None:
        raise ValueError(f"{type(decoder).__name__}.forward takes no KV cache")
    cache = copy.deepcopy(past) if past is not None else None
    return decoder(input_ids=prefix_ids, use_cache=True, **{keyword: cache})[keyword]


def right_padded_response_logprobs(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    response_mask: torch.Tensor,
    *,
    past: Any = None,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    head: HeadMode = "auto",
) -> torch.Tensor:
    """``response_logprobs`` for rows padded on the right only; packed ``[B, T]``.

    Under the causal mask a real token never sees the padding after it, so the model runs
    with no attention mask and default positions: the same computation as each row alone,
    with no padding mask to build or apply. With ``past`` (a ``prefix_cache`` of
    ``n`` tokens, batch 1) row ``b`` is the continuation of that shared prefix: its tokens
    sit at positions ``n, n+1, ...`` and attend to the prefix too; ``past`` is copied and
    repeated for the ``B`` rows, never changed. Not differentiable through ``past``.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    wanted = _check_inputs(input_ids, attention_mask, response_mask)
    real = attention_mask.bool()
    if not real[:, 0].all() or (real[:, 1:] & ~real[:, :-1]).any():
        raise ValueError("attention_mask is not right-padded (every row: ones, then zeros)")
    head = _resolve_head(model, head)
    inputs: dict[str, Any] = {"input_ids": input_ids, "use_cache": past is not None}
    if past is not None:
        module = model.get_decoder() if head == "hidden" else model
        keyword = _cache_keyword(module)
        if keyword is None:
            raise ValueError(f"{type(module).__name__}.forward takes no KV cache")
        cache = copy.deepcopy(past)
        cache.batch_repeat_interleave(input_ids.shape[0])
        inputs[keyword] = cache
    full = _target_logprobs(model, head, inputs, input_ids, wanted, chunk_size)
    return pack_response(full, response_mask)
