"""Batched generation: same greedy output as one prompt at a time, seeded sampling."""

from __future__ import annotations

import pytest

from rlmec_core import evaluation
from rlmec_core.evaluation import greedy_accuracy
from rlmec_core.generation import GenerationResult, generate_solutions
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


def test_new_tokens_are_counted_up_to_and_including_eos(policy):
    """n_generated_tokens is what the model emitted: each answer's tokens and its EOS, as
    model.generate's output reads cut at the first EOS, one prompt at a time."""
    model, tokenizer, prompts, _ = policy
    result = generate_solutions(
        model, tokenizer, prompts, num_return_sequences=1, temperature=0.0, batch_size=4, **GEN
    )
    eos = tokenizer.eos_token_id
    expected = 0
    for prompt in prompts:
        enc = tokenizer(prompt, return_tensors="pt")
        out = model.generate(
            **enc, max_new_tokens=GEN["max_new_tokens"], do_sample=False, eos_token_id=eos,
            pad_token_id=tokenizer.pad_token_id, temperature=None, top_p=None, top_k=None,
        )[0, enc["input_ids"].shape[1] :].tolist()  # fmt: skip
        expected += next((j + 1 for j, t in enumerate(out) if t == eos), len(out))
    assert result.n_generated_tokens == expected


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
