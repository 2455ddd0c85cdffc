"""Stage 2 core: teacher rewrites with per-sample checkpoints, resume, threads, metrics."""

from __future__ import annotations

import json
import pickle
import threading
import time
from pathlib import Path

import pytest
from datasets import Dataset

from rlmec_core.config import VerificationSection
from rlmec_core.data.schema import DISTILLED_FEATURES
from rlmec_core.distill import (
    DistillError,
    distill_metrics,
    distill_rewrites,
    judge_sample,
    read_shards,
)
from rlmec_core.teachers.arithmetic import ArithmeticTeacher
from rlmec_core.teachers.base import Rewrite, split_steps
from rlmec_core.verification import Verifier
from tests.hens import HENS_GOLD, HENS_LUCKY, HENS_Q, QA_Q


class FakeTeacher:
    """Deterministic teacher: keeps step 0, then writes the gold solution's steps.

    A prediction containing ABSTAIN makes it abstain, WRONG makes it miss the gold answer,
    BOOM makes it raise. It records every prediction it is asked about.
    """

    name = "fake"

    def __init__(self, delay: float = 0.0) -> None:
        self.calls: list[str] = []
        self.delay = delay
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()

    def rewrite(self, question: str, gold_solution: str, prediction: str) -> Rewrite | None:
        with self._lock:
            self.calls.append(prediction)
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                time.sleep(self.delay)
            if "BOOM" in prediction:
                raise ConnectionError("teacher API down")
            if "ABSTAIN" in prediction:
                return None
            if "NOERR" in prediction:
                return Rewrite(error_step=-1, text=prediction)
            gold_steps = split_steps(gold_solution)
            if "WRONG" in prediction:
                gold_steps[-1] = "The answer is 999"
            return Rewrite(error_step=1, text="\n".join([split_steps(prediction)[0], *gold_steps]))
        finally:
            with self._lock:
                self.in_flight -= 1


def make_sample(i: int, correct: bool, marker: str = "") -> dict:
    answer = 10 + i
    predicted = answer if correct else answer + 1
    return {
        "sample_id": f"p{i:02d}/0",
        "problem_id": f"p{i:02d}",
        "question": f"What is {i} + 10?",
        "gold_solution": f"{i} + 10 = {answer}\nThe answer is {answer}",
        "gold_answer": str(answer),
        "source": "synthetic",
        "prediction": f"We add {i} and 10. {marker}".strip()
        + f"\n{i} + 10 = {predicted}\nThe answer is {predicted}",
        "predicted_answer": str(predicted),
        "correct": correct,
    }


def mixed_samples() -> list[dict]:
    return [
        make_sample(0, True),
        make_sample(1, False),
        make_sample(2, False, "ABSTAIN"),
        make_sample(3, True),
        make_sample(4, False, "WRONG"),
        make_sample(5, False),
    ]


def shard_lines(shard_dir: Path) -> list[str]:
    return [
        line
        for shard in sorted(shard_dir.glob("shard-*.jsonl"))
        for line in shard.read_text().splitlines()
    ]


def test_statuses_order_and_schema(tmp_path):
    teacher = FakeTeacher()
    samples = mixed_samples()
    rows = distill_rewrites(samples, teacher, tmp_path / "shards", progress=False)

    assert [r["sample_id"] for r in rows] == [s["sample_id"] for s in samples]
    assert [r["teacher_status"] for r in rows] == [
        "correct",
        "kept",
        "abstained",
        "correct",
        "wrong_answer",
        "kept",
    ]
    # Correct samples never reach the teacher and are their own rewrite.
    assert sorted(teacher.calls) == sorted(s["prediction"] for s in samples if not s["correct"])
    assert rows[0]["error_step"] == -1 and rows[0]["rewrite"] == samples[0]["prediction"]
    assert rows[1]["error_step"] == 1
    assert rows[1]["rewrite"] == "We add 1 and 10.\n1 + 10 = 11\nThe answer is 11"
    assert rows[2]["error_step"] == -1 and rows[2]["rewrite"] == ""
    assert rows[4]["rewrite"].endswith("The answer is 999")
    for sample, row in zip(samples, rows, strict=True):
        assert list(row) == list(DISTILLED_FEATURES)
        assert {k: row[k] for k in sample} == sample
    Dataset.from_list(rows, features=DISTILLED_FEATURES)  # the rows fit the schema
    # Every sample, correct ones included, is checkpointed exactly once.
    assert len(shard_lines(tmp_path / "shards")) == len(samples)


def test_a_no_error_verdict_on_an_incorrect_sample_counts_as_abstaining(tmp_path):
    [row] = distill_rewrites([make_sample(0, False, "NOERR")], FakeTeacher(), tmp_path / "s")
    assert (row["teacher_status"], row["error_step"]) == ("abstained", -1)


def test_accepts_a_dataset_of_samples(tmp_path):
    samples = mixed_samples()
    from_list = distill_rewrites(samples, FakeTeacher(), tmp_path / "a", progress=False)
    from_ds = distill_rewrites(Dataset.from_list(samples), FakeTeacher(), tmp_path / "b")
    assert from_ds == from_list


def test_resume_after_a_kill_redoes_only_the_unfinished(tmp_path):
    samples = mixed_samples()
    reference = distill_rewrites(samples, FakeTeacher(), tmp_path / "ref", progress=False)

    # A killed run: samples 0 and 1 finished, sample 2 (incorrect) cut off mid-line.
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    finished = "".join(json.dumps(row) + "\n" for row in reference[:2])
    partial = json.dumps(reference[2])[:40]
    (shard_dir / "shard-20240101T000000-1-deadbeef.jsonl").write_text(finished + partial)

    teacher = FakeTeacher()
    rows = distill_rewrites(samples, teacher, shard_dir, progress=False)
    assert rows == reference
    # The teacher is asked again only about the unfinished incorrect samples 2, 4 and 5.
    assert sorted(teacher.calls) == sorted(s["prediction"] for s in samples[2:] if not s["correct"])
    assert samples[1]["prediction"] not in teacher.calls
    # No duplicates and nothing lost: each sample once among the complete lines.
    ids = [json.loads(line)["sample_id"] for line in shard_lines(shard_dir) if line != partial]
    assert sorted(ids) == sorted(s["sample_id"] for s in samples)

    # A third run has nothing left to do: no teacher calls, no new shard.
    shards_before = sorted(shard_dir.glob("shard-*.jsonl"))
    again = FakeTeacher()
    assert distill_rewrites(samples, again, shard_dir, progress=False) == reference
    assert again.calls == []
    assert sorted(shard_dir.glob("shard-*.jsonl")) == shards_before


def test_teacher_failure_keeps_finished_work_and_names_the_sample(tmp_path):
    samples = [make_sample(0, False), make_sample(1, True), make_sample(2, False, "BOOM")]
    samples.append(make_sample(3, False))
    shard_dir = tmp_path / "shards"
    with pytest.raises(DistillError, match=r"'p02/0'.*ConnectionError: teacher API down"):
        distill_rewrites(samples, FakeTeacher(), shard_dir, progress=False)
    assert set(read_shards(shard_dir)) == {"p00/0", "p01/0"}

    # Once the teacher works again, a rerun finishes without redoing p00.
    samples[2] = make_sample(2, False)
    teacher = FakeTeacher()
    rows = distill_rewrites(samples, teacher, shard_dir, progress=False)
    assert [r["teacher_status"] for r in rows] == ["kept", "correct", "kept", "kept"]
    assert sorted(teacher.calls) == sorted([samples[2]["prediction"], samples[3]["prediction"]])


def test_teacher_failure_in_threads_still_saves_the_others(tmp_path):
    samples = [make_sample(i, False, "BOOM" if i == 3 else "") for i in range(8)]
    shard_dir = tmp_path / "shards"
    with pytest.raises(DistillError, match="'p03/0'"):
        distill_rewrites(samples, FakeTeacher(delay=0.01), shard_dir, concurrency=3)
    done = read_shards(shard_dir)
    assert "p03/0" not in done
    assert {"p00/0", "p01/0", "p02/0"} <= set(done)
    assert all(row["teacher_status"] == "kept" for row in done.values())


def test_concurrency_gives_the_same_rows_and_bounds_calls_in_flight(tmp_path):
    samples = [make_sample(i, i % 3 == 0, "ABSTAIN" if i % 5 == 1 else "") for i in range(15)]
    serial = distill_rewrites(samples, FakeTeacher(), tmp_path / "one", progress=False)
    teacher = FakeTeacher(delay=0.03)
    threaded = distill_rewrites(samples, teacher, tmp_path / "three", concurrency=3)
    assert threaded == serial
    assert 1 < teacher.max_in_flight <= 3
    assert len(shard_lines(tmp_path / "three")) == len(samples)


def test_corrupt_line_before_the_end_is_an_error(tmp_path):
    row = distill_rewrites([make_sample(0, True)], FakeTeacher(), tmp_path / "a", progress=False)
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    bad = shard_dir / "shard-x.jsonl"
    bad.write_text('{"sample_id": \n' + json.dumps(row[0]) + "\n")
    with pytest.raises(ValueError, match=r"shard-x\.jsonl, line 1: not valid JSON"):
        distill_rewrites([make_sample(0, True)], FakeTeacher(), shard_dir, progress=False)


def test_shard_row_missing_a_field_is_an_error(tmp_path):
    shard_dir = tmp_path / "shards"
    shard_dir.mkdir()
    (shard_dir / "shard-y.jsonl").write_text(json.dumps({"sample_id": "p00/0"}) + "\n")
    with pytest.raises(ValueError, match=r"shard-y\.jsonl, line 1, field 'problem_id': missing"):
        read_shards(shard_dir)


def test_stale_shards_from_other_samples_are_refused(tmp_path):
    shard_dir = tmp_path / "shards"
    distill_rewrites([make_sample(1, False)], FakeTeacher(), shard_dir, progress=False)
    changed = make_sample(1, False, "differently")
    with pytest.raises(ValueError, match=r"'p01/0' was distilled from a different prediction"):
        distill_rewrites([changed], FakeTeacher(), shard_dir, progress=False)


def test_bad_input_is_refused(tmp_path):
    sample = make_sample(0, True)
    with pytest.raises(ValueError, match="duplicate sample_id 'p00/0'"):
        distill_rewrites([sample, sample], FakeTeacher(), tmp_path, progress=False)
    broken = {k: v for k, v in sample.items() if k != "gold_answer"}
    with pytest.raises(ValueError, match="sample 1 lacks field 'gold_answer'"):
        distill_rewrites([make_sample(1, True), broken], FakeTeacher(), tmp_path, progress=False)
    with pytest.raises(ValueError, match="concurrency"):
        distill_rewrites([sample], FakeTeacher(), tmp_path, concurrency=0)


def _metric_row(
    status: str,
    prediction: str = "",
    rewrite: str = "",
    step: int = -1,
    answer_correct: bool | None = None,
) -> dict:
    correct = status == "correct"
    return {
        "teacher_status": status,
        "prediction": prediction,
        "rewrite": rewrite,
        "error_step": step,
        "correct": correct,
        "answer_correct": correct if answer_correct is None else answer_correct,
    }


def test_metrics_on_a_hand_computed_case():
    vocab: dict[str, int] = {}

    def token_ids(text: str) -> list[int]:
        return [vocab.setdefault(word, len(vocab)) for word in text.split()]

    rows = [
        _metric_row("correct", "a b", "a b"),
        _metric_row("correct", "c", "c"),
        _metric_row("kept", "a b c", "a b d", step=2),  # 1 substitution; keeps 2 of 3
        _metric_row("kept", "a b", "a x b y", step=0),  # 2 insertions; keeps 2 of 2
        _metric_row("abstained"),
        _metric_row("wrong_answer", "a", "z", step=0),
    ]
    metrics = distill_metrics(rows, token_ids)
    assert metrics["incorrect_count"] == 4
    assert metrics["kept_count"] == 2
    assert metrics["teacher_success_rate"] == pytest.approx(2 / 4)
    assert metrics["abstained_count"] == 1
    assert metrics["abstention_rate"] == pytest.approx(1 / 4)
    assert metrics["wrong_answer_count"] == 1
    # Histogram over kept only (the wrong_answer row's step 0 is not counted).
    assert (metrics["error_step_0"], metrics["error_step_1"], metrics["error_step_2"]) == (1, 0, 1)
    assert "error_step_3" not in metrics
    assert metrics["mean_edit_distance"] == pytest.approx((1 + 2) / 2)
    assert metrics["kept_token_fraction"] == pytest.approx((2 / 3 + 1) / 2)


def test_metrics_with_nothing_incorrect_are_zero():
    metrics = distill_metrics([_metric_row("correct", "a", "a")], lambda text: [1])
    assert metrics["teacher_success_rate"] == 0.0
    assert metrics["abstention_rate"] == 0.0
    assert metrics["mean_edit_distance"] == 0.0
    assert metrics["kept_token_fraction"] == 0.0
    assert not [key for key in metrics if key.startswith("error_step_")]


# --- The step checker on samples and rewrites (VerificationSection) ---

AUTO = VerificationSection()
OFF = VerificationSection(steps="off")


def verified_sample(
    prediction: str,
    correct: bool,
    *,
    question: str = HENS_Q,
    gold: str = HENS_GOLD,
    answer: str = "54",
    source: str = "synthetic",
    sample_id: str = "h/0",
) -> dict:
    return {
        "sample_id": sample_id,
        "problem_id": sample_id.split("/")[0],
        "question": question,
        "gold_solution": gold,
        "gold_answer": answer,
        "source": source,
        "prediction": prediction,
        "predicted_answer": answer if correct else "?",
        "correct": correct,
    }


class ScriptedTeacher:
    """Answers every call with the same verdict and records the predictions it saw."""

    name = "scripted"

    def __init__(self, verdict: Rewrite | None) -> None:
        self.verdict = verdict
        self.calls: list[str] = []

    def rewrite(self, question: str, gold_solution: str, prediction: str) -> Rewrite | None:
        self.calls.append(prediction)
        return self.verdict


def test_a_right_answer_with_a_false_step_is_incorrect_and_rewritten(tmp_path):
    # make_sample's synthetic problem, the right answer after a false equation.
    sample = make_sample(1, True)
    sample["prediction"] = "We add 1 and 10.\n1 + 10 = 12\nThe answer is 11"
    teacher = FakeTeacher()
    [row] = distill_rewrites([sample], teacher, tmp_path / "s", verification=AUTO)
    assert teacher.calls == [sample["prediction"]]
    assert (row["answer_correct"], row["correct"]) == (True, False)
    assert (row["teacher_status"], row["error_step"]) == ("kept", 1)
    assert row["rewrite"] == "We add 1 and 10.\n1 + 10 = 11\nThe answer is 11"
    Dataset.from_list([row], features=DISTILLED_FEATURES)


def test_a_lucky_misread_is_caught_and_repaired_by_the_arithmetic_teacher():
    row = judge_sample(verified_sample(HENS_LUCKY, True), ArithmeticTeacher(), Verifier(AUTO))
    assert (row["answer_correct"], row["correct"], row["teacher_status"]) == (True, False, "kept")
    assert (row["error_step"], row["rewrite"]) == (1, HENS_GOLD)
    # Where only equations are checked (not a synthetic problem), the same sample passes.
    row = judge_sample(
        verified_sample(HENS_LUCKY, True, source="gsm8k"), FakeTeacher(), Verifier(AUTO)
    )
    assert (row["correct"], row["teacher_status"]) == (True, "correct")


def test_a_right_solution_is_not_sent_to_the_teacher():
    teacher = ScriptedTeacher(Rewrite(0, HENS_GOLD))
    row = judge_sample(verified_sample(HENS_GOLD, True), teacher, Verifier(AUTO))
    assert (row["correct"], row["teacher_status"], row["rewrite"]) == (True, "correct", HENS_GOLD)
    assert teacher.calls == []


def test_a_rewrite_reaching_gold_through_a_failing_step_is_unverified():
    wrong = HENS_GOLD.replace("The answer is 54", "The answer is 50")
    teacher = ScriptedTeacher(Rewrite(1, HENS_LUCKY))
    row = judge_sample(verified_sample(wrong, False), teacher, Verifier(AUTO))
    assert (row["correct"], row["answer_correct"]) == (False, False)
    assert (row["teacher_status"], row["error_step"], row["rewrite"]) == (
        "unverified",
        1,
        HENS_LUCKY,
    )
    # A false equation fails the gsm8k strength too; a made-up number does not.
    false_step = HENS_GOLD.replace("60 - 10 = 50", "60 - 10 = 51")
    teacher = ScriptedTeacher(Rewrite(1, false_step))
    row = judge_sample(verified_sample(wrong, False, source="gsm8k"), teacher, Verifier(AUTO))
    assert row["teacher_status"] == "unverified"
    teacher = ScriptedTeacher(Rewrite(1, HENS_LUCKY))
    row = judge_sample(verified_sample(wrong, False, source="gsm8k"), teacher, Verifier(AUTO))
    assert row["teacher_status"] == "kept"


def test_steps_off_keeps_the_answer_only_behaviour(tmp_path):
    right_answer = verified_sample(HENS_LUCKY, True, sample_id="a/0")
    wrong = verified_sample(HENS_GOLD.replace("is 54", "is 50"), False, sample_id="b/0")
    teacher = ScriptedTeacher(Rewrite(1, HENS_LUCKY))
    rows = distill_rewrites([right_answer, wrong], teacher, tmp_path / "s", verification=OFF)
    assert teacher.calls == [wrong["prediction"]]
    assert [(r["correct"], r["answer_correct"], r["teacher_status"]) for r in rows] == [
        (True, True, "correct"),
        (False, False, "kept"),  # not checked: kept although a step fails
    ]
    # No verification section at all is the same as off.
    again = distill_rewrites([right_answer, wrong], teacher, tmp_path / "t", progress=False)
    assert again == rows


def test_teacher_judges_correct_where_no_checker_applies():
    qa_gold = "Predators hunt animals.\nBunnies are prey.\nThe answer is bunnies"
    right = verified_sample(
        "Grass is food.\nThe answer is bunnies",
        True,
        question=QA_Q,
        gold=qa_gold,
        answer="bunnies",
        source="qa",
    )
    judges = Verifier(VerificationSection(teacher_judges_correct=True))
    # The teacher names a step: the right answer was reached the wrong way.
    teacher = ScriptedTeacher(Rewrite(0, qa_gold))
    row = judge_sample(right, teacher, judges)
    assert teacher.calls == [right["prediction"]]
    assert (row["answer_correct"], row["correct"]) == (True, False)
    assert (row["teacher_status"], row["error_step"], row["rewrite"]) == ("kept", 0, qa_gold)
    # It finds nothing wrong, or cannot judge: the sample stays correct, as it is.
    for verdict in (Rewrite(-1, right["prediction"]), None):
        row = judge_sample(right, ScriptedTeacher(verdict), judges)
        assert (row["correct"], row["teacher_status"]) == (True, "correct")
        assert (row["error_step"], row["rewrite"]) == (-1, right["prediction"])
    # Without the option, a correct QA sample never reaches the teacher...
    teacher = ScriptedTeacher(Rewrite(0, qa_gold))
    assert judge_sample(right, teacher, Verifier(AUTO))["correct"] is True
    assert teacher.calls == []
    # ...and with it, a sample the checker passes does not either.
    assert judge_sample(verified_sample(HENS_GOLD, True), teacher, judges)["correct"] is True
    assert teacher.calls == []


def test_relabelled_rows_resume_and_a_changed_label_is_refused(tmp_path):
    samples = [verified_sample(HENS_LUCKY, True)]
    shard_dir = tmp_path / "s"
    rows = distill_rewrites(samples, ArithmeticTeacher(), shard_dir, verification=AUTO)
    assert rows[0]["correct"] is False
    teacher = ScriptedTeacher(None)
    assert distill_rewrites(samples, teacher, shard_dir, verification=AUTO) == rows
    assert teacher.calls == []
    relabelled = [{**samples[0], "correct": False}]
    with pytest.raises(ValueError, match=r"different answer_correct \(True != False\)"):
        distill_rewrites(relabelled, teacher, shard_dir, verification=AUTO)


def test_metrics_count_what_the_checker_caught():
    rows = [
        _metric_row("correct", "a", "a"),
        _metric_row("kept", "a b", "a c", step=1, answer_correct=True),  # rejected, rewritten
        _metric_row("abstained", "a", "", answer_correct=True),  # rejected, not rewritten
        _metric_row("unverified", "a b", "a d", step=1),
        _metric_row("kept", "b", "c", step=0),
    ]
    metrics = distill_metrics(rows, lambda text: [ord(c) for c in text])
    assert metrics["verifier_rejected_correct"] == 2
    assert metrics["unverified_count"] == 1
    assert metrics["incorrect_count"] == 4
    assert metrics["kept_count"] == 2
    assert metrics["teacher_success_rate"] == pytest.approx(2 / 4)
    # Unverified rewrites are not kept: not in the histogram nor the edit figures.
    assert (metrics["error_step_0"], metrics["error_step_1"]) == (1, 1)
    assert metrics["mean_edit_distance"] == pytest.approx(1.0)


def test_a_distill_error_survives_the_trip_back_from_a_child_process():
    # A time-limited stage's child sends its error pickled (tasks/stage_process.py).
    error = DistillError("p02/0", "chat", ConnectionError("teacher API down"), "3 done")
    again = pickle.loads(pickle.dumps(error))
    assert type(again) is DistillError and str(again) == str(error)
    assert again.sample_id == "p02/0"
