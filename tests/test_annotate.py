"""Stage 4: batched log-probs, the keep/drop/de-dup rules, RL rows and reward metrics."""

from __future__ import annotations

import math

import pytest
import torch

import rlmec_core.annotate as annotate_module
import rlmec_core.grm as grm_module
from rlmec_core.annotate import annotate_samples, dedup_correct
from rlmec_core.annotate_metrics import annotation_metrics
from rlmec_core.data.schema import RL_FEATURES
from rlmec_core.editing import minimum_edit_weights
from rlmec_core.grm import GrmVerdict
from rlmec_core.grm_data import error_step_prompt, rewrite_prompt
from rlmec_core.policy_prompt import format_policy_prompt
from rlmec_core.response_logprobs import batched_response_logprobs
from rlmec_core.response_tokens import split_tokenize, token_steps
from rlmec_core.rewards import MAX_PENALTY, MAX_REWARD, token_rewards
from rlmec_core.tokenizer import train_tokenizer
from tests.apples import FIXED, GOLD, QUESTION, WRONG, distilled_row
from tests.logprob_checks import assert_batched_equal_sequential
from tests.naive_logprobs import sequential_response_logprobs
from tests.tiny_models import tiny_llama

RIGHT = "3 + 2 = 5\nThe answer is 5"


@pytest.fixture(scope="module")
def tokenizer():
    texts = [rewrite_prompt(QUESTION, GOLD, WRONG), format_policy_prompt(QUESTION), FIXED]
    return train_tokenizer(texts * 5, vocab_size=360)


def _model(tokenizer, seed: int):
    return tiny_llama(tokenizer, seed=seed).eval()


@pytest.fixture(scope="module")
def grm(tokenizer):
    """A GRM micro-trained to copy right solutions and to rewrite WRONG into FIXED, so
    its token probabilities mean something: high on kept tokens, low on the wrong "6"."""
    model = _model(tokenizer, seed=1)
    pairs = [(RIGHT, RIGHT), ("2 + 3 = 5\nThe answer is 5", "2 + 3 = 5\nThe answer is 5")]
    pairs.append((WRONG, FIXED))
    batch = [
        split_tokenize(tokenizer, rewrite_prompt(QUESTION, GOLD, y), y_hat) for y, y_hat in pairs
    ]
    # ... and to name WRONG's first error step, so grm_rewrites can run for real.
    verdict = "The first error step is [1]"
    batch.append(split_tokenize(tokenizer, error_step_prompt(QUESTION, GOLD, WRONG), verdict))
    width = max(len(p) + len(r) for p, r in batch)
    ids = torch.tensor([p + r + [0] * (width - len(p) - len(r)) for p, r in batch])
    mask = torch.tensor(
        [[1] * (len(p) + len(r)) + [0] * (width - len(p) - len(r)) for p, r in batch]
    )
    labels = torch.tensor(
        [[-100] * len(p) + r + [-100] * (width - len(p) - len(r)) for p, r in batch]
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a model this small only loses time to thread hand-offs
    try:
        model.train()
        for _ in range(80):
            loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    finally:
        torch.set_num_threads(threads)
    return model.eval()


@pytest.fixture(scope="module")
def ref(tokenizer):
    return _model(tokenizer, seed=2)


def _ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def _sample(sample_id: str, prediction: str, correct: bool, error_step: int = -1) -> dict:
    return distilled_row(sample_id, prediction, "correct" if correct else "kept", error_step)


# ---------------------------------------------------------------- log-probs


@pytest.mark.parametrize("batch_size", [1, 2, 5])
def test_batched_logprobs_equal_one_sequence_at_a_time(tokenizer, grm, batch_size):
    texts = [QUESTION, WRONG, "3 + 2", FIXED, "5"]
    prompts = [tokenizer(format_policy_prompt(t))["input_ids"] for t in texts]
    responses = [[*_ids(tokenizer, t), tokenizer.eos_token_id] for t in reversed(texts)]
    batched = assert_batched_equal_sequential(
        grm, prompts, responses, pad_id=tokenizer.pad_token_id, batch_size=batch_size, chunk_size=7
    )
    assert all(v <= 0 for got in batched for v in got)


def test_batched_logprobs_refuse_an_empty_prompt(tokenizer, ref):
    with pytest.raises(ValueError, match="pair 1: empty prompt"):
        batched_response_logprobs(
            ref, [[5], []], [[6], [7]], pad_id=tokenizer.pad_token_id, batch_size=2
        )


# ---------------------------------------------------------------- selection rules


def test_correct_duplicates_differing_in_spaces_newlines_full_stops_are_kept_once():
    rows = [
        _sample("p1/0", RIGHT, True),
        _sample("p1/1", "3+2 = 5.\n\nThe answer is 5.", True),  # same up to spaces/./newlines
        _sample("p1/2", "3 + 2 = 5,\nThe answer is 5", True),  # a comma is a real difference
        _sample("p2/0", RIGHT, True),  # same text, other problem
        _sample("p1/3", WRONG, False, 1),
        _sample("p1/4", WRONG + ".", False, 1),  # incorrect samples are never merged
    ]
    kept, dropped = dedup_correct(rows)
    assert dropped == 1
    assert [r["sample_id"] for r in kept] == ["p1/0", "p1/2", "p2/0", "p1/3", "p1/4"]


@pytest.fixture()
def stub_grm(monkeypatch):
    """Replace the GRM's generation by fixed verdicts per sample id; record who was asked."""
    verdicts = {
        "p1/3": GrmVerdict(1, FIXED),  # kept
        "p1/4": GrmVerdict(1, "Tom starts with 3 apples.\n3 + 2 = 7\nThe answer is 7"),
        "p1/5": GrmVerdict(-1, WRONG),  # the GRM thinks it is right
        "p1/6": GrmVerdict(None, None),  # no parsable verdict
        "p1/7": GrmVerdict(9, None),  # a step the prediction does not have
        "p1/8": GrmVerdict(0, "3 + 2 = 5\nThe answer is 5"),  # kept, everything rewritten
    }
    asked: list[str] = []

    def fake(
        grm_model,
        tokenizer,
        rows,
        *,
        batch_size,
        max_new_tokens,
        progress=True,
        style=None,
        error_steps=None,
    ):
        assert error_steps is None  # the generated verdict: grm_rewrites makes it
        asked.extend(r["sample_id"] for r in rows)
        return [verdicts[r["sample_id"]] for r in rows]

    monkeypatch.setattr(annotate_module, "grm_rewrites", fake)
    return asked


def _samples() -> list[dict]:
    return [
        _sample("p1/0", RIGHT, True),
        _sample("p1/1", "3 + 2 = 5.\nThe answer is 5.", True),  # duplicate of p1/0
        _sample("p1/2", "2 + 3 = 5\nThe answer is 5", True),
        *(_sample(f"p1/{j}", WRONG, False, 1) for j in range(3, 9)),
        _sample("p2/0", RIGHT, True),
    ]


def test_annotate_keeps_drops_and_lines_up_every_token(tokenizer, grm, ref, stub_grm):
    rows = _samples()
    ds, m = annotate_samples(
        rows, grm, ref, tokenizer, batch_size=3, max_new_tokens=8, progress=False
    )
    assert ds.features == RL_FEATURES
    assert ds["sample_id"] == ["p1/0", "p1/2", "p1/3", "p1/8", "p2/0"]
    assert stub_grm == [f"p1/{j}" for j in range(3, 9)]  # only the incorrect ones
    assert m["n_samples_in"] == 10 and m["n_kept"] == 5
    assert m["n_dedup_dropped"] == 1 and m["n_dropped_grm_miss"] == 4
    for reason in ("unparsed", "judged_correct", "step_out_of_range", "wrong_answer"):
        assert m[f"n_grm_miss_{reason}"] == 1
    assert m["n_kept_correct"] == 3 and m["n_kept_incorrect"] == 2

    eos = tokenizer.eos_token_id
    source = {r["sample_id"]: r for r in rows}
    grm_prompts, ref_prompts, responses = [], [], []
    for out in ds:
        row = source[out["sample_id"]]
        y = row["prediction"]
        response = [*_ids(tokenizer, y), eos]
        assert out["response_ids"] == response
        assert out["prompt_ids"] == tokenizer(format_policy_prompt(QUESTION))["input_ids"]
        assert out["target_ids"] == [*_ids(tokenizer, out["rewrite"]), eos]
        assert len(out["rewards"]) == len(out["ref_logprobs"]) == len(response)
        assert len(out["target_weights"]) == len(out["target_ids"])
        assert out["teacher_error_step"] == row["error_step"]
        if row["correct"]:
            assert out["rewrite"] == y and out["grm_error_step"] == -1
            assert out["target_weights"] == [0.5] * len(response)
            assert all(0 <= r <= MAX_REWARD for r in out["rewards"])
        else:
            assert out["target_weights"] == minimum_edit_weights(response, out["target_ids"])
            assert 1.0 in out["target_weights"] and out["target_weights"][-1] == 0.5
            assert all(-MAX_PENALTY - 1e-7 <= r <= 0 for r in out["rewards"])
        grm_prompts.append(tokenizer(rewrite_prompt(QUESTION, GOLD, y))["input_ids"])
        ref_prompts.append(out["prompt_ids"])
        responses.append(response)
    assert ds[2]["rewrite"] == FIXED and ds[2]["grm_error_step"] == 1
    assert ds[3]["grm_error_step"] == 0

    # Rewards and reference log-probs equal the one-sequence-at-a-time computation.
    grm_lp = sequential_response_logprobs(grm, grm_prompts, responses)
    ref_lp = sequential_response_logprobs(ref, ref_prompts, responses)
    all_rewards = []
    for out, g, r in zip(ds, grm_lp, ref_lp, strict=True):
        want = token_rewards([math.exp(v) for v in g], out["correct"]).tolist()
        assert out["rewards"] == pytest.approx(want, abs=1e-5)
        assert out["ref_logprobs"] == pytest.approx(r, abs=1e-5)
        all_rewards += out["rewards"]
    # The trained GRM rewards the tokens of the correct samples it was taught to copy.
    assert min(sum(out["rewards"]) for out in ds if out["correct"]) > 0
    assert m["mean_reward_correct_token"] > 0.2
    # Its first penalised token of WRONG is the wrong "6" of step 1, the teacher's step.
    assert m["reward_quality_n"] == 2 and m["reward_quality_first"] == 1.0


def test_annotate_end_to_end_with_the_real_grm(tokenizer, grm, ref):
    # Through grm_rewrites for real: the GRM names step 1 of WRONG and completes FIXED
    # from the kept first step; a prediction it was not taught yields no step and is dropped.
    rows = [
        _sample("p1/0", RIGHT, True),
        _sample("p1/1", WRONG, False, 1),
        _sample("p1/2", "3 + 2 = 1\nThe answer is 1", False, 0),
    ]
    ds, m = annotate_samples(
        rows, grm, ref, tokenizer, batch_size=2, max_new_tokens=32, progress=False
    )
    assert ds["sample_id"] == ["p1/0", "p1/1"]
    assert ds[1]["grm_error_step"] == 1 and ds[1]["rewrite"] == FIXED
    assert m["n_grm_judged"] == 2 and m["n_dropped_grm_miss"] == 1


def test_the_likelihood_verdict_is_the_step_of_the_first_penalised_token(
    tokenizer, grm, ref, monkeypatch
):
    # error_step="likelihood": no verdict is generated; the GRM's one scoring pass names
    # WRONG's step 1 (its first token below 0.5 is the wrong "6"), the rewrite continues
    # from step 0, and the rewards are that same pass's, equal to the generated path's.
    asked = []
    generate = grm_module.greedy_continuations

    def recording(*args, desc="grm", **kwargs):
        asked.append(desc)
        return generate(*args, desc=desc, **kwargs)

    monkeypatch.setattr(grm_module, "greedy_continuations", recording)
    rows = [_sample("p1/0", RIGHT, True), _sample("p1/1", WRONG, False, 1)]
    ds, m = annotate_samples(
        rows,
        grm,
        ref,
        tokenizer,
        batch_size=2,
        max_new_tokens=32,
        progress=False,
        error_step="likelihood",
    )
    assert asked == ["grm rewrite"]
    assert ds["sample_id"] == ["p1/0", "p1/1"]
    assert ds[1]["grm_error_step"] == 1 and ds[1]["rewrite"] == FIXED
    steps = token_steps(tokenizer, WRONG, ds[1]["response_ids"])
    penalised = [s for s, r in zip(steps, ds[1]["rewards"], strict=True) if r < 0 and s is not None]
    assert penalised[0] == ds[1]["grm_error_step"]
    assert m["grm_step_agreement"] == 1.0

    asked.clear()
    generated, _ = annotate_samples(
        rows, grm, ref, tokenizer, batch_size=2, max_new_tokens=32, progress=False
    )
    assert asked == ["grm error step", "grm rewrite"]
    for a, b in zip(ds, generated, strict=True):
        assert a["rewards"] == pytest.approx(b["rewards"], abs=1e-6)
        assert a["rewrite"] == b["rewrite"] and a["grm_error_step"] == b["grm_error_step"]


def test_verdicts_made_elsewhere_reuse_the_likelihood_pass_they_came_with(
    tokenizer, grm, ref, monkeypatch
):
    # A generation server's rewrites, the steps read off this process's likelihood pass
    # (tasks/annotate.py): that pass's log-probs are the incorrect rows' rewards, so only
    # the correct row is scored by the GRM again, and the rows equal the local path's.
    rows = [_sample("p1/0", RIGHT, True), _sample("p1/1", WRONG, False, 1)]
    settings = {"batch_size": 2, "max_new_tokens": 32, "progress": False}
    local, _ = annotate_samples(rows, grm, ref, tokenizer, error_step="likelihood", **settings)
    incorrect = annotate_module.rows_for_grm(rows)
    steps, logprobs = annotate_module.likelihood_error_steps(
        grm, tokenizer, incorrect, batch_size=2, progress=False
    )
    verdicts = grm_module.grm_rewrites(grm, tokenizer, incorrect, error_steps=steps, **settings)
    scored_rows = []

    def recording(model, prompts, responses, *, desc, **kwargs):
        scored_rows.append((desc, len(prompts)))
        return batched_response_logprobs(model, prompts, responses, desc=desc, **kwargs)

    monkeypatch.setattr(annotate_module, "batched_response_logprobs", recording)
    scored = {r["sample_id"]: lp for r, lp in zip(incorrect, logprobs, strict=True)}
    served, _ = annotate_samples(
        rows,
        grm,
        ref,
        tokenizer,
        verdicts=verdicts,
        scored=scored,
        error_step="likelihood",
        **settings,
    )
    assert scored_rows == [("grm rewards", 1), ("ref log-probs", 2)]
    for a, b in zip(served, local, strict=True):
        assert a["rewards"] == pytest.approx(b["rewards"], abs=1e-6)
        assert a["rewrite"] == b["rewrite"] and a["grm_error_step"] == b["grm_error_step"]


def test_samples_missing_a_field_are_refused(tokenizer, grm, ref):
    row = _sample("p1/0", RIGHT, True)
    del row["error_step"]
    with pytest.raises(ValueError, match=r"sample 0 lacks field 'error_step'"):
        annotate_samples([row], grm, ref, tokenizer, batch_size=1, max_new_tokens=1)


# ---------------------------------------------------------------- reward quality


def test_token_steps_follow_non_empty_lines(tokenizer):
    text = "Tom starts with 3 apples.\n\n3 + 2 = 6\nThe answer is 6"
    ids = [*_ids(tokenizer, text), tokenizer.eos_token_id]
    steps = token_steps(tokenizer, text, ids)
    pieces = [tokenizer.decode([t]) for t in ids[:-1]]
    assert len(steps) == len(ids) and steps[-1] is None  # EOS is in no step
    lines = ["Tom starts with 3 apples.", "3 + 2 = 6", "The answer is 6"]
    newlines = [i for i, p in enumerate(pieces) if p == "\n"]
    assert [steps[i] for i in newlines] == [0, None, 1]  # the blank line is no step
    for piece, step in zip(pieces, steps[:-1], strict=True):
        if piece.strip():
            assert piece.strip() in lines[step]
    assert steps[pieces.index("6")] == 1 and steps[len(pieces) - 1] == 2


def _rl_row(tokenizer, correct: bool, teacher_step: int, grm_step: int, rewards) -> dict:
    ids = [*_ids(tokenizer, WRONG), tokenizer.eos_token_id]
    return {
        "correct": correct,
        "prediction": WRONG,
        "teacher_error_step": teacher_step,
        "grm_error_step": grm_step,
        "response_ids": ids,
        "rewards": rewards if rewards is not None else [0.0] * len(ids),
        "ref_logprobs": [-1.0] * len(ids),
        "target_weights": [1.0, 0.5, 0.5, 0.5],
    }


def test_reward_quality_finds_the_lowest_token_in_the_teachers_step(tokenizer):
    n = len(_ids(tokenizer, WRONG)) + 1
    six = [tokenizer.decode([t]) for t in _ids(tokenizer, WRONG)].index("6")  # in step 1

    def probs(**low: float) -> list[float]:
        p = [0.9] * n
        for where, value in low.items():
            p[{"six": six, "first": 0, "eos": n - 1}[where]] = value
        return p

    rows = [
        _rl_row(tokenizer, False, 1, 1, None),  # lowest and first-penalised at "6": hit, hit
        _rl_row(tokenizer, False, 1, 0, None),  # lowest at "6", first penalised in step 0
        _rl_row(tokenizer, False, 1, 1, None),  # lowest at EOS, in no step: miss, miss
        _rl_row(tokenizer, False, -1, 1, None),  # no teacher step: not counted
        _rl_row(tokenizer, True, -1, -1, [0.4] * n),  # correct: not counted
    ]
    token_probs = [
        probs(six=0.01),
        probs(first=0.3, six=0.01),
        probs(eos=0.001),
        probs(six=0.01),
        probs(),
    ]
    m = annotation_metrics(rows, token_probs, tokenizer)
    assert m["reward_quality_n"] == 3
    assert m["reward_quality"] == pytest.approx(2 / 3)
    assert m["reward_quality_first"] == pytest.approx(1 / 3)
    assert m["grm_step_agreement"] == pytest.approx(2 / 3)
    assert m["mean_reward_correct_token"] == pytest.approx(0.4)
    assert m["mean_reward_incorrect_token"] == 0.0
    assert m["edited_token_fraction"] == pytest.approx(0.25)
