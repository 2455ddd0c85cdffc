"""Chunked per-token log-probs against a naive full log-softmax on a tiny Llama, and the
batching plan of stage 4's scoring (shared prefixes, token budget, order)."""

from __future__ import annotations

import random

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import LlamaConfig, LlamaForCausalLM

import rlmec_core.batch_plan as batch_plan_module
from rlmec_core.batch_plan import Batch as _Batch
from rlmec_core.batch_plan import Prefix as _Prefix
from rlmec_core.batch_plan import plan_batches as _plan_batches
from rlmec_core.logprobs import (
    pack_response,
    position_ids_from_mask,
    prefix_cache,
    response_logprobs,
    right_padded_response_logprobs,
    sequence_logprobs,
)
from tests.logprob_checks import assert_batched_equal_sequential

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
    sizes = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2)
    # Grouped-query attention, as in real models: 4 query heads share 2 key-value heads.
    heads = dict(num_attention_heads=4, num_key_value_heads=2)
    config = LlamaConfig(vocab_size=100, max_position_embeddings=64, **sizes, **heads)
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


# ---------------------------------------------------------------- scoring shortcuts


def _right_padded(pairs, start: int = 0):
    """Rows ``prompt[start:] + response``, right-padded, with their masks."""
    width = max(len(p) - start + len(r) for p, r in pairs)
    ids = torch.full((len(pairs), width), PAD_ID)
    attention = torch.zeros_like(ids)
    response = torch.zeros_like(ids)
    for b, (prompt, resp) in enumerate(pairs):
        own = prompt[start:]
        ids[b, : len(own) + len(resp)] = torch.tensor(own + resp)
        attention[b, : len(own) + len(resp)] = 1
        response[b, len(own) : len(own) + len(resp)] = 1
    return ids, attention, response


def _assert_packed_equals_naive(model, packed, pairs):
    assert packed.shape == (len(pairs), max(len(r) for _, r in pairs))
    for b, (prompt, resp) in enumerate(pairs):
        assert torch.allclose(packed[b, : len(resp)], _naive(model, prompt, resp), atol=1e-5)
        assert not packed[b, len(resp) :].any()


@pytest.mark.parametrize("head", ["hidden", "logits"])
@pytest.mark.parametrize("chunk_size", [1, 512])
def test_right_padded_rows_need_no_padding_mask(model, head, chunk_size):
    ids, attention, response = _right_padded(PAIRS)
    with torch.inference_mode():
        packed = right_padded_response_logprobs(
            model, ids, attention, response, chunk_size=chunk_size, head=head
        )
        _assert_packed_equals_naive(model, packed, PAIRS)


@pytest.mark.parametrize("head", ["hidden", "logits"])
def test_rows_continue_a_shared_prefix_cache(model, head):
    shared = [3, 14, 15, 92, 65, 35, 89, 79, 32, 38]
    pairs = [
        (shared + [46, 26], [43, 38, 32, 2]),
        (shared + [7], [50, 28]),
        (shared + [41, 97, 16, 93], [99, 37, 51, 5, 8]),
    ]
    with torch.inference_mode():
        # Two steps: a cache continued by a second prefix, which must leave the first intact.
        first = prefix_cache(model, torch.tensor([shared[:4]]))
        second = prefix_cache(model, torch.tensor([shared[4:]]), first)
        for _ in range(2):  # the cache is copied, so it scores the same twice
            ids, attention, response = _right_padded(pairs, start=len(shared))
            packed = right_padded_response_logprobs(
                model, ids, attention, response, past=second, chunk_size=3, head=head
            )
            _assert_packed_equals_naive(model, packed, pairs)
        # The first cache still holds its 4 tokens only: continue it the other way.
        ids, attention, response = _right_padded(pairs, start=4)
        packed = right_padded_response_logprobs(model, ids, attention, response, past=first)
        _assert_packed_equals_naive(model, packed, pairs)


def test_right_padded_refuses_left_padding(model):
    ids, attention, response = _batch("left")
    with pytest.raises(ValueError, match="right-padded"):
        right_padded_response_logprobs(model, ids, attention, response)


# ---------------------------------------------------------------- annotate's batching plan


def _prompts_with_shared_prefixes(seed: int = 0) -> tuple[list[list[int]], list[list[int]]]:
    """Prompts as stage 4 has them: one instruction shared by all, a problem shared by its
    samples, then each sample's own tokens; a few unrelated ones; lengths all differ."""
    rng = random.Random(seed)
    instruction = [rng.randrange(3, 100) for _ in range(12)]
    prompts, responses = [], []
    for problem in range(5):
        body = [rng.randrange(3, 100) for _ in range(rng.randint(4, 20))]
        for _ in range(problem):  # 0 to 4 samples per problem
            own = [rng.randrange(3, 100) for _ in range(rng.randint(1, 6))]
            prompts.append(instruction + body + own)
            responses.append([rng.randrange(3, 100) for _ in range(rng.randint(1, 12))])
    for _ in range(3):  # prompts that share nothing with the others
        prompts.append([rng.randrange(3, 100) for _ in range(rng.randint(2, 20))])
        responses.append([rng.randrange(3, 100) for _ in range(rng.randint(1, 12))])
    order = list(range(len(prompts)))
    rng.shuffle(order)
    return [prompts[i] for i in order], [responses[i] for i in order]


def _check_plan(plan, prompts, responses, *, token_budget, max_rows, min_saving):
    prefix_tokens: dict[int, list[int]] = {}  # plan index -> the prompt tokens its cache holds
    under: dict[int, set[int]] = {i: set() for i, s in enumerate(plan) if isinstance(s, _Prefix)}
    seen: list[int] = []
    for index, step in enumerate(plan):
        parent = step.parent if isinstance(step, _Prefix) else step.prefix
        held = [] if parent is None else prefix_tokens[parent]  # parents come first
        if isinstance(step, _Prefix):
            assert step.start == len(held) < step.end
            prefix_tokens[index] = held + prompts[step.source][step.start : step.end]
            continue
        assert step.start == len(held)
        rows = [len(prompts[i]) - step.start + len(responses[i]) for i in step.pairs]
        assert step.width == max(rows) and rows == sorted(rows, reverse=True)
        assert len(step.pairs) <= max_rows
        # Never more positions than the budget, unless a row alone exceeds it.
        assert len(step.pairs) == 1 or len(step.pairs) * (step.start + step.width) <= token_budget
        for i in step.pairs:
            # Every pair keeps its last prompt token out of the cache, which matches its prompt.
            assert prompts[i][: step.start] == held and step.start < len(prompts[i])
            node = parent
            while node is not None:
                under[node].add(i)
                node = plan[node].parent
        seen.extend(step.pairs)
    assert sorted(seen) == list(range(len(prompts)))  # each pair scored exactly once
    for index, pairs in under.items():
        step = plan[index]
        assert len(pairs) >= 2 and (len(pairs) - 1) * (step.end - step.start) >= min_saving


@pytest.mark.parametrize(("token_budget", "max_rows"), [(1, 8), (40, 3), (120, 2), (10_000, 64)])
@pytest.mark.parametrize("min_saving", [1, 16, 10_000])
def test_plan_covers_every_pair_once_within_budget(monkeypatch, token_budget, max_rows, min_saving):
    monkeypatch.setattr(batch_plan_module, "SHARED_PREFIX_MIN_SAVING", min_saving)
    prompts, responses = _prompts_with_shared_prefixes()
    plan = _plan_batches(prompts, responses, token_budget=token_budget, max_rows=max_rows)
    _check_plan(
        plan,
        prompts,
        responses,
        token_budget=token_budget,
        max_rows=max_rows,
        min_saving=min_saving,
    )
    prefixes = [s for s in plan if isinstance(s, _Prefix)]
    if min_saving == 1:  # the shared instruction, then the problems with 2+ samples
        assert any(s.parent is not None for s in prefixes)
    if min_saving == 10_000:
        assert not prefixes
    unshared = _plan_batches(
        prompts, responses, token_budget=token_budget, max_rows=max_rows, share_prefixes=False
    )
    assert all(isinstance(s, _Batch) and s.start == 0 for s in unshared)


def test_plan_keeps_the_last_token_of_a_shared_prompt_out(monkeypatch):
    # The reference policy's case: a problem's samples share their whole prompt.
    prompts = [[5, 6, 7, 8, 9]] * 4
    responses = [[10], [11, 12], [13], [14, 15, 16]]
    monkeypatch.setattr(batch_plan_module, "SHARED_PREFIX_MIN_SAVING", 3 * 4)  # just enough
    plan = _plan_batches(prompts, responses, token_budget=100, max_rows=8)
    assert plan == [_Prefix(None, 0, 0, 4), _Batch(0, 4, (3, 1, 0, 2), 4)]
    monkeypatch.setattr(batch_plan_module, "SHARED_PREFIX_MIN_SAVING", 3 * 4 + 1)
    plan = _plan_batches(prompts, responses, token_budget=100, max_rows=8)
    assert plan == [_Batch(None, 0, (3, 1, 0, 2), 8)]


@pytest.mark.parametrize("token_budget", [1, 60, 10_000])
def test_batched_logprobs_share_prefixes_and_keep_the_order(model, monkeypatch, token_budget):
    monkeypatch.setattr(batch_plan_module, "SHARED_PREFIX_MIN_SAVING", 8)
    prompts, responses = _prompts_with_shared_prefixes(seed=1)
    plan = _plan_batches(prompts, responses, token_budget=token_budget, max_rows=4)
    assert sum(isinstance(s, _Prefix) for s in plan) >= 3  # nested sharing is exercised
    assert_batched_equal_sequential(
        model, prompts, responses, pad_id=PAD_ID, batch_size=4, token_budget=token_budget
    )
