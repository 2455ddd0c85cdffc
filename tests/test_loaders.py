"""Evaluation-file loaders: normalised records and errors that point at the bad spot."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlmec_core.data.loaders import (
    DataFormatError,
    format_number,
    load_eval_file,
    load_gsm8k_jsonl,
    load_qa_jsonl,
    load_svamp_json,
    normalise_gsm8k_solution,
    normalise_qa_solution,
)
from rlmec_core.data.schema import RECORD_FEATURES

FIXTURES = Path(__file__).parent / "fixtures"
GSM8K = FIXTURES / "gsm8k_slice.jsonl"
SVAMP = FIXTURES / "svamp_slice.json"
QA = FIXTURES / "openbookqa_slice.jsonl"


# --- normalisation -------------------------------------------------------------------


def test_gsm8k_normalisation_drops_annotations_and_rewrites_final_line():
    answer = (
        "Janet sells 16 - 3 - 4 = <<16-3-4=9>>9 duck eggs a day.\n"
        "She makes 9 * 2 = $<<9*2=18>>18 every day at the farmer’s market.\n"
        "#### 18"
    )
    assert normalise_gsm8k_solution(answer) == (
        "Janet sells 16 - 3 - 4 = 9 duck eggs a day.\n"
        "She makes 9 * 2 = $18 every day at the farmer’s market.\n"
        "The answer is 18"
    )


def test_gsm8k_normalisation_drops_blank_lines_and_thousands_separators():
    answer = "He pays 2*1000=<<2*1000=2000>>2,000\n\n  Then 2,000+125=<<2000+125=2125>>2,125 \n#### 2,125\n"
    assert normalise_gsm8k_solution(answer) == (
        "He pays 2*1000=2,000\nThen 2,000+125=2,125\nThe answer is 2125"
    )


def test_gsm8k_normalisation_keeps_negative_answers():
    assert normalise_gsm8k_solution("11 - 20 = <<11-20=-9>>-9\n#### -9") == (
        "11 - 20 = -9\nThe answer is -9"
    )


@pytest.mark.parametrize("answer", ["no final line", "step\n####", "#### 3\ntrailing text", ""])
def test_gsm8k_normalisation_rejects_missing_final_answer(answer):
    with pytest.raises(ValueError, match="####"):
        normalise_gsm8k_solution(answer)


def test_format_number_writes_integral_floats_as_integers():
    assert format_number(5.0) == "5"
    assert format_number(-12.0) == "-12"
    assert format_number(2.5) == "2.5"
    assert format_number(7) == "7"


def test_qa_solution_ends_with_the_answer_field_verbatim():
    assert normalise_qa_solution("The answer is october", "October") == "The answer is October"
    assert normalise_qa_solution("Fog forms over water.\n\n", "a marsh") == (
        "Fog forms over water.\nThe answer is a marsh"
    )


# --- loading the fixture slices ------------------------------------------------------


def _slice(load, path, source: str):
    """A fixture slice as ``load`` reads it: 20 records of the shared schema from ``source``."""
    ds = load(path)
    assert ds.features == RECORD_FEATURES
    assert len(ds) == 20
    assert set(ds["source"]) == {source}
    return ds


def test_gsm8k_slice_records():
    ds = _slice(load_gsm8k_jsonl, GSM8K, "gsm8k")
    assert ds["id"][:3] == ["gsm8k-test-00000", "gsm8k-test-00001", "gsm8k-test-00002"]
    assert ds["id"][12] == "gsm8k-test-00012"
    robe = ds[1]
    assert robe["question"] == (
        "A robe takes 2 bolts of blue fiber and half that much white fiber.  "
        "How many bolts in total does it take?"
    )
    assert robe["gold_solution"] == (
        "It takes 2/2=1 bolt of white fiber\n"
        "So the total amount of fabric is 2+1=3 bolts of fabric\n"
        "The answer is 3"
    )
    assert robe["gold_answer"] == "3"
    house = ds[2]
    assert house["gold_solution"].splitlines()[0] == (
        "The cost of the house and repairs came out to 80,000+50,000=$130,000"
    )
    assert house["gold_answer"] == "70000"
    for row in ds:
        assert "<<" not in row["gold_solution"] and "####" not in row["gold_solution"]
        assert row["gold_solution"].splitlines()[-1] == f"The answer is {row['gold_answer']}"
        assert "" not in row["gold_solution"].splitlines()


def test_gsm8k_split_goes_into_the_id():
    assert load_gsm8k_jsonl(GSM8K, split="train")["id"][0] == "gsm8k-train-00000"


def test_svamp_slice_records():
    ds = _slice(load_svamp_json, SVAMP, "svamp")
    first = ds[0]
    assert first["id"] == "chal-1"
    assert first["question"] == (
        "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each "
        "pack How much do you have to pay to buy each pack?"
    )
    assert first["gold_solution"] == "( 76.0 - 25.0 ) = 51\nThe answer is 51"
    assert first["gold_answer"] == "51"
    nested = ds[10]
    assert nested["id"] == "chal-11"
    assert nested["gold_solution"] == "( 6.0 - ( 3.0 + 2.0 ) ) = 1\nThe answer is 1"


def test_qa_slice_records():
    ds = _slice(load_qa_jsonl, QA, "qa")
    first = ds[0]
    assert first["id"] == "qa-00000"
    assert first["question"].splitlines()[1:] == [
        "Options:",
        "make more phone calls",
        "quit eating lunch out",
        "buy less with monopoly money",
        "have lunch with friends",
    ]
    assert first["gold_answer"] == "quit eating lunch out"
    assert first["gold_solution"] == "The answer is quit eating lunch out"
    # The answer field is kept as given, even when its case differs from the option line.
    solstice = ds[8]
    assert "\noctober" in solstice["question"]
    assert solstice["gold_answer"] == "October"
    assert solstice["gold_solution"] == "The answer is October"


@pytest.mark.parametrize(
    ("path", "source"), [(GSM8K, "gsm8k"), (SVAMP, "svamp"), (QA, "qa")], ids=str
)
def test_load_eval_file_infers_the_format(path, source):
    ds = load_eval_file(path)
    assert set(ds["source"]) == {source}
    assert ds.to_list() == load_eval_file(path, fmt=source).to_list()


def test_load_eval_file_rejects_an_unknown_format():
    with pytest.raises(ValueError, match="unknown eval format 'math'"):
        load_eval_file(GSM8K, fmt="math")


# --- errors --------------------------------------------------------------------------


def _write_lines(tmp_path: Path, name: str, lines: list[str]) -> Path:
    path = tmp_path / name
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD_GSM8K = json.dumps({"question": "1+1?", "answer": "1+1=<<1+1=2>>2\n#### 2"})
GOOD_QA = json.dumps({"problem": "Pick\nOptions:\na\nb", "solution": "x", "answer": "a"})


def test_malformed_jsonl_line_names_file_and_line(tmp_path):
    path = _write_lines(tmp_path, "bad.jsonl", [GOOD_GSM8K, "", '{"question": "x", '])
    with pytest.raises(DataFormatError, match=r"bad\.jsonl, line 3: not valid JSON"):
        load_gsm8k_jsonl(path)


def test_missing_gsm8k_field_names_file_line_and_field(tmp_path):
    path = _write_lines(tmp_path, "g.jsonl", [GOOD_GSM8K, json.dumps({"question": "q"})])
    with pytest.raises(DataFormatError, match=r"g\.jsonl, line 2, field 'answer': missing"):
        load_gsm8k_jsonl(path)


def test_gsm8k_answer_without_final_line_names_the_field(tmp_path):
    path = _write_lines(tmp_path, "g.jsonl", [json.dumps({"question": "q", "answer": "2"})])
    with pytest.raises(DataFormatError, match=r"line 1, field 'answer': no final '####"):
        load_gsm8k_jsonl(path)


def test_wrong_field_type_is_reported(tmp_path):
    path = _write_lines(tmp_path, "g.jsonl", [json.dumps({"question": 3, "answer": "#### 2"})])
    with pytest.raises(DataFormatError, match=r"line 1, field 'question': expected str, got int"):
        load_gsm8k_jsonl(path)


def test_non_object_line_is_reported(tmp_path):
    path = _write_lines(tmp_path, "g.jsonl", ["[1, 2]"])
    with pytest.raises(DataFormatError, match=r"line 1: expected a JSON object"):
        load_gsm8k_jsonl(path)


def test_missing_svamp_field_names_file_index_and_field(tmp_path):
    items = json.loads(SVAMP.read_text())[:3]
    del items[2]["Equation"]
    path = tmp_path / "s.json"
    path.write_text(json.dumps(items), encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"s\.json, index 2, field 'Equation': missing"):
        load_svamp_json(path)


def test_svamp_answer_must_be_a_number(tmp_path):
    items = json.loads(SVAMP.read_text())[:1]
    items[0]["Answer"] = "51"
    path = tmp_path / "s.json"
    path.write_text(json.dumps(items), encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"index 0, field 'Answer': expected int or float"):
        load_svamp_json(path)


def test_svamp_file_that_is_not_a_list(tmp_path):
    path = tmp_path / "s.json"
    path.write_text('{"ID": "x"}', encoding="utf-8")
    with pytest.raises(DataFormatError, match=r"s\.json: expected a JSON list"):
        load_svamp_json(path)


def test_qa_problem_without_options_names_the_field(tmp_path):
    row = json.dumps({"problem": "Pick one", "solution": "x", "answer": "a"})
    path = _write_lines(tmp_path, "q.jsonl", [GOOD_QA, row])
    with pytest.raises(DataFormatError, match=r"q\.jsonl, line 2, field 'problem': no 'Options:'"):
        load_qa_jsonl(path)


def test_qa_empty_answer_is_reported(tmp_path):
    row = json.dumps({"problem": "Pick\nOptions:\na", "solution": "x", "answer": "  "})
    path = _write_lines(tmp_path, "q.jsonl", [row])
    with pytest.raises(DataFormatError, match=r"line 1, field 'answer': empty"):
        load_qa_jsonl(path)


def test_format_cannot_be_inferred_from_unknown_keys(tmp_path):
    path = _write_lines(tmp_path, "u.jsonl", [json.dumps({"text": "hi"})])
    with pytest.raises(DataFormatError, match=r"u\.jsonl, line 1: cannot tell the format"):
        load_eval_file(path)


def test_empty_file_gives_an_empty_dataset_with_the_schema(tmp_path):
    path = _write_lines(tmp_path, "e.jsonl", [""])
    ds = load_gsm8k_jsonl(path)
    assert len(ds) == 0
    assert ds.features == RECORD_FEATURES
