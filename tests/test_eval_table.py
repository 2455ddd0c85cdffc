"""Stage 6 tables: policies × eval sets, and ablation mean ± std over seeds."""

from __future__ import annotations

import statistics

import pytest

from rlmec_core import eval_table
from rlmec_core.eval_table import (
    ablation_markdown,
    ablation_summary,
    evaluate_policies,
    results_markdown,
)
from rlmec_core.modeling import build_tiny_llama
from rlmec_core.tokenizer import train_tokenizer

RECORDS = [
    {"id": "a", "question": "What is 2 + 3?", "gold_answer": "5"},
    {"id": "b", "question": "What is 4 * 2?", "gold_answer": "8"},
]


def test_evaluate_policies_on_a_tiny_llama():
    tokenizer = train_tokenizer(["What is 2 + 3?\nThe answer is 5"] * 4, vocab_size=300)
    model = build_tiny_llama(
        tokenizer,
        hidden_size=32,
        num_layers=1,
        num_heads=4,
        intermediate_size=64,
        max_position_embeddings=128,
        seed=0,
    )
    rows = evaluate_policies(
        {"initial": (model, tokenizer)},
        {"toy": RECORDS, "one": RECORDS[:1]},
        batch_size=2,
        max_new_tokens=4,
        keep_predictions=True,
    )
    assert [(r["policy"], r["eval_set"], r["n"]) for r in rows] == [
        ("initial", "toy", 2),
        ("initial", "one", 1),
    ]
    for r in rows:
        assert r["accuracy"] == r["n_correct"] / r["n"]
        assert [p["id"] for p in r["predictions"]] == [x["id"] for x in RECORDS[: r["n"]]]


def test_evaluate_policies_runs_every_pair(monkeypatch):
    calls = []

    def fake_accuracy(model, tokenizer, records, *, batch_size, max_new_tokens, progress):
        calls.append((model, len(records), batch_size, max_new_tokens))
        n_correct = {"m0": 1, "m1": 2}[model] if len(records) == 2 else 0
        return {"accuracy": n_correct / len(records), "n": len(records), "n_correct": n_correct,
                "predictions": []}  # fmt: skip

    monkeypatch.setattr(eval_table, "greedy_accuracy", fake_accuracy)
    # A generator eval set: it must be materialised once, not exhausted by the first policy.
    rows = evaluate_policies(
        {"initial": ("m0", None), "rlmec": ("m1", None)},
        {"gsm8k": iter(RECORDS), "svamp": RECORDS * 2},
        batch_size=3,
        max_new_tokens=7,
    )
    assert calls == [("m0", 2, 3, 7), ("m0", 4, 3, 7), ("m1", 2, 3, 7), ("m1", 4, 3, 7)]
    assert [(r["policy"], r["eval_set"], r["accuracy"]) for r in rows] == [
        ("initial", "gsm8k", 0.5),
        ("initial", "svamp", 0.0),
        ("rlmec", "gsm8k", 1.0),
        ("rlmec", "svamp", 0.0),
    ]
    assert "predictions" not in rows[0]


def test_results_markdown_puts_initial_and_trained_side_by_side():
    rows = [
        {"policy": "rlmec", "eval_set": "gsm8k", "n": 50, "accuracy": 0.42},
        {"policy": "initial", "eval_set": "gsm8k", "n": 50, "accuracy": 0.30},
        {"policy": "initial", "eval_set": "svamp", "n": 40, "accuracy": 0.5},
        {"policy": "rlmec", "eval_set": "svamp", "n": 40, "accuracy": 0.45},
    ]
    lines = results_markdown(rows).splitlines()
    assert lines[0] == "| eval set | n | initial acc % | rlmec acc % | Δ rlmec vs initial |"
    assert lines[2] == "| gsm8k | 50 | 30.0 | 42.0 | +12.0 |"
    assert lines[3] == "| svamp | 40 | 50.0 | 45.0 | -5.0 |"
    # Without the baseline there is no Δ column; a missing cell shows a dash.
    lines = results_markdown([rows[0], rows[3], {**rows[0], "eval_set": "math", "policy": "x"}])
    assert lines.splitlines()[0] == "| eval set | n | rlmec acc % | x acc % |"
    assert "| math | 50 | – | 42.0 |" in lines
    with pytest.raises(ValueError, match="two rows for policy 'rlmec' on 'gsm8k'"):
        results_markdown([rows[0], rows[0]])
    with pytest.raises(ValueError, match="row 0 lacks accuracy"):
        results_markdown([{"policy": "a", "eval_set": "b", "n": 1}])


def test_ablation_summary_mean_and_sample_std():
    results = [
        {"variant": "rlmec", "seed": 0, "eval_set": "gsm8k", "accuracy": 0.40},
        {"variant": "rlmec", "seed": 1, "eval_set": "gsm8k", "accuracy": 0.44},
        {"variant": "rlmec", "seed": 2, "eval_set": "gsm8k", "accuracy": 0.48},
        {"variant": "no_imitation", "seed": 0, "eval_set": "gsm8k", "accuracy": 0.30},
        {"variant": "no_imitation", "seed": 1, "eval_set": "gsm8k", "accuracy": 0.40},
        {"variant": "rlmec", "seed": 0, "eval_set": "svamp", "accuracy": 0.6},
    ]
    summary = ablation_summary(results)
    by_key = {(s["variant"], s["eval_set"]): s for s in summary}
    assert list(by_key) == [("rlmec", "gsm8k"), ("no_imitation", "gsm8k"), ("rlmec", "svamp")]
    # 0.40, 0.44, 0.48: mean 0.44; deviations ±0.04 → sample var (0.0016*2)/2 = 0.0016 → 0.04
    assert by_key["rlmec", "gsm8k"]["mean"] == pytest.approx(0.44)
    assert by_key["rlmec", "gsm8k"]["std"] == pytest.approx(0.04)
    assert by_key["rlmec", "gsm8k"]["n_seeds"] == 3 and by_key["rlmec", "gsm8k"]["seeds"] == [
        0,
        1,
        2,
    ]
    # Two seeds: sample std = |a - b| / sqrt(2), not the population |a - b| / 2.
    assert by_key["no_imitation", "gsm8k"]["std"] == pytest.approx(0.1 / 2**0.5)
    assert by_key["no_imitation", "gsm8k"]["std"] == pytest.approx(statistics.stdev([0.3, 0.4]))
    assert by_key["rlmec", "svamp"] == {
        "variant": "rlmec", "eval_set": "svamp", "mean": 0.6, "std": None, "n_seeds": 1,
        "seeds": [0],
    }  # fmt: skip

    table = ablation_markdown(summary).splitlines()
    assert table[0] == "| variant | gsm8k | svamp |"
    assert table[2] == "| rlmec | 44.0 ± 4.0 (n=3) | 60.0 ± – (n=1) |"
    assert table[3] == "| no_imitation | 35.0 ± 7.1 (n=2) | – |"


def test_ablation_summary_rejects_repeated_seeds_and_missing_fields():
    row = {"variant": "rft", "seed": 3, "eval_set": "qa", "accuracy": 0.5}
    with pytest.raises(ValueError, match="row 1 repeats seed 3 of variant 'rft' on 'qa'"):
        ablation_summary([row, row])
    with pytest.raises(ValueError, match="row 0 lacks seed"):
        ablation_summary([{"variant": "rft", "eval_set": "qa", "accuracy": 0.5}])
    with pytest.raises(ValueError, match="accuracy nan"):
        ablation_summary([{**row, "accuracy": float("nan")}])
