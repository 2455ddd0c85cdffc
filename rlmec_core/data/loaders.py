"""Readers for the public evaluation sets, each normalised into RECORD_FEATURES.

Every solution comes out one step per line with a last line ``The answer is <answer>``,
the shape the policy is trained to write and the teachers number steps in.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from datasets import Dataset

from rlmec_core.data.schema import RECORD_FEATURES
from rlmec_core.teachers.base import split_steps

ANSWER_PREFIX = "The answer is "
EVAL_FORMATS = ("gsm8k", "svamp", "qa")

_CALCULATOR = re.compile(r"<<[^<>]*>>")
_FINAL_GSM8K = re.compile(r"^####\s*(.*?)\s*$")
# Thousands separators only ("1,450,000"), not commas inside other text.
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")


class DataFormatError(ValueError):
    """A data file that does not have the shape its loader expects.

    The message names the file, where in it (``line N`` for JSONL, ``index N`` for a
    JSON list) and, when one is to blame, the field.
    """

    def __init__(
        self, path: str | Path, where: str | None, reason: str, field: str | None = None
    ) -> None:
        parts = [str(path)]
        if where:
            parts.append(where)
        if field:
            parts.append(f"field {field!r}")
        super().__init__(", ".join(parts) + f": {reason}")
        self.path = str(path)
        self.where = where
        self.field = field


def normalise_gsm8k_solution(answer: str) -> str:
    """GSM8K ``answer`` -> our solution shape.

    Drops ``<<expr=result>>`` annotations and blank lines, and turns the final
    ``#### N`` into ``The answer is N`` (thousands separators removed from N, so the
    bare answer is a plain number). Raises ValueError when there is no ``#### N`` line.
    """
    lines = [" ".join(_CALCULATOR.sub("", line).split()) for line in split_steps(answer)]
    lines = [line for line in lines if line]
    final = _FINAL_GSM8K.match(lines[-1]) if lines else None
    if final is None or not final.group(1):
        raise ValueError("no final '#### <answer>' line")
    return "\n".join([*lines[:-1], ANSWER_PREFIX + gsm8k_final_answer(answer)])


def gsm8k_final_answer(answer: str) -> str:
    """The bare answer N of a GSM8K ``answer`` ending in ``#### N``."""
    last = answer.strip().splitlines()[-1] if answer.strip() else ""
    final = _FINAL_GSM8K.match(last.strip())
    if final is None or not final.group(1):
        raise ValueError("no final '#### <answer>' line")
    return _THOUSANDS.sub("", final.group(1))


def format_number(value: float | int) -> str:
    """5.0 -> "5", 2.5 -> "2.5": how SVAMP's float answers are written."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) per non-blank line."""
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataFormatError(path, f"line {number}", f"not valid JSON ({e.msg})") from e
            if not isinstance(obj, dict):
                raise DataFormatError(path, f"line {number}", "expected a JSON object")
            yield number, obj


def _field(
    path: Path, where: str, obj: dict[str, Any], name: str, kinds: tuple[type, ...] = (str,)
) -> Any:
    """``obj[name]``, checked present, of one of ``kinds`` and, for text, non-empty."""
    if name not in obj:
        raise DataFormatError(path, where, "missing", field=name)
    value = obj[name]
    # bool is an int subclass; a true/false answer is never what these files mean.
    if isinstance(value, bool) or not isinstance(value, kinds):
        names = " or ".join(k.__name__ for k in kinds)
        raise DataFormatError(
            path, where, f"expected {names}, got {type(value).__name__}", field=name
        )
    if isinstance(value, str) and not value.strip():
        raise DataFormatError(path, where, "empty", field=name)
    return value


def _to_dataset(rows: list[dict[str, str]]) -> Dataset:
    # from_dict, not from_list: from_list drops the columns of an empty list.
    columns = {name: [row[name] for row in rows] for name in RECORD_FEATURES}
    return Dataset.from_dict(columns, features=RECORD_FEATURES)


def load_gsm8k_jsonl(path: str | Path, split: str = "test") -> Dataset:
    """GSM8K JSONL (``question``, ``answer``) -> records with ids ``gsm8k-<split>-00012``.

    The id counts records from 0 in file order, so it is stable for a given file.
    """
    path = Path(path)
    rows = []
    for index, (number, obj) in enumerate(_iter_jsonl(path)):
        where = f"line {number}"
        question = _field(path, where, obj, "question")
        answer = _field(path, where, obj, "answer")
        try:
            solution = normalise_gsm8k_solution(answer)
        except ValueError as e:
            raise DataFormatError(path, where, str(e), field="answer") from e
        rows.append(
            {
                "id": f"gsm8k-{split}-{index:05d}",
                "question": question.strip(),
                "gold_solution": solution,
                "gold_answer": gsm8k_final_answer(answer),
                "source": "gsm8k",
            }
        )
    return _to_dataset(rows)


def load_svamp_json(path: str | Path) -> Dataset:
    """SVAMP JSON list (``ID``, ``Body``, ``Question``, ``Equation``, ``Answer``) -> records.

    The gold solution is one step, the equation with its result, then the answer line.
    """
    path = Path(path)
    try:
        items = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataFormatError(path, f"line {e.lineno}", f"not valid JSON ({e.msg})") from e
    if not isinstance(items, list):
        raise DataFormatError(path, None, "expected a JSON list of problems")
    rows = []
    for index, item in enumerate(items):
        where = f"index {index}"
        if not isinstance(item, dict):
            raise DataFormatError(path, where, "expected a JSON object")
        sample_id = _field(path, where, item, "ID")
        body = _field(path, where, item, "Body")
        question = _field(path, where, item, "Question")
        equation = _field(path, where, item, "Equation")
        answer = format_number(_field(path, where, item, "Answer", (int, float)))
        rows.append(
            {
                "id": sample_id.strip(),
                "question": f"{body.strip()} {question.strip()}",
                "gold_solution": f"{' '.join(equation.split())} = {answer}\n{ANSWER_PREFIX}{answer}",
                "gold_answer": answer,
                "source": "svamp",
            }
        )
    return _to_dataset(rows)


def normalise_qa_solution(solution: str, answer: str) -> str:
    """Steps of a QA solution, with its last line made ``The answer is <answer>``.

    A last line that already states an answer is replaced, so the solution always ends
    with the file's ``answer`` field verbatim.
    """
    steps = [step.strip() for step in split_steps(solution)]
    if steps and steps[-1].startswith(ANSWER_PREFIX.strip()):
        steps = steps[:-1]
    return "\n".join([*steps, ANSWER_PREFIX + answer])


def load_qa_jsonl(path: str | Path) -> Dataset:
    """QA JSONL (``problem`` with an ``Options:`` block, ``solution``, ``answer``) -> records.

    The question keeps its options; the gold answer is the file's ``answer`` text as given
    (its case may differ from the option line). Ids ``qa-00012`` count records from 0.
    """
    path = Path(path)
    rows = []
    for index, (number, obj) in enumerate(_iter_jsonl(path)):
        where = f"line {number}"
        problem = _field(path, where, obj, "problem")
        solution = _field(path, where, obj, "solution")
        answer = _field(path, where, obj, "answer").strip()
        if "\nOptions:\n" not in problem:
            raise DataFormatError(path, where, "no 'Options:' line", field="problem")
        rows.append(
            {
                "id": f"qa-{index:05d}",
                "question": problem.strip(),
                "gold_solution": normalise_qa_solution(solution, answer),
                "gold_answer": answer,
                "source": "qa",
            }
        )
    return _to_dataset(rows)


def infer_eval_format(path: str | Path) -> str:
    """Format of an eval file: "svamp" for a JSON list, else "gsm8k" or "qa" by JSONL keys."""
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        head = f.read(4096).lstrip()
    if head.startswith("["):
        return "svamp"
    for number, obj in _iter_jsonl(path):
        if {"problem", "solution", "answer"} <= obj.keys():
            return "qa"
        if {"question", "answer"} <= obj.keys():
            return "gsm8k"
        raise DataFormatError(
            path,
            f"line {number}",
            f"cannot tell the format from keys {sorted(obj)}; pass fmt= one of {EVAL_FORMATS}",
        )
    raise DataFormatError(path, None, "empty file; cannot tell its format")


def load_eval_file(path: str | Path, fmt: str | None = None) -> Dataset:
    """Any supported evaluation file -> records; ``fmt`` is inferred from content if None."""
    fmt = fmt or infer_eval_format(path)
    if fmt == "gsm8k":
        return load_gsm8k_jsonl(path)
    if fmt == "svamp":
        return load_svamp_json(path)
    if fmt == "qa":
        return load_qa_jsonl(path)
    raise ValueError(f"unknown eval format {fmt!r}; expected one of {EVAL_FORMATS}")
