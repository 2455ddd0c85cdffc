"""GRM inference: the two-step verdict/rewrite protocol, batched greedy decoding, metrics."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from rlmec_core.grm import (
    GrmVerdict,
    first_unkept_step,
    greedy_continuations,
    grm_metrics,
    grm_rewrites,
)
from rlmec_core.grm_data import (
    ERROR_STEP_RESPONSE_PREFIX,
    error_step_prompt,
    rewrite_prompt,
)
from rlmec_core.tokenizer import train_tokenizer
from tests.tiny_models import tiny_llama

QUESTION = "Tom has 3 apples and buys 2 more. How many apples does he have?"
GOLD = "3 + 2 = 5\nThe answer is 5"
WRONG = "Tom starts with 3 apples.\n3 + 2 = 6\nThe answer is 6"


@pytest.fixture(scope="module")
def tokenizer():
    texts = [
        error_step_prompt(QUESTION, GOLD, WRONG),
        rewrite_prompt(QUESTION, GOLD, WRONG),
        "The first error step is [1]\nThe prediction is correct\n0123456789",
    ]
    return train_tokenizer(texts * 5, vocab_size=360)


class _ScriptedCache:
    """What decoding keeps per live row: the scripted tokens that row has still to emit."""

    def __init__(self, rows: list[list[int]]) -> None:
        self.rows = rows

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self.rows = [self.rows[i] for i in indices.tolist()]

    def batch_repeat_interleave(self, k: int) -> None:
        self.rows = [list(row) for row in self.rows for _ in range(k)]


class ScriptedGRM:
    """A stand-in GRM: continues each prompt with the text ``script`` gives for it.

    ``script(prompt_text) -> continuation``; every prompt it is asked about is recorded.
    It implements just the surface of a causal LM that decoding touches: a forward that
    takes and returns a KV cache (here the rows' remaining scripted tokens) and gives, for
    each row, logits whose arg-max is that row's next scripted token.
    """

    def __init__(self, tokenizer, script):
        self.tokenizer, self.script = tokenizer, script
        self.prompts: list[str] = []
        self.generation_config = SimpleNamespace(eos_token_id=tokenizer.eos_token_id)
        self.device = torch.device("cpu")
        self.training = False

    def eval(self):
        return self

    def forward(self, input_ids, attention_mask=None, position_ids=None, cache=None, **_):
        tok = self.tokenizer
        if cache is None:  # the prompts: record them and script each continuation
            rows = []
            for ids, mask in zip(input_ids.tolist(), attention_mask.tolist(), strict=True):
                assert mask[-1] == 1, "prompts must be left-padded"
                prompt = tok.decode([t for t, m in zip(ids, mask, strict=True) if m])
                self.prompts.append(prompt)
                rows.append(tok(self.script(prompt), add_special_tokens=False)["input_ids"])
            cache = _ScriptedCache([row + [tok.eos_token_id] for row in rows])
        logits = torch.zeros(len(cache.rows), 1, len(tok))
        for i, row in enumerate(cache.rows):
            logits[i, 0, row.pop(0) if row else tok.eos_token_id] = 1.0
        return SimpleNamespace(logits=logits, cache=cache)

    __call__ = forward


def _row(prediction: str, **extra) -> dict:
    return {"question": QUESTION, "gold_solution": GOLD, "prediction": prediction, **extra}


def test_two_step_protocol_keeps_the_prefix_and_completes_the_rest(tokenizer):
    # Each prediction gets its own verdict; rewrites continue with a fixed correction.
    verdicts = {
        "A": "The first error step is [1]",
        "B": "The prediction is correct",
        "C": "I cannot tell",
        "D": "The first error step is [7]",  # past the last step
        "E": "The first error step is [0]",
    }

    def script(prompt: str) -> str:
        marker = prompt.split("Tom starts with ")[1][0]  # the letter labelling the row
        if prompt.endswith(ERROR_STEP_RESPONSE_PREFIX):
            return verdicts[marker]
        return "3 + 2 = 5\nThe answer is 5\n"

    rows = [_row(f"Tom starts with {m} apples.\n3 + 2 = 6\nThe answer is 6") for m in "ABCDE"]
    grm = ScriptedGRM(tokenizer, script)
    out = grm_rewrites(grm, tokenizer, rows, batch_size=2, max_new_tokens=64, progress=False)

    assert out[0] == GrmVerdict(1, "Tom starts with A apples.\n3 + 2 = 5\nThe answer is 5")
    assert out[1] == GrmVerdict(-1, rows[1]["prediction"])
    assert out[2] == GrmVerdict(None, None)
    assert out[3] == GrmVerdict(7, None)
    assert out[4] == GrmVerdict(0, "3 + 2 = 5\nThe answer is 5")
    # Five verdict prompts, then rewrite prompts only for the two rows with a usable step,
    # each ending with the prediction's steps before the error.
    rewrites = [p for p in grm.prompts if not p.endswith(ERROR_STEP_RESPONSE_PREFIX)]
    assert len(grm.prompts) == 7 and len(rewrites) == 2
    assert sorted(rewrites) == sorted(
        [
            rewrite_prompt(QUESTION, GOLD, rows[0]["prediction"]) + "Tom starts with A apples.\n",
            rewrite_prompt(QUESTION, GOLD, rows[4]["prediction"]),
        ]
    )


def test_given_error_steps_skip_the_verdict_and_start_the_rewrites(tokenizer):
    # Steps from elsewhere (the likelihood verdict): no verdict prompt, rewrites as before.
    grm = ScriptedGRM(tokenizer, lambda _: "3 + 2 = 5\nThe answer is 5\n")
    rows = [_row(WRONG), _row(WRONG), _row(WRONG), _row(WRONG)]
    out = grm_rewrites(
        grm,
        tokenizer,
        rows,
        batch_size=2,
        max_new_tokens=64,
        progress=False,
        error_steps=[1, -1, 5, None],
    )
    assert out == [
        GrmVerdict(1, "Tom starts with 3 apples.\n3 + 2 = 5\nThe answer is 5"),
        GrmVerdict(-1, WRONG),
        GrmVerdict(5, None),
        GrmVerdict(None, None),
    ]
    assert grm.prompts == [rewrite_prompt(QUESTION, GOLD, WRONG) + "Tom starts with 3 apples.\n"]
    with pytest.raises(ValueError, match="2 error steps for 4 rows"):
        grm_rewrites(grm, tokenizer, rows, batch_size=2, max_new_tokens=4, error_steps=[0, 1])


def _first_unkept_naive(probs, steps):
    for p, step in zip(probs, steps, strict=True):
        if step is not None and p < 0.5:
            return step
    return -1


@pytest.mark.parametrize(
    ("probs", "steps", "want"),
    [
        ([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 2], 1),  # the first token below 0.5 is in step 1
        ([0.4, 0.9], [0, 1], 0),
        ([0.9, 0.9, 0.3], [0, 1, None], -1),  # only the end token: every step is kept
        ([0.9, 0.1, 0.2], [0, None, 2], 2),  # a blank line does not count
        ([0.5, 0.7], [0, 1], -1),  # 0.5 is kept (the reward is 0 there)
        ([], [], -1),
    ],
)
def test_first_unkept_step_is_the_step_of_the_first_penalised_token(probs, steps, want):
    assert first_unkept_step(probs, steps) == want == _first_unkept_naive(probs, steps)


def test_first_unkept_step_needs_a_step_per_token():
    with pytest.raises(ValueError, match="3 probabilities for 2 tokens"):
        first_unkept_step([0.1, 0.2, 0.3], [0, 1])


def test_rows_missing_a_field_are_refused(tokenizer):
    grm = ScriptedGRM(tokenizer, lambda _: "")
    with pytest.raises(ValueError, match=r"row 1 has no string field 'prediction'"):
        rows = [_row(WRONG), {"question": QUESTION, "gold_solution": GOLD}]
        grm_rewrites(grm, tokenizer, rows, batch_size=2, max_new_tokens=4, progress=False)


def test_batched_greedy_decoding_matches_one_prompt_at_a_time(tokenizer):
    # Left padding must not change what a (random) model continues a prompt with.
    model = tiny_llama(tokenizer, seed=3)
    prompts = [QUESTION, "3 + 2 = 5", GOLD, WRONG, "The answer is"]
    ids = [tokenizer(p)["input_ids"] for p in prompts]
    batched = greedy_continuations(
        model, tokenizer, ids, max_new_tokens=6, batch_size=3, progress=False
    )
    single = [
        greedy_continuations(model, tokenizer, [i], max_new_tokens=6, batch_size=1, progress=False)
        for i in ids
    ]
    assert [[t] for t in batched] == single
    assert all(isinstance(t, str) and t for t in batched)


def test_greedy_continuations_stop_at_eos_and_drop_it(tokenizer):
    grm = ScriptedGRM(tokenizer, lambda p: "short" if "x" in p else "a longer continuation")
    ids = [tokenizer("x")["input_ids"], tokenizer("yy")["input_ids"]]
    out = greedy_continuations(grm, tokenizer, ids, max_new_tokens=32, batch_size=2, progress=False)
    assert out == ["short", "a longer continuation"]
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        greedy_continuations(grm, tokenizer, [[]], max_new_tokens=4, batch_size=1)


def test_grm_metrics_against_the_teacher():
    rows = [
        # kept: the GRM names the teacher's step and reaches the gold answer
        _row(WRONG, gold_answer="5", correct=False, error_step=1, teacher_status="kept"),
        # kept: wrong step, rewrite misses the gold answer
        _row(WRONG, gold_answer="5", correct=False, error_step=1, teacher_status="kept"),
        # correct: the GRM agrees
        _row(GOLD, gold_answer="5", correct=True, error_step=-1, teacher_status="correct"),
        # abstained: its step is unknown, but the rewrite counts for the gold rate
        _row(WRONG, gold_answer="5", correct=False, error_step=-1, teacher_status="abstained"),
    ]
    verdicts = [
        GrmVerdict(1, "Tom starts with 3 apples.\n3 + 2 = 5\nThe answer is 5"),
        GrmVerdict(0, "3 + 2 = 7\nThe answer is 7"),
        GrmVerdict(-1, GOLD),
        GrmVerdict(None, None),
    ]
    m = grm_metrics(verdicts, rows)
    assert m["error_step_accuracy"] == pytest.approx(2 / 3)
    assert m["error_step_accuracy_incorrect"] == pytest.approx(1 / 2)
    assert m["parse_rate"] == pytest.approx(3 / 4)
    assert m["rewrite_gold_rate"] == pytest.approx(1 / 3)
    assert m["rewrite_gold_rate_kept"] == pytest.approx(1 / 2)
    with pytest.raises(ValueError, match="3 verdicts for 4 rows"):
        grm_metrics(verdicts[:3], rows)
