"""Stage 5 policy training: the RLMEC trainer, its collator and the ablation variants."""

from __future__ import annotations

import math

import pytest
import torch

from rlmec_core.config import VARIANTS, TrainPolicySection
from rlmec_core.editing import minimum_edit_weights
from rlmec_core.losses import rlmec_loss
from rlmec_core.tokenizer import train_tokenizer
from rlmec_core.trainers.rlmec_trainer import (
    RL_VARIANTS,
    RlmecCollator,
    build_policy_trainer,
    gold_sft_rows,
    optimizer_steps,
    policy_rows,
    train_policy,
)
from tests.tiny_models import tiny_llama
from tests.tiny_rl import rl_row

# (prompt, y, ŷ, correct): two right samples, two wrong ones with a one-step rewrite.
SAMPLES = [
    ("Q: 2 + 3 = ?\n", "2 + 3 = 5\nThe answer is 5", "2 + 3 = 5\nThe answer is 5", True),
    (
        "Q: 4 * 2 + 1 = ?\n",
        "4 * 2 = 9\n9 + 1 = 10\nThe answer is 10",
        "4 * 2 = 8\n8 + 1 = 9\nThe answer is 9",
        False,
    ),
    ("Q: 7 - 4 = ?\n", "7 - 4 = 3\nThe answer is 3", "7 - 4 = 3\nThe answer is 3", True),
    ("Q: 6 + 6 = ?\n", "6 + 6 = 11\nThe answer is 11", "6 + 6 = 12\nThe answer is 12", False),
]
# The gold solutions of the four problems (gold_sft trains on these).
PROBLEMS = [
    {"id": f"p{i}", "question": prompt.strip(), "gold_solution": y_hat}
    for i, (prompt, _, y_hat, _) in enumerate(SAMPLES)
]


def _cfg(variant: str = "rlmec", **kw) -> TrainPolicySection:
    settings = {
        "epochs": 1,
        "learning_rate": 1e-2,
        "batch_size": 2,
        "warmup_ratio": 0.0,
        "logging_steps": 1,
        **kw,
    }
    return TrainPolicySection(variant=variant, **settings)


@pytest.fixture(scope="module")
def tokenizer():
    texts = [p + y for p, y, _, _ in SAMPLES] + [t for _, _, t, _ in SAMPLES]
    return train_tokenizer(texts, vocab_size=300)


def _model(tokenizer, seed: int = 0):
    return tiny_llama(tokenizer, layers=1, heads=4, positions=128, seed=seed)


def _naive_logprobs(model, prompt: list[int], cont: list[int]) -> torch.Tensor:
    # One unpadded sequence through the full float32 log-softmax over the vocabulary.
    logits = model(torch.tensor([prompt + cont])).logits[0].float()
    logp = torch.log_softmax(logits, dim=-1)
    return torch.stack([logp[len(prompt) + i - 1, tok] for i, tok in enumerate(cont)])


def _pad(rows: list[torch.Tensor]) -> torch.Tensor:
    out = torch.zeros(len(rows), max(len(r) for r in rows))
    for b, r in enumerate(rows):
        out[b, : len(r)] = r
    return out


@pytest.fixture(scope="module")
def rl_rows(tokenizer):
    """Hand-made stage-4 rows; ref log-probs sit ±0.5 off the initial model, so some clip."""
    model = _model(tokenizer).eval()

    def ref(prompt_ids: list[int], response: list[int]) -> list[float]:
        with torch.no_grad():
            logp = _naive_logprobs(model, prompt_ids, response)
        offsets = torch.tensor([0.5 if t % 2 else -0.5 for t in range(len(response))])
        return (logp + offsets).tolist()

    rows = [rl_row(tokenizer, i, sample, ref) for i, sample in enumerate(SAMPLES)]
    for row in rows:  # the imitation weights annotate gives
        response, target = row["response_ids"], row["target_ids"]
        row["target_weights"] = (
            [0.5] * len(target) if row["correct"] else minimum_edit_weights(response, target)
        )
    return rows


def _trainer(model, tokenizer, rows, tmp_path, variant, **kw):
    gold = gold_sft_rows(tokenizer, PROBLEMS, [r["problem_id"] for r in rows])
    return build_policy_trainer(
        model, tokenizer, rows, tmp_path / variant, _cfg(variant, **kw), gold=gold
    )


def test_collator_pads_sequences_and_per_token_lists(tokenizer, rl_rows):
    pad = tokenizer.pad_token_id
    batch = RlmecCollator(pad)(policy_rows(rl_rows, "rlmec"))
    assert batch["input_ids"].shape == batch["attention_mask"].shape == batch["response_mask"].shape
    width_t = max(len(r["response_ids"]) for r in rl_rows)
    assert batch["rewards"].shape == batch["ref_logprobs"].shape == (len(rl_rows), width_t)
    assert batch["target_weights"].shape == (
        len(rl_rows),
        max(len(r["target_ids"]) for r in rl_rows),
    )
    for b, row in enumerate(rl_rows):
        n_p, n_y, n_t = len(row["prompt_ids"]), len(row["response_ids"]), len(row["target_ids"])
        ids, att, resp = (
            batch["input_ids"][b],
            batch["attention_mask"][b],
            batch["response_mask"][b],
        )
        # Right padding: the real tokens first, then pad ids with attention 0.
        assert ids[: n_p + n_y].tolist() == row["prompt_ids"] + row["response_ids"]
        assert (ids[n_p + n_y :] == pad).all() and att.sum() == n_p + n_y
        assert not att[n_p + n_y :].any()
        assert ids[resp.bool()].tolist() == row["response_ids"]
        assert torch.allclose(batch["rewards"][b, :n_y], torch.tensor(row["rewards"]))
        assert torch.allclose(batch["ref_logprobs"][b, :n_y], torch.tensor(row["ref_logprobs"]))
        assert not batch["rewards"][b, n_y:].any() and not batch["ref_logprobs"][b, n_y:].any()
        t_ids, t_mask = batch["target_input_ids"][b], batch["target_mask"][b]
        assert t_ids[: n_p + n_t].tolist() == row["prompt_ids"] + row["target_ids"]
        assert t_ids[t_mask.bool()].tolist() == row["target_ids"]
        assert batch["target_attention_mask"][b].sum() == n_p + n_t
        assert batch["target_weights"][b, :n_t].tolist() == row["target_weights"]
        assert not batch["target_weights"][b, n_t:].any()


def _naive_rlmec_loss(
    model, rows, *, imitation_coef=1.0, rewards=None, n_response_tokens=None
) -> torch.Tensor:
    logp = _pad([_naive_logprobs(model, r["prompt_ids"], r["response_ids"]) for r in rows])
    target = _pad([_naive_logprobs(model, r["prompt_ids"], r["target_ids"]) for r in rows])
    rewards = rewards or [r["rewards"] for r in rows]
    return rlmec_loss(
        logp,
        _pad([torch.tensor(r["ref_logprobs"]) for r in rows]),
        _pad([torch.tensor(x) for x in rewards]),
        target,
        _pad([torch.tensor(r["target_weights"]) for r in rows]),
        imitation_coef=imitation_coef,
        n_response_tokens=n_response_tokens,
    )


def test_compute_loss_matches_naive_full_log_softmax(tokenizer, rl_rows, tmp_path):
    model = _model(tokenizer)
    trainer = _trainer(model, tokenizer, rl_rows, tmp_path, "rlmec")
    batch = trainer.data_collator(trainer.train_dataset.rows)
    loss, terms = trainer.compute_loss(model, batch, return_outputs=True)
    with torch.no_grad():
        expected = _naive_rlmec_loss(model, rl_rows)
    assert loss.requires_grad
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    # The ±0.5 offsets put e^±0.5 outside [0.7, 1.3] on every rewarded token.
    assert terms["clip_fraction"].item() > 0.5
    assert terms["l_im"].item() > 0


def test_response_token_normaliser_divides_l_rl_by_every_response_token(
    tokenizer, rl_rows, tmp_path
):
    model = _model(tokenizer)
    trainer = _trainer(
        model, tokenizer, rl_rows, tmp_path, "rlmec", rl_normalizer="response_tokens"
    )
    batch = trainer.data_collator(trainer.train_dataset.rows)
    n_response = sum(len(r["response_ids"]) for r in rl_rows)
    n_rewarded = sum(1 for r in rl_rows for x in r["rewards"] if x != 0)
    assert n_rewarded < n_response  # the hand-made rewards leave some tokens at zero
    with torch.no_grad():
        loss, terms = trainer.compute_loss(model, batch, return_outputs=True)
        expected = _naive_rlmec_loss(model, rl_rows, n_response_tokens=n_response)
        spec = _naive_rlmec_loss(model, rl_rows)
    assert loss.item() == pytest.approx(expected.item(), abs=1e-5)
    assert loss.item() != pytest.approx(spec.item(), abs=1e-4)
    # Instance-level rewards are never zero: there both normalisers are the same loss.
    trainers = [
        _trainer(model, tokenizer, rl_rows, tmp_path, "no_token_reward", rl_normalizer=n)
        for n in ("reward_tokens", "response_tokens")
    ]
    with torch.no_grad():
        a, b = (t.compute_loss(model, t.data_collator(t.train_dataset.rows)) for t in trainers)
    assert a.item() == pytest.approx(b.item(), abs=1e-6)


def test_no_imitation_ignores_targets(tokenizer, rl_rows, tmp_path):
    model = _model(tokenizer)
    changed = [
        {**r, "target_ids": r["target_ids"][:2], "target_weights": [1.0, 1.0]} for r in rl_rows
    ]
    losses = {}
    for variant in ("rlmec", "no_imitation"):
        for name, rows in (("orig", rl_rows), ("changed", changed)):
            trainer = _trainer(model, tokenizer, rows, tmp_path, variant)
            batch = trainer.data_collator(trainer.train_dataset.rows)
            with torch.no_grad():
                losses[variant, name] = trainer.compute_loss(model, batch).item()
            if variant == "no_imitation":
                assert "target_input_ids" not in batch  # ŷ never goes through the policy
    assert losses["rlmec", "orig"] != pytest.approx(losses["rlmec", "changed"], abs=1e-4)
    assert losses["no_imitation", "orig"] == losses["no_imitation", "changed"]
    with torch.no_grad():
        expected = _naive_rlmec_loss(model, rl_rows, imitation_coef=0.0)
    assert losses["no_imitation", "orig"] == pytest.approx(expected.item(), abs=1e-5)


def test_no_token_reward_uses_instance_rewards(tokenizer, rl_rows, tmp_path):
    model = _model(tokenizer)
    trainer = _trainer(model, tokenizer, rl_rows, tmp_path, "no_token_reward")
    for row, train_row in zip(rl_rows, trainer.train_dataset.rows, strict=True):
        value = 0.5 if row["correct"] else -0.1
        assert train_row["rewards"] == pytest.approx([value] * len(row["response_ids"]))
        assert train_row["target_ids"] == row["target_ids"]  # imitation stays on
    batch = trainer.data_collator(trainer.train_dataset.rows)
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch).item()
        rewards = [[0.5 if r["correct"] else -0.1] * len(r["response_ids"]) for r in rl_rows]
        expected = _naive_rlmec_loss(model, rl_rows, rewards=rewards)
    assert loss == pytest.approx(expected.item(), abs=1e-5)


def test_rft_trains_on_correct_samples_and_rewrites_only(tokenizer, rl_rows, tmp_path):
    model = _model(tokenizer)
    trainer = _trainer(model, tokenizer, rl_rows, tmp_path, "rft")
    train_rows = trainer.train_dataset.rows
    wrong_ys = {tuple(r["response_ids"]) for r in rl_rows if not r["correct"]}
    for row, train_row in zip(rl_rows, train_rows, strict=True):
        expected = row["response_ids"] if row["correct"] else row["target_ids"]
        assert train_row["target_ids"] == expected
        assert tuple(train_row["target_ids"]) not in wrong_ys
        assert set(train_row) == {"prompt_ids", "target_ids", "target_weights"}
    batch = trainer.data_collator(train_rows)
    assert "response_mask" not in batch and "rewards" not in batch
    with torch.no_grad():
        loss = trainer.compute_loss(model, batch).item()
        nll = torch.cat(
            [-_naive_logprobs(model, r["prompt_ids"], r["target_ids"]) for r in train_rows]
        )
    assert loss == pytest.approx(nll.mean().item(), abs=1e-5)


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_step_of_each_variant(tokenizer, rl_rows, tmp_path, variant):
    model = _model(tokenizer)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    gold = gold_sft_rows(tokenizer, PROBLEMS, [r["problem_id"] for r in rl_rows])
    cfg = _cfg(variant, max_steps=1, save_steps=10)
    metrics = train_policy(model, tokenizer, rl_rows, tmp_path / variant, cfg, gold=gold)
    changed = any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert changed and metrics["steps"] == 1
    assert [s for s, _ in metrics["loss_history"]] == [1]
    terms = metrics["term_histories"]
    expected_terms = (
        {"nll"}
        if variant in ("rft", "gold_sft")
        else {"l_rl", "l_im", "clip_fraction", "mean_ratio"}
    )
    assert set(terms) == expected_terms
    for history in terms.values():
        assert len(history) == 1 and math.isfinite(history[0][1])
    if variant == "no_imitation":
        assert terms["l_im"][0][1] == 0.0 and metrics["imitation_coef"] == 0.0
    if variant == "rlmec":
        assert terms["l_im"][0][1] > 0


def test_resume_continues_at_the_saved_step(tokenizer, rl_rows, tmp_path):
    def cfg(max_steps: int, save_steps: int) -> TrainPolicySection:
        return _cfg(lr_scheduler="constant", max_steps=max_steps, save_steps=save_steps)

    straight = _model(tokenizer)
    train_policy(straight, tokenizer, rl_rows, tmp_path / "straight", cfg(4, 100))

    first = _model(tokenizer)
    out = tmp_path / "resumed"
    m1 = train_policy(first, tokenizer, rl_rows, out, cfg(2, 2))
    assert m1["steps"] == 2 and (out / "checkpoint-2").is_dir()

    # A differently initialised model: every weight must come back from the checkpoint.
    second = _model(tokenizer, seed=1)
    m2 = train_policy(second, tokenizer, rl_rows, out, cfg(4, 2))
    assert m2["resumed_from"].endswith("checkpoint-2")
    assert m2["steps"] == 4
    assert [s for s, _ in m2["loss_history"]] == [1, 2, 3, 4]
    assert [s for s, _ in m2["term_histories"]["l_rl"]] == [1, 2, 3, 4]
    for (name, a), b in zip(
        straight.state_dict().items(), second.state_dict().values(), strict=True
    ):
        assert torch.allclose(a, b, atol=1e-5), name

    # A finished run resumed again does no more steps.
    m3 = train_policy(_model(tokenizer), tokenizer, rl_rows, out, cfg(4, 2))
    assert m3["resumed_from"].endswith("checkpoint-4") and m3["steps"] == 4


def test_bad_rows_name_the_row_and_field(tokenizer, rl_rows):
    bad = [rl_rows[0], {**rl_rows[1], "rewards": rl_rows[1]["rewards"][:-1]}]
    with pytest.raises(ValueError, match=r"RL row 1 \(p1/0\): rewards has"):
        policy_rows(bad, "rlmec")
    bad = [{**rl_rows[0], "target_weights": [0.5]}]
    with pytest.raises(ValueError, match="target_weights has 1 entries"):
        policy_rows(bad, "rlmec")
    policy_rows(bad, "no_imitation")  # targets unused there
    with pytest.raises(ValueError, match="no RL rows for variant 'ppo'"):
        policy_rows(rl_rows, "ppo")


def test_rows_from_an_rl_features_dataset(rl_rows):
    from datasets import Dataset

    from rlmec_core.data.schema import RL_FEATURES

    dataset = Dataset.from_list(rl_rows, features=RL_FEATURES)
    for variant in ("rlmec", "rft"):
        from_dataset, from_list = policy_rows(dataset, variant), policy_rows(rl_rows, variant)
        for a, b in zip(from_dataset, from_list, strict=True):
            assert a.keys() == b.keys()
            for key in a:
                assert a[key] == pytest.approx(b[key], abs=1e-6), key


def test_gold_sft_trains_the_same_problems_gold_for_as_many_steps(tokenizer, rl_rows, tmp_path):
    # Four RL rows over four problems: with batch 2 and 3 epochs every variant takes 6
    # optimizer steps; gold_sft takes as many on the problems' gold solutions.
    rows = rl_rows + [{**rl_rows[1], "sample_id": "p1/1"}]  # 5 rows, still 4 problems
    steps = {}
    for variant in ("rlmec", "rft", "gold_sft"):
        gold = gold_sft_rows(tokenizer, PROBLEMS, [r["problem_id"] for r in rows])
        cfg = _cfg(variant, epochs=3, save_steps=100)
        steps[variant] = train_policy(
            _model(tokenizer), tokenizer, rows, tmp_path / variant, cfg, gold=gold
        )["steps"]
    assert steps == {"rlmec": 9, "rft": 9, "gold_sft": 9}  # ceil(5 / 2) * 3
    assert optimizer_steps(5, _cfg(epochs=3), world_size=1) == 9
    assert optimizer_steps(5, _cfg(epochs=3, gradient_accumulation_steps=2), 1) == 6
    assert optimizer_steps(5, _cfg(epochs=1.5), world_size=2) == 3  # ceil(1.5 * 2)

    # Its rows: one per problem, the gold solution after the policy prompt, weight 1.
    gold = gold_sft_rows(tokenizer, PROBLEMS, ["p3", "p1", "p1"])
    assert len(gold) == 2
    from rlmec_core.policy_prompt import format_policy_prompt
    from rlmec_core.response_tokens import split_tokenize

    prompt, target = split_tokenize(
        tokenizer, format_policy_prompt(PROBLEMS[1]["question"]), PROBLEMS[1]["gold_solution"]
    )
    assert gold[0] == {
        "prompt_ids": prompt,
        "target_ids": target,
        "target_weights": [1.0] * len(target),
    }
    with pytest.raises(ValueError, match="problem 'p9' is not in the training problems"):
        gold_sft_rows(tokenizer, PROBLEMS, ["p9"])
    with pytest.raises(ValueError, match="gold_sft: no gold rows"):
        build_policy_trainer(
            _model(tokenizer), tokenizer, rl_rows, tmp_path / "x", _cfg("gold_sft")
        )
    assert "gold_sft" not in RL_VARIANTS
