"""The check stage 4's scoring tests share: batched log-probs equal one sequence at a time."""

from __future__ import annotations

import pytest

from rlmec_core.response_logprobs import batched_response_logprobs
from tests.naive_logprobs import sequential_response_logprobs


def assert_batched_equal_sequential(model, prompts, responses, **batching) -> list[list[float]]:
    """Score with ``batched_response_logprobs(model, prompts, responses, **batching)`` from
    train mode (it must score without dropout and restore the mode), compare each response's
    log-probs with ``sequential_response_logprobs`` and return the batched ones. Leaves
    ``model`` in eval mode."""
    model.train()
    got = batched_response_logprobs(model, prompts, responses, **batching)
    assert model.training
    model.eval()
    want = sequential_response_logprobs(model, prompts, responses)
    for g, w, response in zip(got, want, responses, strict=True):
        assert len(g) == len(w) == len(response)
        assert g == pytest.approx(w, abs=1e-5)
    return got
