"""Chunked per-token log-probs against a naive full log-softmax on a tiny Llama."""

from __future__ import annotations

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import LlamaConfig, LlamaForCausalLM

from rlmec_core.logprobs import (
    pack_response,
    position_ids_from_mask,
    response_logprobs,
    sequence_logprobs,
)

# (prompt ids, response ids); lengths differ so padding is exercised on both sides.
PAIRS = [
    ([5, 6, 7, 8, 9, 10, 11], [20, 21, 22, 2]),
    ([7, 8], [30, 31, 32, 33, 34, 35]),
    ([9, 10, 11, 12], [40]),
]
PAD_ID = 0


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=100,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
    )
    return LlamaForCausalLM(config).eval()


def _batch(side: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    width = max(len(p) + len(r) for p, r in PAIRS)
    ids = torch.full((len(PAIRS), width), PAD_ID)
    attention = torch.zeros_like(ids)
    response = torch.zeros_like(ids)
    for b, (prompt, resp) in enumerate(PAIRS):
        n = len(prompt) + len(resp)
        start = width - n if side == "left" else 0
        ids[b, start : start + n] = torch.tensor(prompt + resp)
        attention[b, start : start + n] = 1
        response[b, start + len(prompt) : start + n] = 1
    return ids, attention, response


def _naive(model: LlamaForCausalLM, prompt: list[int], resp: list[int]) -> torch.Tensor:
    # One unpadded sequence, full float32 log-softmax over the vocabulary.
    logits = model(torch.tensor([prompt + resp])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return torch.stack([logp[len(prompt) + i - 1, tok] for i, tok in enumerate(resp)])


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("head", ["hidden", "logits", "auto"])
@pytest.mark.parametrize("chunk_size", [1, 3, 512])
def test_matches_naive_log_softmax(model, side, head, chunk_size):
    ids, attention, response = _batch(side)
    with torch.no_grad():
        full = sequence_logprobs(model, ids, attention, response, chunk_size=chunk_size, head=head)
        packed = response_logprobs(
            model, ids, attention, response, chunk_size=chunk_size, head=head
        )
        naive = [_naive(model, p, r) for p, r in PAIRS]
    assert full.shape == ids.shape and full.dtype == torch.float32
    assert not full[response == 0].any()  # prompt and padding stay 0
    assert packed.shape == (len(PAIRS), max(len(r) for _, r in PAIRS))
    for b, (_, resp) in enumerate(PAIRS):
        assert torch.allclose(full[b][response[b].bool()], naive[b], atol=1e-5)
        assert torch.allclose(packed[b, : len(resp)], naive[b], atol=1e-5)
        assert not packed[b, len(resp) :].any()
        assert (packed[b, : len(resp)] < 0).all()


@pytest.mark.parametrize("head", ["hidden", "logits"])
def test_gradient_matches_naive(model, head):
    # Training runs with grad through the checkpointed chunks; parameter gradients must equal
    # those of the naive computation.
    ids, attention, response = _batch("left")
    weights = torch.linspace(0.5, 1.5, steps=ids.shape[1])

    model.zero_grad()
    ours = sequence_logprobs(model, ids, attention, response, chunk_size=2, head=head)
    assert ours.requires_grad
    (ours * weights).sum().backward()
    ours_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    model.zero_grad()
    total = torch.zeros(())
    width = ids.shape[1]
    for prompt, resp in PAIRS:
        start = width - len(prompt) - len(resp)
        cols = torch.arange(start + len(prompt), width)
        total = total + (_naive(model, prompt, resp) * weights[cols]).sum()
    total.backward()

    assert ours_grads.keys() == {n for n, p in model.named_parameters() if p.grad is not None}
    for name, param in model.named_parameters():
        assert torch.allclose(ours_grads[name], param.grad, atol=1e-5), name
    model.zero_grad()


class _VocabSizedTensors(TorchDispatchMode):
    """Records the row count of every tensor an op returns whose last dim is the vocabulary."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.vocab, self.rows = vocab, []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, torch.Tensor) and t.dim() and t.shape[-1] == self.vocab:
                self.rows.append(t.numel() // self.vocab)
        return out


@pytest.mark.parametrize("grad", [False, True])
def test_hidden_head_never_builds_full_vocab_logits(model, grad):
    # The point of the module: at most chunk_size rows of vocabulary-wide logits at a time,
    # in the forward and in the (checkpointed) backward pass.
    ids, attention, response = _batch("right")
    recorder = _VocabSizedTensors(model.config.vocab_size)
    with torch.set_grad_enabled(grad), recorder:
        out = sequence_logprobs(model, ids, attention, response, chunk_size=2, head="hidden")
        if grad:
            out.sum().backward()
    model.zero_grad()
    weight_rows = model.config.hidden_size  # lm_head.weight.T and its gradient are [H, V]
    assert recorder.rows, "the recorder saw no vocabulary-sized tensor at all"
    assert max(r for r in recorder.rows if r != weight_rows) <= 2


def test_position_ids_skip_left_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 2, 2]]


def test_pack_response_moves_values_to_the_front():
    values = torch.tensor([[0.0, 1.0, 2.0, 3.0], [4.0, 5.0, 6.0, 7.0]], requires_grad=True)
    mask = torch.tensor([[0, 1, 0, 1], [0, 0, 1, 0]])
    packed = pack_response(values, mask)
    assert packed.tolist() == [[1.0, 3.0], [6.0, 0.0]]
    packed.sum().backward()
    assert values.grad.tolist() == mask.float().tolist()


def test_bad_masks_are_rejected(model):
    ids, attention, response = _batch("left")
    with pytest.raises(ValueError, match="padding"):
        bad = response.clone()
        bad[2, 0] = 1  # row 2 is left-padded, position 0 is padding
        sequence_logprobs(model, ids, attention, bad)
    with pytest.raises(ValueError, match="position 0"):
        bad = response.clone()
        bad[0, 0] = 1  # row 0 is the longest, position 0 is its first real token
        sequence_logprobs(model, ids, attention, bad)
    with pytest.raises(ValueError, match="response_mask shape"):
        sequence_logprobs(model, ids, attention, response[:, 1:])
    with pytest.raises(ValueError, match="head"):
        sequence_logprobs(model, ids, attention, response, head="full")
