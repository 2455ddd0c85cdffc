"""decode() against model.generate on a tiny Llama: the same greedy tokens when rows end at
different steps (finished rows leave the batch and the KV cache), k continuations from one
prompt run, and top-p sampling from the same distribution as transformers' warper."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.generation.logits_process import TopPLogitsWarper

from rlmec_core.decoding import decode, next_tokens, top_p_candidates

PAD_ID = 0
PROMPTS = [[5, 6, 7, 8, 9, 10, 11], [7, 8], [9, 10, 11, 12], [3, 4, 5, 6, 7]]


@pytest.fixture(scope="module")
def model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
        pad_token_id=PAD_ID,
    )  # fmt: skip
    return LlamaForCausalLM(config).eval()


def _left_padded(prompts):
    width = max(map(len, prompts))
    ids = torch.full((len(prompts), width), PAD_ID)
    mask = torch.zeros_like(ids)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    return ids, mask


def _generate(model, ids, mask, eos, new, **sampling):
    out = model.generate(
        input_ids=ids, attention_mask=mask, max_new_tokens=new, eos_token_id=sorted(eos),
        pad_token_id=PAD_ID, use_cache=True, top_k=None, **sampling,
    )  # fmt: skip
    rows = []
    for row in out[:, ids.shape[1] :].tolist():
        cut = next((j + 1 for j, t in enumerate(row) if t in eos), len(row))
        rows.append(row[:cut])
    return rows


def test_greedy_equals_generate_when_rows_end_at_different_steps(model):
    ids, mask = _left_padded(PROMPTS)
    # An EOS the rows reach at different steps: a token some rows emit early, others late.
    free = _generate(model, ids, mask, {PAD_ID}, 24, do_sample=False)
    firsts = {}
    for row in free:
        for j, t in enumerate(row):
            firsts.setdefault(t, []).append(j)
    eos = {max(firsts, key=lambda t: len(set(firsts[t])))}
    expected = _generate(model, ids, mask, eos, 24, do_sample=False)
    lengths = {len(row) for row in expected}
    assert len(lengths) > 1, "the test needs rows that end at different steps"
    assert decode(model, ids, mask, max_new_tokens=24, eos_ids=eos) == expected


def test_k_continuations_share_one_prompt_run(model):
    """k continuations of a prompt: greedy gives k copies of its one continuation; sampling
    under one seed repeats, and another seed draws otherwise."""
    ids, mask = _left_padded(PROMPTS)
    one = decode(model, ids, mask, max_new_tokens=10, eos_ids={99})
    three = decode(model, ids, mask, max_new_tokens=10, eos_ids={99}, num_return_sequences=3)
    assert three == [row for row in one for _ in range(3)]
    kwargs = dict(
        max_new_tokens=10, eos_ids={99}, temperature=1.0, top_p=0.9, num_return_sequences=3
    )
    torch.manual_seed(7)
    first = decode(model, ids, mask, **kwargs)
    torch.manual_seed(7)
    assert decode(model, ids, mask, **kwargs) == first
    torch.manual_seed(8)
    assert decode(model, ids, mask, **kwargs) != first
    assert len(first) == 3 * len(PROMPTS)
    assert any(len({tuple(r) for r in first[3 * i : 3 * i + 3]}) > 1 for i in range(len(PROMPTS)))


@pytest.mark.parametrize("top_p", [0.1, 0.5, 0.9, 0.999])
@pytest.mark.parametrize("candidates", [2, 8, 256])
def test_top_p_candidates_are_the_warpers(top_p, candidates):
    """The same kept tokens and probabilities as TopPLogitsWarper then softmax, whether the
    kept set fits in the candidates or the whole vocabulary has to be sorted."""
    logits = torch.randn(6, 50, generator=torch.Generator().manual_seed(3)) * 3
    expected = TopPLogitsWarper(top_p)(None, logits.clone()).softmax(dim=-1)
    ids, probs = top_p_candidates(logits, top_p, candidates)
    got = torch.zeros_like(expected).scatter_add(-1, ids, probs)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-7)


def test_sampling_follows_the_top_p_distribution():
    logits = torch.tensor([[2.0, 1.5, 1.0, 0.0, -1.0, -3.0]])
    _, probs = top_p_candidates(logits / 0.7, 0.9)
    expected = TopPLogitsWarper(0.9)(None, logits / 0.7).softmax(dim=-1)[0]
    torch.manual_seed(0)
    draws = torch.stack([next_tokens(logits, 0.7, 0.9) for _ in range(4000)]).squeeze(1)
    freq = torch.bincount(draws, minlength=6).float() / len(draws)
    assert freq[expected == 0].sum() == 0  # nothing outside the kept set
    torch.testing.assert_close(freq, expected, atol=0.03, rtol=0)
    assert probs.sum().item() == pytest.approx(1.0)


def test_max_new_tokens_and_refusals(model):
    ids, mask = _left_padded(PROMPTS)
    rows = decode(model, ids, mask, max_new_tokens=3, eos_ids={39})
    assert [len(r) for r in rows] == [3] * len(PROMPTS)
    right = torch.flip(mask, dims=[1])
    with pytest.raises(ValueError, match="left padding"):
        decode(model, ids, right, max_new_tokens=3, eos_ids={39})
    with pytest.raises(ValueError, match="max_new_tokens"):
        decode(model, ids, mask, max_new_tokens=0, eos_ids={39})
    with pytest.raises(ValueError, match="num_return_sequences"):
        decode(model, ids, mask, max_new_tokens=3, eos_ids={39}, num_return_sequences=0)
