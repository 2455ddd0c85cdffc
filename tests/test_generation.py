"""Batched generation: same greedy output as one prompt at a time, seeded sampling."""

from __future__ import annotations

import pytest
import torch

from rlmec_core import evaluation
from rlmec_core.evaluation import greedy_accuracy
from rlmec_core.generation import GenerationResult, _count_new_tokens, generate_solutions
from rlmec_core.policy_prompt import format_policy_prompt
from tests.random_policy import random_policy

GEN = dict(top_p=1.0, max_new_tokens=12, seed=0, progress=False)


@pytest.fixture(scope="module")
def policy():
    model, tokenizer, dev = random_policy(n_dev=6)
    prompts = [format_policy_prompt(q) for q in dev["question"]]
    return model, tokenizer, prompts, dev


def test_batched_greedy_equals_one_prompt_at_a_time(policy):
    model, tokenizer, prompts, _ = policy
    lengths = {len(tokenizer(p)["input_ids"]) for p in prompts}
    assert len(lengths) > 1, "prompts of one length would not exercise left padding"
    batched = generate_solutions(
        model, tokenizer, prompts, num_return_sequences=1, temperature=0.0, batch_size=4, **GEN
    )
    single = [
        generate_solutions(
            model, tokenizer, [p], num_return_sequences=1, temperature=0.0, batch_size=1, **GEN
        )
        for p in prompts
    ]
    assert batched.texts == [s.texts[0] for s in single]
    assert batched.n_generated_tokens == sum(s.n_generated_tokens for s in single)
    assert len({t[0] for t in batched.texts}) > 1  # the check above is not vacuous
    assert all(not t[0].startswith("Question:") for t in batched.texts)  # prompt removed


def test_seeded_sampling_is_reproducible_with_k_per_prompt(policy):
    model, tokenizer, prompts, _ = policy
    kwargs = dict(num_return_sequences=3, temperature=1.0, batch_size=4, **GEN)
    first = generate_solutions(model, tokenizer, prompts, **kwargs)
    again = generate_solutions(model, tokenizer, prompts, **kwargs)
    assert first.texts == again.texts
    assert len(first.texts) == len(prompts)
    assert all(len(group) == 3 for group in first.texts)
    assert any(len(set(group)) > 1 for group in first.texts)  # it really samples
    other = generate_solutions(model, tokenizer, prompts, **{**kwargs, "seed": 1})
    assert other.texts != first.texts
    assert first.n_generated_tokens > 0 and first.tokens_per_second > 0


def test_new_tokens_are_counted_up_to_and_including_eos():
    eos, pad = 2, 0
    new_ids = torch.tensor([[5, 6, eos, pad], [5, 6, 7, 8], [eos, pad, pad, pad]])
    assert _count_new_tokens(new_ids, {eos}, pad) == 3 + 4 + 1
    # pad == eos (a model without its own pad token): stop at the first one
    assert _count_new_tokens(torch.tensor([[5, eos, eos]]), {eos}, eos) == 2


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"temperature": -1.0}, "temperature"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_arguments_are_rejected(policy, bad, message):
    model, tokenizer, prompts, _ = policy
    arguments = {"num_return_sequences": 1, "temperature": 0.0, "batch_size": 2, **bad}
    with pytest.raises(ValueError, match=message):
        generate_solutions(model, tokenizer, prompts, **arguments, **GEN)


def test_greedy_accuracy_judges_each_prediction(policy, monkeypatch):
    model, tokenizer, _, dev = policy
    result = greedy_accuracy(model, tokenizer, dev, batch_size=4, max_new_tokens=12)
    assert result["n"] == len(dev) == len(result["predictions"])
    assert [p["id"] for p in result["predictions"]] == dev["id"]
    assert result["accuracy"] == result["n_correct"] / result["n"]

    # With the generations fixed, the verdicts come from the final answers alone.
    texts = [["Step.\nThe answer is 12"], ["The answer is 7"], ["no answer here\nat all"]]
    seen = {}

    def fake_generate(model, tokenizer, prompts, **kwargs):
        seen.update(prompts=prompts, **kwargs)
        return GenerationResult(texts, n_generated_tokens=9, seconds=1.0)

    monkeypatch.setattr(evaluation, "generate_solutions", fake_generate)
    records = [
        {"id": "a", "question": "Q1", "gold_answer": "12"},
        {"id": "b", "question": "Q2", "gold_answer": "8"},
        {"id": "c", "question": "Q3", "gold_answer": "3"},
    ]
    result = greedy_accuracy(model, tokenizer, records, batch_size=2, max_new_tokens=5)
    assert [p["correct"] for p in result["predictions"]] == [True, False, False]
    assert [p["predicted_answer"] for p in result["predictions"]] == ["12", "7", ""]
    assert result["accuracy"] == pytest.approx(1 / 3)
    assert seen["prompts"] == [format_policy_prompt(q) for q in ("Q1", "Q2", "Q3")]
    assert seen["temperature"] == 0.0 and seen["num_return_sequences"] == 1

    assert greedy_accuracy(model, tokenizer, [], batch_size=4, max_new_tokens=4)["n"] == 0
    with pytest.raises(ValueError, match="record 0"):
        greedy_accuracy(model, tokenizer, [{"question": "q"}], batch_size=1, max_new_tokens=1)
