"""A tiny policy and hand-made stage-4 rows (RL_FEATURES) for training tests."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from datasets import Dataset

from rlmec_core.data.schema import RL_FEATURES
from rlmec_core.tokenizer import train_tokenizer
from tests.tiny_models import tiny_llama


def problems(n: int, seed: int = 0) -> list[tuple[str, str, str, bool]]:
    """``n`` (prompt, y, ŷ, correct): every other one wrong, with a one-token rewrite."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(1, 9), rng.randint(1, 9)
        right = f"{a} + {b} = {a + b}\nThe answer is {a + b}"
        if i % 2:
            wrong = f"{a} + {b} = {a + b + 1}\nThe answer is {a + b + 1}"
            out.append((f"Q: {a} + {b} = ?\n", wrong, right, False))
        else:
            out.append((f"Q: {a} + {b} = ?\n", right, right, True))
    return out


def tiny_tokenizer():
    texts = [p + y + "\n" + t for p, y, t, _ in problems(64)]
    return train_tokenizer(texts, vocab_size=300)


def tiny_model(tokenizer, seed: int = 0, layers: int = 2):
    return tiny_llama(tokenizer, layers=layers, heads=4, positions=128, seed=seed)


def rl_row(
    tokenizer,
    index: int,
    sample: tuple[str, str, str, bool],
    ref_logprobs: Callable[[list[int], list[int]], list[float]],
) -> dict:
    """One RL_FEATURES row for ``sample`` (prompt, y, ŷ, correct): rewards of both signs
    (some zero), ``ref_logprobs(prompt_ids, response_ids)``, some imitation weights 1.0."""
    prompt, y, y_hat, correct = sample
    eos = tokenizer.eos_token_id
    prompt_ids = [tokenizer.bos_token_id, *tokenizer(prompt)["input_ids"]]
    response = [*tokenizer(y)["input_ids"], eos]
    target = [*tokenizer(y_hat)["input_ids"], eos]
    if correct:  # rewards in [0, 0.5], some zero
        rewards = [0.4 * ((t % 3) > 0) for t in range(len(response))]
    else:  # penalties in [-0.1, 0], some zero
        rewards = [-0.1 * ((t % 2) == 0) for t in range(len(response))]
    return {
        "sample_id": f"p{index}/0",
        "problem_id": f"p{index}",
        "correct": correct,
        "prediction": y,
        "rewrite": y_hat,
        "grm_error_step": -1 if correct else 0,
        "teacher_error_step": -1 if correct else 0,
        "prompt_ids": prompt_ids,
        "response_ids": response,
        "rewards": rewards,
        "ref_logprobs": ref_logprobs(prompt_ids, response),
        "target_ids": target,
        "target_weights": [0.5 if correct or t % 3 else 1.0 for t in range(len(target))],
    }


def rl_rows(tokenizer, n: int = 16, seed: int = 0) -> list[dict]:
    """RL_FEATURES rows of ``problems(n, seed)``, ref log-probs around -2."""
    rng = random.Random(seed)

    def ref(_prompt: list[int], response: list[int]) -> list[float]:
        return [rng.uniform(-3.0, -1.0) for _ in response]

    return [rl_row(tokenizer, i, sample, ref) for i, sample in enumerate(problems(n, seed))]


def rl_dataset(tokenizer, n: int = 16, seed: int = 0) -> Dataset:
    rows = rl_rows(tokenizer, n, seed)
    return Dataset.from_dict({k: [r[k] for r in rows] for k in RL_FEATURES}, features=RL_FEATURES)


def policy_stage(tmp_path: Path, train_policy: dict, name: str = "run") -> tuple[Any, Any]:
    """The context and folders of a ``train_policy`` stage run on a tiny saved policy and
    16 RL rows, with ``train_policy`` as the config section; no Prefect, no MLflow."""
    from rlmec_core.config import PipelineConfig
    from rlmec_core.data.io import save_parquet
    from tasks.context import RunContext
    from tasks.stage import StageIO

    inputs = tmp_path / "inputs"
    if not (inputs / "policy" / "model" / "config.json").is_file():
        tokenizer = tiny_tokenizer()
        model = tiny_model(tokenizer)
        model.save_pretrained(inputs / "policy" / "model")
        tokenizer.save_pretrained(inputs / "policy" / "model")
        save_parquet(rl_dataset(tokenizer), inputs / "rl_data" / "rl_data.parquet")
    config = PipelineConfig.model_validate({"train_policy": train_policy})
    ctx = RunContext(
        config=config,
        workspace=str(tmp_path / "workspace"),
        mlflow_tracking_uri="",
        mlflow_experiment_id="",
        mlflow_parent_run_id="",
    )
    io = StageIO(
        inputs={"policy": inputs / "policy", "rl_data": inputs / "rl_data"},
        out=tmp_path / name / "out",
        scratch=tmp_path / name / "scratch",
        parent_ids={"policy": "policy-artifact-id", "rl_data": "rl-data-artifact-id"},
    )
    io.out.mkdir(parents=True)
    io.scratch.mkdir(parents=True)
    return ctx, io
