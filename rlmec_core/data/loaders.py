"""Readers for the public evaluation sets, each normalised into RECORD_FEATURES.

Every solution comes out one step per line with a last line ``The answer is <answer>``,
the shape the policy is trained to write and the teachers number steps in.

Files are UTF-8 (a byte order mark is allowed), text fields may use CRLF line ends. Gold
answers are finite numbers (GSM8K, SVAMP) or the text of one of the options (QA); a file
with no records, or with two records of one id, is refused. Every refusal is a
``DataFormatError`` naming the file and where in it.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlmec_core.config_yaml import clip
from rlmec_core.errors import InputError
from rlmec_core.teachers.base import split_steps

if TYPE_CHECKING:
    from datasets import Dataset

    from rlmec_core.config import PipelineConfig

Record = dict[str, str]  # one row of RECORD_FEATURES

ANSWER_PREFIX = "The answer is "
EVAL_FORMATS = ("gsm8k", "svamp", "qa")

_CALCULATOR = re.compile(r"<<[^<>]*>>")
_FINAL_GSM8K = re.compile(r"^####\s*(.*?)\s*$")
# Thousands separators only ("1,450,000"), not commas inside other text.
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
# A gold math answer: a plain decimal number or a fraction of two ("-3", "2.5", "3/4").
_GOLD_NUMBER = re.compile(r"[-+]?(\d+(\.\d*)?|\.\d+)(\s*/\s*\d+(\.\d*)?)?")


class DataFormatError(InputError, ValueError):
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
        self.reason = reason
        self.field = field

    def __reduce__(self):  # picklable: a stage in a child process re-raises it in the parent
        return type(self), (self.path, self.where, self.reason, self.field)


def read_text(path: str | Path) -> str:
    """A data file's text: UTF-8 (a byte order mark dropped), CRLF and CR made LF."""
    path = Path(path)
    try:
        if path.exists() and not path.is_dir() and not path.is_file():
            raise DataFormatError(path, None, "not a regular file")  # a pipe would block
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataFormatError(path, None, "file not found") from None
    except IsADirectoryError:
        raise DataFormatError(path, None, "is a folder, not a data file") from None
    except OSError as exc:
        raise DataFormatError(path, None, f"cannot read the file ({exc.strerror})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        reason = f"not UTF-8 text (byte 0x{data[exc.start]:02x}); save the file as UTF-8"
        raise DataFormatError(path, f"line {line}", reason) from None
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _parse_json(path: Path, where: str | None, text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        where = where or f"line {e.lineno}"
        raise DataFormatError(path, where, f"not valid JSON ({e.msg})") from None
    except ValueError as e:  # e.g. an integer of more digits than Python converts
        raise DataFormatError(path, where, f"not valid JSON ({clip(str(e), 120)})") from None
    except RecursionError:
        raise DataFormatError(path, where, "JSON nested too deeply") from None


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
    number = _THOUSANDS.sub("", final.group(1))
    if not _GOLD_NUMBER.fullmatch(number) or not _finite(number):
        raise ValueError(f"the final '#### <answer>' is not a number: {clip(number, 60)!r}")
    return number


def _finite(number: str) -> bool:
    """A number of _GOLD_NUMBER's shape that is finite and, as a fraction, defined."""
    parts = [float(part) for part in number.split("/")]
    return all(math.isfinite(part) for part in parts) and (len(parts) == 1 or parts[1] != 0)


def format_number(value: float | int) -> str:
    """5.0 -> "5", 2.5 -> "2.5": how SVAMP's float answers are written."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _iter_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, object) per non-blank line."""
    # split("\n"), not splitlines(): U+2028 and friends may stand raw inside JSON strings.
    for number, line in enumerate(read_text(path).split("\n"), start=1):
        if not line.strip():
            continue
        obj = _parse_json(path, f"line {number}", line)
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
    if isinstance(value, float) and not math.isfinite(value):
        raise DataFormatError(path, where, f"not a finite number ({value})", field=name)
    if isinstance(value, str):
        if not value.strip():
            raise DataFormatError(path, where, "empty", field=name)
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as e:
            reason = f"not valid text (a lone surrogate \\u{ord(value[e.start]):04x})"
            raise DataFormatError(path, where, reason, field=name) from None
        value = value.replace("\r\n", "\n").replace("\r", "\n")
    return value


def _to_dataset(rows: list[Record]) -> Dataset:
    from datasets import Dataset  # only here: checking a file needs no datasets import

    from rlmec_core.data.schema import RECORD_FEATURES

    # from_dict, not from_list: from_list drops the columns of an empty list.
    columns = {name: [row[name] for row in rows] for name in RECORD_FEATURES}
    return Dataset.from_dict(columns, features=RECORD_FEATURES)


def load_gsm8k_jsonl(path: str | Path, split: str = "test") -> Dataset:
    """GSM8K JSONL (``question``, ``answer``) -> records with ids ``gsm8k-<split>-00012``.

    The id counts records from 0 in file order, so it is stable for a given file.
    """
    return _to_dataset(gsm8k_records(path, split))


def gsm8k_records(path: str | Path, split: str = "test") -> list[Record]:
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
    return rows


def load_svamp_json(path: str | Path) -> Dataset:
    """SVAMP JSON list (``ID``, ``Body``, ``Question``, ``Equation``, ``Answer``) -> records.

    The gold solution is one step, the equation with its result, then the answer line.
    """
    return _to_dataset(svamp_records(path))


def svamp_records(path: str | Path) -> list[Record]:
    path = Path(path)
    items = _parse_json(path, None, read_text(path))
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
    return rows


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
    return _to_dataset(qa_records(path))


def qa_records(path: str | Path) -> list[Record]:
    path = Path(path)
    rows = []
    for index, (number, obj) in enumerate(_iter_jsonl(path)):
        where = f"line {number}"
        problem = _field(path, where, obj, "problem")
        solution = _field(path, where, obj, "solution")
        answer = _field(path, where, obj, "answer").strip()
        if "\nOptions:\n" not in problem:
            raise DataFormatError(path, where, "no 'Options:' line", field="problem")
        options = problem.split("\nOptions:\n", 1)[1].split("\n")
        if _option_key(answer) not in {_option_key(option) for option in options}:
            reason = f"{clip(answer, 60)!r} is not one of the options"
            raise DataFormatError(path, where, reason, field="answer")
        rows.append(
            {
                "id": f"qa-{index:05d}",
                "question": problem.strip(),
                "gold_solution": normalise_qa_solution(solution, answer),
                "gold_answer": answer,
                "source": "qa",
            }
        )
    return rows


def _option_key(text: str) -> str:
    return " ".join(text.lower().split())


def infer_eval_format(path: str | Path) -> str:
    """Format of an eval file: "svamp" for a JSON list, else "gsm8k" or "qa" by JSONL keys."""
    path = Path(path)
    if read_text(path).lstrip().startswith("["):
        return "svamp"
    for number, obj in _iter_jsonl(path):
        if {"problem", "solution", "answer"} <= obj.keys():
            return "qa"
        if {"question", "answer"} <= obj.keys():
            return "gsm8k"
        keys = clip(repr(sorted(obj)), 120)
        raise DataFormatError(
            path,
            f"line {number}",
            f"cannot tell the format from keys {keys}; set its format: one of {EVAL_FORMATS}",
        )
    raise DataFormatError(path, None, "empty file; cannot tell its format")


def load_eval_file(path: str | Path, fmt: str | None = None) -> Dataset:
    """Any supported evaluation file -> records; ``fmt`` is inferred from content if None."""
    return _to_dataset(eval_file_records(path, fmt))


def eval_file_records(path: str | Path, fmt: str | None = None) -> list[Record]:
    """``load_eval_file``'s records as dicts; a file without records, or with two records
    of one id, is a DataFormatError."""
    fmt = fmt or infer_eval_format(path)
    readers = {"gsm8k": gsm8k_records, "svamp": svamp_records, "qa": qa_records}
    if fmt not in readers:
        raise ValueError(f"unknown eval format {fmt!r}; expected one of {EVAL_FORMATS}")
    rows = readers[fmt](path)
    if not rows:
        raise DataFormatError(path, None, "no records; add some or remove the file")
    duplicated = [i for i, n in Counter(row["id"] for row in rows).items() if n > 1]
    if duplicated:
        reason = f"two records have the id {clip(duplicated[0], 60)!r}; ids must be unique"
        raise DataFormatError(path, None, reason)
    return rows


def check_data_files(config: PipelineConfig) -> None:
    """Read every data file the config names, as the data stage will, before any stage
    runs: the first that cannot be used raises its DataFormatError, naming the config
    field that names the file too."""
    data = config.data
    named = [("data.train_file", data.train_file)] if data.train_file else []
    named += [(f"data.eval_files.{i}", item) for i, item in enumerate(data.eval_files)]
    for field, item in named:
        try:
            eval_file_records(config.resolve_path(item.path), item.format)
        except DataFormatError as exc:
            reason = f"{exc.reason} (the file of {field}, {item.name!r})"
            raise DataFormatError(exc.path, exc.where, reason, exc.field) from None
