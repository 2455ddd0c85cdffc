"""Stage 2: distil minimum-edit rewrites of the incorrect samples from a teacher.

Teacher calls are slow and may cost money, so every finished sample is checkpointed at
once: one JSON line, flushed and fsynced, in an append-only shard file. Each run writes
its own new shard, so a writer killed mid-line can only leave a truncated *last* line in
its own shard; a rerun reads all shards, skips the samples they hold and continues.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

from rapidfuzz.distance import Levenshtein

from rlmec_core.answers import answers_match
from rlmec_core.config import VerificationSection
from rlmec_core.data.schema import DISTILLED_FEATURES, SAMPLE_FEATURES
from rlmec_core.durability import fsync_dir
from rlmec_core.progress import Progress
from rlmec_core.teachers.base import Teacher
from rlmec_core.verification import Verifier

logger = logging.getLogger(__name__)
SHARD_GLOB = "shard-*.jsonl"
# correct: y is right (its answer and, where checked, every step); kept: the teacher's
# rewrite reaches gold (and every step checks); abstained: the teacher could not judge;
# wrong_answer: the rewrite misses gold; unverified: it reaches gold through a failing step.
TEACHER_STATUSES = ("correct", "kept", "abstained", "wrong_answer", "unverified")


class DistillError(RuntimeError):
    """The teacher failed on one sample; the samples finished before it are in the shards."""

    def __init__(
        self, sample_id: str, teacher_name: str, cause: BaseException, note: str = ""
    ) -> None:
        super().__init__(
            f"teacher {teacher_name!r} failed on sample {sample_id!r}: "
            f"{type(cause).__name__}: {cause}" + (f" ({note})" if note else "")
        )
        self.sample_id = sample_id

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuilt from its message (a time-limited stage's child sends its error pickled).
        return (_distill_error, (str(self), self.sample_id))


def _distill_error(message: str, sample_id: str) -> DistillError:
    error = DistillError.__new__(DistillError)
    RuntimeError.__init__(error, message)
    error.sample_id = sample_id
    return error


class _Abstaining:
    """The verdict of a teacher that gave up on a sample: none."""

    name = "abstaining"

    def rewrite(self, question: str, gold_solution: str, prediction: str) -> None:
        return None


def _sample_fields(sample: Mapping[str, Any], index: int) -> dict[str, Any]:
    """The SAMPLE_FEATURES fields of one input row, in schema order."""
    missing = [name for name in SAMPLE_FEATURES if name not in sample]
    if missing:
        raise ValueError(f"sample {index} lacks field {missing[0]!r} (SAMPLE_FEATURES)")
    return {name: sample[name] for name in SAMPLE_FEATURES}


def _distilled(
    sample: dict[str, Any], correct: bool, error_step: int, rewrite: str, status: str
) -> dict:
    return {
        **sample,
        "answer_correct": sample["correct"],
        "correct": correct,
        "error_step": error_step,
        "rewrite": rewrite,
        "teacher_status": status,
    }


def judge_sample(
    sample: dict[str, Any], teacher: Teacher, verifier: Verifier | None = None
) -> dict[str, Any]:
    """One DISTILLED_FEATURES row.

    A sample with the gold answer is correct unless the verifier finds a step that fails
    (or, with ``teacher_judges_correct`` where no checker applies, the teacher names an
    error); every other sample goes to the teacher, whose rewrite is kept only if it
    reaches gold and every step checks.
    """
    verifier = verifier or Verifier(VerificationSection(steps="off"))
    checked = verifier.check(sample, sample["prediction"]) if sample["correct"] else None
    ask_teacher = not sample["correct"] or checked is False
    if sample["correct"] and checked is None and verifier.section.teacher_judges_correct:
        ask_teacher = True
    if not ask_teacher:
        return _distilled(sample, True, -1, sample["prediction"], "correct")
    verdict = teacher.rewrite(sample["question"], sample["gold_solution"], sample["prediction"])
    if sample["correct"] and checked is None and (verdict is None or verdict.error_step < 0):
        # The teacher judged a right answer and found nothing wrong (or could not judge).
        return _distilled(sample, True, -1, sample["prediction"], "correct")
    if verdict is None:
        return _distilled(sample, False, -1, "", "abstained")
    # A "no error" verdict on a sample known to be wrong names no step to keep up to, so
    # there is nothing to learn an error step from: treat it as abstaining.
    if verdict.error_step < 0:
        return _distilled(sample, False, -1, verdict.text, "abstained")
    if not answers_match(verdict.text, sample["gold_answer"]):
        status = "wrong_answer"
    elif verifier.check(sample, verdict.text) is False:
        status = "unverified"
    else:
        status = "kept"
    return _distilled(sample, False, verdict.error_step, verdict.text, status)


def read_shards(shard_dir: Path) -> dict[str, dict[str, Any]]:
    """Finished rows by sample_id from every shard in ``shard_dir``.

    A line that does not parse is dropped only when it is the last line of its shard
    (a writer killed mid-write); anywhere else it means corruption and raises.
    """
    done: dict[str, dict[str, Any]] = {}
    for shard in sorted(shard_dir.glob(SHARD_GLOB)):
        lines = shard.read_text(encoding="utf-8").splitlines()
        while lines and not lines[-1].strip():
            lines.pop()
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                if number == len(lines):
                    break  # truncated by a kill; that sample is simply redone
                raise ValueError(f"{shard}, line {number}: not valid JSON ({e.msg})") from e
            if not isinstance(row, dict):
                raise ValueError(f"{shard}, line {number}: expected a JSON object")
            missing = [name for name in DISTILLED_FEATURES if name not in row]
            if missing:
                raise ValueError(f"{shard}, line {number}, field {missing[0]!r}: missing")
            if row["teacher_status"] not in TEACHER_STATUSES:
                raise ValueError(
                    f"{shard}, line {number}, field 'teacher_status': "
                    f"unknown {row['teacher_status']!r}"
                )
            done.setdefault(row["sample_id"], {name: row[name] for name in DISTILLED_FEATURES})
    return done


class _ShardWriter:
    """Appends rows to a fresh shard, one durable line each, safe across threads."""

    def __init__(self, shard_dir: Path) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S")
        self.path = shard_dir / f"shard-{stamp}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        self._lock = threading.Lock()
        self._file = None

    def write(self, row: dict[str, Any]) -> None:
        line = json.dumps(row, ensure_ascii=False) + "\n"
        with self._lock:
            if self._file is None:
                # Created on first write, so a run with nothing to do leaves no empty shard.
                self._file = self.path.open("x", encoding="utf-8")
                fsync_dir(self.path.parent)
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()


def _check_resumed(row: dict[str, Any], sample: dict[str, Any], shard_dir: Path) -> None:
    """A shard row must come from this very sample, not from an earlier collection."""
    for name, field in (("prediction",) * 2, ("gold_answer",) * 2, ("answer_correct", "correct")):
        if row[name] != sample[field]:
            raise ValueError(
                f"{shard_dir}: sample {sample['sample_id']!r} was distilled from a different "
                f"{name} ({row[name]!r} != {sample[field]!r}); use a fresh shard directory"
            )


def distill_rewrites(
    samples: Iterable[Mapping[str, Any]],
    teacher: Teacher,
    shard_dir: Path,
    *,
    concurrency: int = 1,
    verification: VerificationSection | None = None,
    progress: bool = True,
    max_failed_fraction: float = 0.0,
) -> list[dict[str, Any]]:
    """DISTILLED_FEATURES rows for ``samples`` (SAMPLE_FEATURES rows), in input order.

    Samples already in ``shard_dir`` are not redone (the shard directory belongs to one
    configuration: the stage keys it by its cache key). Correct samples reach the teacher
    only when the step checker rejects them (see ``judge_sample``). At most
    ``concurrency`` teacher calls run at once. If the teacher raises, the calls in flight
    finish and are saved, then DistillError names the failed sample. Errors of the types
    in the teacher's ``sample_errors`` (a chat teacher that exhausted its retries) only
    make that sample abstain, unsaved so a rerun asks again, until more than
    ``max_failed_fraction`` of the samples to do failed.
    """
    verifier = Verifier(verification or VerificationSection(steps="off"))
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    rows = _sample_rows(samples)
    shard_dir = Path(shard_dir)
    shard_dir.mkdir(parents=True, exist_ok=True)
    results = _resumed_results(shard_dir, rows)
    todo = [row for row in rows if row["sample_id"] not in results]

    writer = _ShardWriter(shard_dir)
    bar = Progress(len(todo), f"distil ({teacher.name})", enabled=progress)
    finish = _sample_finisher(
        teacher, verifier, writer, bar, results, len(todo), max_failed_fraction
    )
    try:
        if concurrency == 1:
            for sample in todo:
                finish(sample)
        else:
            _run_pool(finish, todo, concurrency)
    finally:
        writer.close()
        bar.close()
    return [results[row["sample_id"]] for row in rows]


def _sample_rows(samples: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The SAMPLE_FEATURES fields of every sample, each sample_id at most once."""
    rows = [_sample_fields(sample, i) for i, sample in enumerate(samples)]
    ids = Counter(row["sample_id"] for row in rows)
    duplicated = [sample_id for sample_id, n in ids.items() if n > 1]
    if duplicated:
        raise ValueError(f"duplicate sample_id {duplicated[0]!r} in the samples")
    return rows


def _resumed_results(shard_dir: Path, rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The rows already in ``shard_dir``'s shards, each checked against its sample."""
    results = read_shards(shard_dir)
    for row in rows:
        if row["sample_id"] in results:
            _check_resumed(results[row["sample_id"]], row, shard_dir)
    return results


def _sample_finisher(
    teacher: Teacher,
    verifier: Verifier,
    writer: _ShardWriter,
    bar: Progress,
    results: dict[str, dict[str, Any]],
    n_todo: int,
    max_failed_fraction: float,
) -> Callable[[dict[str, Any]], None]:
    """``finish(sample)``: judge one sample, save its row to ``writer`` and ``results``, count
    it on ``bar``; safe across threads. An error of the teacher's ``sample_errors`` makes the
    sample abstain, unsaved, until more than ``max_failed_fraction`` of the ``n_todo``
    samples failed; then, and on any other error, DistillError."""
    lock = threading.Lock()
    tolerated: tuple[type[BaseException], ...] = getattr(teacher, "sample_errors", ())
    failed: list[str] = []
    allowed = int(max_failed_fraction * n_todo)

    def finish(sample: dict[str, Any]) -> None:
        try:
            row = judge_sample(sample, teacher, verifier)
        except tolerated as e:
            row = judge_sample(sample, _Abstaining(), verifier)
            with lock:
                failed.append(sample["sample_id"])
                count = len(failed)
            if count > allowed:
                note = (
                    f"{count} of {n_todo} samples failed, more than "
                    f"max_failed_fraction {max_failed_fraction:g}"
                )
                raise DistillError(sample["sample_id"], teacher.name, e, note) from e
            logger.warning(
                "teacher %s gave up on sample %s (%s); it abstains (%d of %d allowed)",
                teacher.name,
                sample["sample_id"],
                e,
                count,
                allowed,
            )
        except Exception as e:
            raise DistillError(sample["sample_id"], teacher.name, e) from e
        else:
            writer.write(row)
        with lock:
            results[sample["sample_id"]] = row
            bar.update(1)

    return finish


def _run_pool(
    finish: Callable[[dict[str, Any]], None], todo: list[dict[str, Any]], concurrency: int
) -> None:
    """``finish`` over ``todo`` in threads; on the first failure, start nothing new."""
    pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="distil")
    futures: list[Future[None]] = [pool.submit(finish, sample) for sample in todo]
    wait(futures, return_when=FIRST_EXCEPTION)
    # Not yet started calls are dropped; those in flight run to the end and are saved.
    pool.shutdown(wait=True, cancel_futures=True)
    for future in futures:
        if not future.cancelled() and future.exception() is not None:
            raise future.exception()  # the earliest failed sample in input order


def distill_metrics(
    rows: Iterable[Mapping[str, Any]], token_ids: Callable[[str], list[int]]
) -> dict[str, float]:
    """Teacher quality over distilled rows (DISTILLED_FEATURES).

    Rates are over the incorrect samples (every status but correct). What the step checker
    caught: ``verifier_rejected_correct`` (samples with the gold answer whose steps fail,
    sent to the teacher) and ``unverified_count`` (teacher rewrites that reach gold through
    a failing step, dropped). Over the kept rewrites: a flat histogram ``error_step_<k>``,
    the mean token edit distance between ``y`` and ``ŷ``, and the mean fraction of ``y``'s
    tokens the rewrite keeps verbatim (matched as equal by the minimum-edit alignment).
    """
    rows = list(rows)
    status = Counter(row["teacher_status"] for row in rows)
    incorrect = len(rows) - status["correct"]
    metrics: dict[str, float] = {
        "samples": float(len(rows)),
        "correct_count": float(status["correct"]),
        "incorrect_count": float(incorrect),
        **{f"{name}_count": float(status[name]) for name in TEACHER_STATUSES[1:]},
        "teacher_success_rate": status["kept"] / incorrect if incorrect else 0.0,
        "abstention_rate": status["abstained"] / incorrect if incorrect else 0.0,
        "verifier_rejected_correct": float(
            sum(bool(r["answer_correct"]) and not r["correct"] for r in rows)
        ),
    }
    kept = [row for row in rows if row["teacher_status"] == "kept"]
    steps = Counter(int(row["error_step"]) for row in kept)
    for step in range(max(steps, default=-1) + 1):
        metrics[f"error_step_{step}"] = float(steps[step])

    distances, fractions = [], []
    for row in kept:
        y, y_hat = list(token_ids(row["prediction"])), list(token_ids(row["rewrite"]))
        distances.append(Levenshtein.distance(y, y_hat))
        if y:
            equal = sum(
                op.src_end - op.src_start
                for op in Levenshtein.opcodes(y, y_hat)
                if op.tag == "equal"
            )
            fractions.append(equal / len(y))
    metrics["mean_edit_distance"] = sum(distances) / len(distances) if distances else 0.0
    metrics["kept_token_fraction"] = sum(fractions) / len(fractions) if fractions else 0.0
    return metrics
