"""Stage 6 tables: policies × eval sets with CIs and paired differences, and the ablation."""

from __future__ import annotations

import statistics

import pytest

from rlmec_core import eval_table
from rlmec_core.eval_table import (
    Table,
    ablation_markdown,
    ablation_summary,
    ablation_table,
    evaluate_policies,
    results_markdown,
    results_table,
    summarize_results,
)
from rlmec_core.statistics import accuracy_interval, paired_difference
from rlmec_core.tokenizer import train_tokenizer
from tests.tiny_models import tiny_llama

RECORDS = [
    {"id": "a", "question": "What is 2 + 3?", "gold_answer": "5"},
    {"id": "b", "question": "What is 4 * 2?", "gold_answer": "8"},
]


def test_evaluate_policies_on_a_tiny_llama():
    tokenizer = train_tokenizer(["What is 2 + 3?\nThe answer is 5"] * 4, vocab_size=300)
    model = tiny_llama(tokenizer, layers=1, heads=4, positions=128)
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
        assert r["outcomes"] == [p["correct"] for p in r["predictions"]]


def test_evaluate_policies_runs_every_pair(monkeypatch):
    calls = []

    def fake_accuracy(model, tokenizer, records, *, batch_size, max_new_tokens, progress, style):
        calls.append((model, len(records), batch_size, max_new_tokens))
        n_correct = {"m0": 1, "m1": 2}[model] if len(records) == 2 else 0
        predictions = [{"correct": i < n_correct} for i in range(len(records))]
        return {"accuracy": n_correct / len(records), "n": len(records), "n_correct": n_correct,
                "predictions": predictions}  # fmt: skip

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


def _row(policy, eval_set, outcomes):
    return {
        "policy": policy,
        "eval_set": eval_set,
        "n": len(outcomes),
        "n_correct": sum(outcomes),
        "accuracy": sum(outcomes) / len(outcomes),
        "outcomes": outcomes,
    }


def test_results_carry_intervals_and_the_paired_difference_to_the_initial_policy():
    initial = [i % 10 < 3 for i in range(200)]  # 30%
    trained = [i % 10 < 4 for i in range(200)]  # 40%: solves all the initial does and more
    rows = [_row("rlmec", "synthetic_test", trained), _row("initial", "synthetic_test", initial)]
    summary = summarize_results(rows)
    by_policy = {s["policy"]: s for s in summary}
    assert by_policy["initial"]["interval"] == accuracy_interval(initial).to_json()
    assert "vs_baseline" not in by_policy["initial"]
    assert by_policy["rlmec"]["vs_baseline"] == paired_difference(trained, initial).to_json()
    assert by_policy["rlmec"]["vs_baseline"]["value"] == pytest.approx(0.1)
    assert by_policy["rlmec"]["vs_baseline"]["low"] > 0

    table = results_table(summary)
    assert isinstance(table, Table)
    assert table.header[:3] == ("eval set", "policy", "n")
    # The baseline first, then the others; accuracy with its interval, Δ with CI and p.
    assert [r[1] for r in table.rows] == ["initial", "rlmec"]
    initial_ci = by_policy["initial"]["interval"]
    assert table.rows[0][3] == (
        f"30.0 [{100 * initial_ci['low']:.1f}, {100 * initial_ci['high']:.1f}]"
    )
    assert table.rows[0][4] == "–"
    assert table.rows[1][4].startswith("+10.0 [+") and "p<0.001" in table.rows[1][4]
    markdown = results_markdown(rows).splitlines()
    assert markdown[0] == "| " + " | ".join(table.header) + " |"
    assert markdown[2] == "| " + " | ".join(table.rows[0]) + " |"


def test_results_are_refused_when_they_cannot_be_compared():
    with pytest.raises(ValueError, match="two rows for policy 'rlmec' on 'gsm8k'"):
        summarize_results([_row("rlmec", "gsm8k", [True]), _row("rlmec", "gsm8k", [False])])
    with pytest.raises(ValueError, match="row 0 lacks outcomes"):
        summarize_results([{"policy": "a", "eval_set": "b", "n": 1, "accuracy": 1.0}])
    with pytest.raises(ValueError, match="eval set 'empty' has no problems"):
        summarize_results([{**_row("initial", "empty", [True]), "n": 0, "outcomes": []}])
    with pytest.raises(ValueError, match="2 outcomes for n=3"):
        summarize_results([{**_row("initial", "x", [True, False]), "n": 3}])
    with pytest.raises(ValueError, match="cells for 2 columns"):
        Table(("a", "b"), (("1",),))


def _seeded(variant, seed, outcomes, eval_set="test"):
    return {
        "variant": variant,
        "seed": seed,
        "eval_set": eval_set,
        "outcomes": outcomes,
        "policy_artifact": f"{variant}-{seed}",
    }


def test_ablation_pools_seeds_and_compares_with_the_initial_policy_and_rlmec():
    n = 300
    initial = [i % 10 < 3 for i in range(n)]
    rlmec = [[i % 10 < 4 for i in range(n)], [i % 10 < 5 for i in range(n)]]
    rft = [[i % 10 < 3 for i in range(n)], [i % 10 < 2 for i in range(n)]]
    results = [
        _seeded("rlmec", 0, rlmec[0]),
        _seeded("rlmec", 1, rlmec[1]),
        _seeded("rft", 0, rft[0]),
        _seeded("rft", 1, rft[1]),
    ]
    summary = ablation_summary(results, {"test": initial})
    by_variant = {s["variant"]: s for s in summary}
    assert list(by_variant) == ["initial", "rlmec", "rft"]
    assert by_variant["initial"]["accuracy"] == accuracy_interval(initial).to_json()
    assert by_variant["initial"]["vs_initial"] is None
    r = by_variant["rlmec"]
    assert r["n_seeds"] == 2 and r["seeds"] == [0, 1] and r["n"] == n
    assert r["accuracy"] == accuracy_interval(rlmec).to_json()
    assert r["accuracy"]["value"] == pytest.approx(0.45)
    assert r["seed_accuracies"] == pytest.approx([0.4, 0.5])
    assert r["std"] == pytest.approx(statistics.stdev([0.4, 0.5]))
    assert r["vs_initial"] == paired_difference(rlmec, initial).to_json()
    assert r["vs_reference"] is None  # rlmec is the reference itself
    assert r["artifacts"] == {"0": "rlmec-0", "1": "rlmec-1"}
    assert by_variant["rft"]["vs_reference"] == paired_difference(rft, rlmec).to_json()
    assert by_variant["rft"]["vs_reference"]["value"] == pytest.approx(-0.2)

    table = ablation_table(summary)
    assert [row[1] for row in table.rows] == ["initial", "rlmec", "rft"]
    assert table.rows[1][3] == "2" and table.rows[1][5] == "7.1"
    assert table.rows[2][7].startswith("-20.0 [")
    assert ablation_markdown(summary) == table.to_markdown()


def test_ablation_pools_bootstrap_seeds_each_policy_beside_its_own_initial_policy():
    # Two initial policies from two bootstrap seeds, far apart (30% and 60%); rlmec gains
    # 10 points over each. Paired with its own initial policy the gain is +10 on both;
    # paired with bootstrap 0's alone it would look like +25.
    n = 200
    initial = [[i % 10 < 3 for i in range(n)], [i % 10 < 6 for i in range(n)]]
    trained = {0: [i % 10 < 4 for i in range(n)], 1: [i % 10 < 7 for i in range(n)]}
    results = [
        {**_seeded("rlmec", seed, trained[boot]), "bootstrap_seed": boot}
        for boot in (0, 1)
        for seed in (0, 1)
    ]
    summary = ablation_summary(results, {"test": initial})
    base, rlmec = summary
    assert base["n_seeds"] == 2 and base["seed_accuracies"] == pytest.approx([0.3, 0.6])
    assert base["accuracy"] == accuracy_interval(initial).to_json()
    assert base["std"] == pytest.approx(statistics.stdev([0.3, 0.6]))
    assert rlmec["seeds"] == ["0/0", "0/1", "1/0", "1/1"] and rlmec["n_seeds"] == 4
    assert rlmec["vs_initial"]["value"] == pytest.approx(0.10)
    expected = [trained[0], trained[0], trained[1], trained[1]]
    beside = [initial[0], initial[0], initial[1], initial[1]]
    assert rlmec["vs_initial"] == paired_difference(expected, beside).to_json()
    by_boot = rlmec["vs_initial_by_bootstrap"]
    assert set(by_boot) == {"0", "1"}
    assert [e["value"] for e in by_boot.values()] == pytest.approx([0.10, 0.10])
    table = ablation_table(summary)
    assert table.header[-1] == "Δ vs initial per bootstrap seed"
    assert table.rows[1][-1] == "+10.0 / +10.0" and table.rows[0][-1] == "–"
    # One bootstrap seed: the table and the summary keep their one-bootstrap shape.
    single = ablation_summary([_seeded("rlmec", 0, trained[0])], {"test": initial[0]})
    assert single[1]["seeds"] == [0] and single[1]["vs_initial_by_bootstrap"] is None
    assert len(ablation_table(single).header) == 8
    with pytest.raises(ValueError, match="row 0: bootstrap seed 2 has no initial outcomes"):
        ablation_summary([{**results[0], "bootstrap_seed": 2}], {"test": initial})
    with pytest.raises(ValueError, match="same, non-empty problems"):
        ablation_summary(results, {"test": [initial[0], initial[1][:-1]]})


def test_ablation_summary_rejects_repeated_seeds_and_mismatched_problems():
    row = _seeded("rft", 3, [True, False])
    with pytest.raises(ValueError, match="row 1 repeats seed 3 of variant 'rft' on 'test'"):
        ablation_summary([row, row], {"test": [True, True]})
    with pytest.raises(ValueError, match="row 0 lacks seed"):
        ablation_summary([{"variant": "rft", "eval_set": "test", "outcomes": []}], {})
    with pytest.raises(ValueError, match="row 0 has 2 outcomes on 'test', the initial policy 3"):
        ablation_summary([row], {"test": [True, True, True]})
    with pytest.raises(ValueError, match="no initial outcomes for 'test'"):
        ablation_summary([row], {"other": [True, True]})
