"""A corpus of malformed configs and data files, each run through the real CLI entry point
(`flows.cli.main`, in this process: every case is refused before Prefect starts, in
milliseconds).

Each case must exit 2 with exactly one line on stderr, ``rlmec: ...``, that names the file
at fault and the field or the line in it; print no traceback; and leave nothing behind:
no workspace, no artifact, no file anywhere else.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

import flows.cli
import flows.cli_commands
from rlmec_core.config import STAGES
from tests.config_fields import float_fields
from tests.pipeline_helpers import REPO

FIXTURES = REPO / "tests" / "fixtures"
MICRO = yaml.safe_load((REPO / "configs" / "micro.yaml").read_text(encoding="utf-8"))
MICRO["data"]["eval_files"][0]["path"] = str(FIXTURES / "gsm8k_slice.jsonl")


@dataclass
class Case:
    """``make(folder)`` writes the case's files and returns the config to run, the file
    the message must name and the words that must name the field or line in it."""

    name: str
    make: Callable[[Path], tuple[Path, Path, str]]


def _config(folder: Path, raw: dict | str | bytes) -> Path:
    path = folder / "config.yaml"
    if isinstance(raw, dict):
        raw = yaml.safe_dump(raw, sort_keys=False)
    if isinstance(raw, str):
        raw = raw.encode("utf-8")
    path.write_bytes(raw)
    return path


def _with(path: str, value) -> dict:
    """The micro config with the dotted ``path`` set to ``value``."""
    raw = json.loads(json.dumps(MICRO))
    node = raw
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {}) if not part.isdigit() else node[int(part)]
        if part == "teacher":
            node.update(kind="chat", base_url="http://127.0.0.1:1/v1", model="m")
    node[leaf] = value
    return raw


def config_case(name: str, raw_of: Callable[[], dict | str | bytes], words: str) -> Case:
    def make(folder: Path) -> tuple[Path, Path, str]:
        path = _config(folder, raw_of())
        return path, path, words

    return Case(name, make)


def data_case(
    name: str, content: str | bytes, words: str, fmt: str | None = "gsm8k", suffix=".jsonl"
) -> Case:
    """``content`` as the eval file (or, for names starting ``train``, the train file)."""

    def make(folder: Path) -> tuple[Path, Path, str]:
        data = folder / f"data{suffix}"
        data.write_bytes(content if isinstance(content, bytes) else content.encode("utf-8"))
        entry = {"name": "held_out", "path": str(data), **({"format": fmt} if fmt else {})}
        raw = json.loads(json.dumps(MICRO))
        if name.startswith("train"):
            raw["data"]["train_file"] = entry
        else:
            raw["data"]["eval_files"] = [entry]
        return _config(folder, raw), data, words

    return Case(name, make)


def _bomb(width: int = 9, depth: int = 8) -> str:
    lines = [f"a0: &a0 [{', '.join(['lol'] * width)}]"]
    for level in range(1, depth + 1):
        lines.append(f"a{level}: &a{level} [{', '.join([f'*a{level - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def _micro_text() -> str:
    return yaml.safe_dump(MICRO, sort_keys=False)


def _gsm(question="What is 3 + 4?", answer="3 + 4 = 7\n#### 7", **extra) -> str:
    return json.dumps({"question": question, "answer": answer, **extra})


GOOD = _gsm()


def _svamp_item(answer=2, **override) -> dict:
    item = {"ID": "c-1", "Body": "Tom has 1 apple.", "Question": "How many?"}
    item.update(Equation="( 1.0 + 1.0 )", Answer=answer)
    item.update(override)
    return item


def _svamp(*items: dict, raw_answer: str | None = None) -> str:
    text = json.dumps(list(items))
    return text.replace('"__RAW__"', raw_answer) if raw_answer is not None else text


def _qa(problem="Pick one\nOptions:\nred\nblue", solution="Red.", answer="red", **extra) -> str:
    return json.dumps({"problem": problem, "solution": solution, "answer": answer, **extra})


def cases() -> list[Case]:
    found: list[Case] = []
    add = found.append

    # -- non-finite numbers: every float field of the config ----------------------------
    for number, field in enumerate(float_fields()):
        value = (float("inf"), float("-inf"), float("nan"))[number % 3]
        if field.endswith("variant_learning_rates"):
            add(
                config_case(
                    f"nonfinite-{field}", lambda f=field, v=value: _with(f, {"rlmec": v}), field
                )
            )
        else:
            leaf = field.rsplit(".", 1)[-1]
            add(config_case(f"nonfinite-{field}", lambda f=field, v=value: _with(f, v), leaf))

    # -- unknown keys, in every section and at the top ----------------------------------
    for section in [*STAGES, "run", "tracking", "verification"]:
        add(
            config_case(
                f"unknown-{section}",
                lambda s=section: _with(f"{s}.bogus", 1),
                f"{section}.bogus: unknown key",
            )
        )
    add(config_case("unknown-top", lambda: {**MICRO, "colect": {"k": 2}}, "colect: unknown key"))
    add(
        config_case(
            "unknown-nested", lambda: _with("data.synthetic.n_trian", 5), "data.synthetic.n_trian"
        )
    )

    # -- values out of range or of the wrong type ---------------------------------------
    bad_values = [
        ("run.seed", -1), ("run.seed", 2**32), ("run.seed", 1.5), ("run.seed", "zero"),
        ("train_policy.seed", -7), ("run.name", ""), ("collect.k", 0), ("collect.k", "many"),
        ("collect.top_p", 2), ("collect.temperature", -1), ("collect.max_problems", 0),
        ("bootstrap.num_heads", 0), ("bootstrap.hidden_size", 65), ("bootstrap.vocab_size", 3),
        ("data.synthetic.n_train", 1.5), ("data.synthetic.min_steps", 9),
        ("train_grm.heldout_fraction", 1), ("train_policy.variant", "ppo"),
        ("train_policy.epsilon", 1), ("evaluate.split", "val"), ("verification.steps", "all"),
        ("collect.retries", -1), ("collect.retries", 10**6), ("collect.retry_delay_seconds", 1e300),
        ("collect.timeout_seconds", 0), ("collect.timeout_seconds", 1e300),
        ("distill.teacher.kind", "oracle"), ("distill.teacher.max_failed_fraction", 2),
        ("distill.teacher.concurrency", 0), ("tracking.experiment", ""),
        ("tracking.mlflow_tracking_uri", ""), ("tracking.mlflow_tracking_uri", "foo://bar"),
        ("tracking.mlflow_tracking_uri", "javascript://x"), ("bootstrap.learning_rate", 0),
        ("train_grm.learning_rate", -1e-3), ("train_policy.variant_learning_rates", {"ppo": 1e-3}),
        ("train_policy.variant_learning_rates", {"rlmec": 0}), ("bootstrap.lr_scheduler", "step"),
    ]  # fmt: skip
    for field, value in bad_values:
        leaf = field.rsplit(".", 1)[-1] if field.startswith("distill.teacher") else field
        # A check across a section's fields names the section, then the field.
        leaf = {"bootstrap.hidden_size": "bootstrap: hidden_size"}.get(leaf, leaf)
        leaf = {"data.synthetic.min_steps": "data.synthetic: min_steps"}.get(leaf, leaf)
        add(
            config_case(f"value-{field}={value!r}"[:80], lambda f=field, v=value: _with(f, v), leaf)
        )
    for section in ("collect", "data", "run", "tracking"):
        add(
            config_case(
                f"section-not-mapping-{section}", lambda s=section: {**MICRO, s: 5}, section
            )
        )
        add(config_case(f"section-list-{section}", lambda s=section: {**MICRO, s: [1, 2]}, section))
    add(
        config_case(
            "eval-files-mapping", lambda: _with("data.eval_files", {"a": 1}), "data.eval_files"
        )
    )
    add(config_case("eval-file-number", lambda: _with("data.eval_files", [5]), "data.eval_files.0"))
    add(
        config_case(
            "eval-file-no-path",
            lambda: _with("data.eval_files", [{"name": "g"}]),
            "data.eval_files.0.path",
        )
    )
    add(
        config_case(
            "eval-file-empty-path",
            lambda: _with("data.eval_files", [{"name": "g", "path": ""}]),
            "data.eval_files.0.path",
        )
    )
    add(
        config_case(
            "eval-file-format",
            lambda: _with("data.eval_files.0.format", "csv"),
            "data.eval_files.0.format",
        )
    )
    add(
        config_case(
            "eval-file-limit",
            lambda: _with("data.eval_files.0.limit", 0),
            "data.eval_files.0.limit",
        )
    )

    # -- names that are not names -------------------------------------------------------
    for name in ["../train", "/tmp/outside", "train", "dev", "test", "synthetic_test", "TEST",
                 "a/b", "a b", "", ".hidden", "x" * 70, "ü", "9lives", "a\\b", "~/x", "..", "a\nb"]:  # fmt: skip
        add(
            config_case(
                f"name-{name!r}"[:60],
                lambda n=name: _with("data.eval_files.0.name", n),
                "data.eval_files.0.name",
            )
        )
    add(
        config_case(
            "name-train-file",
            lambda: _with("data.train_file", {"name": "../x", "path": "p"}),
            "data.train_file.name",
        )
    )
    for first, second in [("gsm", "gsm"), ("gsm", "GSM"), ("a-b", "A-B")]:
        files = [{"name": first, "path": "x"}, {"name": second, "path": "y"}]
        add(
            config_case(
                f"names-twice-{first}-{second}",
                lambda fs=files: _with("data.eval_files", fs),
                "data.eval_files",
            )
        )

    # -- duplicate keys -----------------------------------------------------------------
    for section in ("run", "data", "bootstrap", "collect", "train_grm", "evaluate"):

        def twice(s=section) -> str:
            return _micro_text() + yaml.safe_dump({s: MICRO.get(s, {})})

        add(config_case(f"duplicate-{section}", twice, "duplicate key"))
    add(
        config_case(
            "duplicate-nested", lambda: "collect:\n  k: 2\n  k: 3\n", "line 3: duplicate key 'k'"
        )
    )
    add(
        config_case(
            "duplicate-quoted",
            lambda: "run: {seed: 1}\n'run': {seed: 2}\n",
            "line 2: duplicate key",
        )
    )

    # -- YAML that does not parse, or expands too far -----------------------------------
    broken = {
        "unclosed-list": "collect: [1, 2\n",
        "unclosed-map": "collect: {k: 2\n",
        "bad-indent": "collect:\n  k: 2\n    top_p: 0.5\n",
        "tab-indent": "collect:\n\tk: 2\n",
        "undefined-alias": "collect: *nowhere\n",
        "colons": "collect: : :\n",
        "open-quote": "run: {name: 'micro}\n",
        "two-documents": "run: {seed: 1}\n---\nrun: {seed: 2}\n",
        "bad-directive": "%YAML 9.9\n---\nrun: {}\n",
        "bell-character": 'run: {name: "a\x07b"}\n',
        "nul-character": "run:\n  name: a\x00b\n",
        "bad-tag": "run: !!python/object:os.system {}\n",
        "alias-bomb": _bomb(),
        "alias-bomb-maps": "\n".join(
            ["m0: &m0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, i: 9, j: 10}"]
            + [f"m{i}: &m{i} [{', '.join([f'*m{i - 1}'] * 10)}]" for i in range(1, 6)]
        ),
        "self-alias": "data: &d {eval_files: [*d]}\n",
    }
    for name, text in broken.items():
        add(config_case(f"yaml-{name}", lambda t=text: t, "line "))
    add(
        config_case(
            "yaml-deep", lambda: "a: " + "[" * 20_000 + "]" * 20_000 + "\n", "nested too deeply"
        )
    )
    for name, text in {"list": "- a\n- b\n", "number": "42\n", "text": "'a config'\n"}.items():
        add(config_case(f"top-level-{name}", lambda t=text: t, "top level"))

    # -- bytes that are not UTF-8 text --------------------------------------------------
    add(config_case("latin1", lambda: "run:\n  name: caf\xe9\n".encode("latin-1"), "line 2"))
    add(config_case("utf16", lambda: "run: {}\n".encode("utf-16"), "line 1"))
    add(config_case("binary", lambda: os.urandom(64) + b"\xff", "not UTF-8"))

    # -- a config that is not a file ----------------------------------------------------
    def folder_config(folder: Path):
        (folder / "cfg.d").mkdir()
        return folder / "cfg.d", folder / "cfg.d", "is a folder"

    def missing_config(folder: Path):
        return folder / "nope.yaml", folder / "nope.yaml", "not found"

    def pipe_config(folder: Path):
        os.mkfifo(folder / "pipe.yaml")
        return folder / "pipe.yaml", folder / "pipe.yaml", "not a regular file"

    def huge_config(folder: Path):
        path = _config(folder, "# " + "x" * (2 << 20) + "\n")
        return path, path, "larger than"

    add(Case("config-folder", folder_config))
    add(Case("config-missing", missing_config))
    add(Case("config-pipe", pipe_config))
    add(Case("config-huge", huge_config))

    # -- GSM8K files --------------------------------------------------------------------
    gsm_bad = {
        "no-answer": (json.dumps({"question": "q"}), ", field 'answer': missing"),
        "no-question": (json.dumps({"answer": "#### 1"}), ", field 'question': missing"),
        "nan": (_gsm(answer="x\n#### NaN"), ", field 'answer'"),
        "words": (_gsm(answer="x\n#### three bolts"), ", field 'answer'"),
        "inf": (_gsm(answer="x\n#### inf"), ", field 'answer'"),
        "minus-inf": (_gsm(answer="x\n#### -Infinity"), ", field 'answer'"),
        "divide-by-zero": (_gsm(answer="x\n#### 1/0"), ", field 'answer'"),
        "empty-final": (_gsm(answer="x\n####"), ", field 'answer'"),
        "no-final": (_gsm(answer="just steps"), ", field 'answer'"),
        "final-not-last": (_gsm(answer="#### 3\nmore"), ", field 'answer'"),
        "answer-int": (_gsm(answer=7), ", field 'answer': expected str"),
        "answer-null": (_gsm(answer=None), ", field 'answer'"),
        "answer-list": (_gsm(answer=["#### 1"]), ", field 'answer'"),
        "answer-bool": (_gsm(answer=True), ", field 'answer'"),
        "question-empty": (_gsm(question=""), ", field 'question': empty"),
        "question-blank": (_gsm(question=" \t "), ", field 'question': empty"),
        "question-nan": (_gsm().replace('"What is 3 + 4?"', "NaN"), ", field 'question'"),
        "truncated-json": ('{"question": "q", "answer": ', ": not valid JSON"),
        "trailing-comma": ('{"question": "q", "answer": "#### 1",}', ": not valid JSON"),
        "single-quotes": ("{'question': 'q', 'answer': '#### 1'}", ": not valid JSON"),
        "array-line": ("[1, 2]", ": expected a JSON object"),
        "string-line": ('"text"', ": expected a JSON object"),
        "number-line": ("42", ": expected a JSON object"),
        "surrogate-question": (_gsm(question="\ud800"), ", field 'question'"),
        "surrogate-answer": (_gsm(answer="x\n#### 1 \udfff"), ", field 'answer'"),
        "deep": ("[" * 100_000 + "]" * 100_000, ": JSON nested too deeply"),
        "huge-int": ('{"question": "q", "answer": 1' + "0" * 5000 + "}", ": not valid JSON"),
    }
    for name, (line, words) in gsm_bad.items():
        add(data_case(f"gsm8k-{name}", f"{GOOD}\n{line}\n{GOOD}\n", f"line 2{words}"))
    add(
        data_case(
            "gsm8k-latin1",
            GOOD.encode() + b"\n" + '{"question": "caf\xe9"}\n'.encode("latin-1"),
            "line 2: not UTF-8",
        )
    )
    add(data_case("gsm8k-empty", "", "no records"))
    add(data_case("gsm8k-blank", "\n \n\t\n", "no records"))
    add(data_case("gsm8k-crlf-bad", f'{GOOD}\r\n{{"question": "q"}}\r\n', "line 2, field 'answer'"))
    add(
        data_case(
            "gsm8k-bom-bad", f'\ufeff{GOOD}\n{{"answer": "#### 1"}}\n', "line 2, field 'question'"
        )
    )
    add(
        data_case(
            "train-gsm8k-nan", f"{GOOD}\n{_gsm(answer='#### nan')}\n", "line 2, field 'answer'"
        )
    )
    add(data_case("train-gsm8k-empty", "", "no records"))

    # -- SVAMP files --------------------------------------------------------------------
    raw = _svamp_item(answer="__RAW__")
    svamp_bad = {
        "nan": (_svamp(_svamp_item(), raw, raw_answer="NaN"), "index 1, field 'Answer'"),
        "infinity": (_svamp(_svamp_item(), raw, raw_answer="Infinity"), "index 1, field 'Answer'"),
        "minus-infinity": (_svamp(raw, raw_answer="-Infinity"), "index 0, field 'Answer'"),
        "1e400": (_svamp(raw, raw_answer="1e400"), "index 0, field 'Answer'"),
        "answer-text": (_svamp(_svamp_item(answer="5")), "index 0, field 'Answer': expected"),
        "answer-bool": (_svamp(_svamp_item(answer=True)), "index 0, field 'Answer'"),
        "answer-null": (_svamp(_svamp_item(answer=None)), "index 0, field 'Answer'"),
        "no-body": (
            _svamp({k: v for k, v in _svamp_item(answer=2).items() if k != "Body"}),
            "index 0, field 'Body'",
        ),
        "id-number": (_svamp(_svamp_item(answer=2, ID=5)), "index 0, field 'ID'"),
        "equation-empty": (_svamp(_svamp_item(answer=2, Equation="")), "index 0, field 'Equation'"),
        "item-list": (json.dumps([[1, 2]]), "index 0: expected a JSON object"),
        "object": (json.dumps(_svamp_item(answer=2)), "expected a JSON list"),
        "duplicate-ids": (_svamp(_svamp_item(answer=2), _svamp_item(answer=3)), "the id 'c-1'"),
        "empty-list": ("[]", "no records"),
        "broken": ('[{"ID": "a",\n "Body": }]', "line 2: not valid JSON"),
        "deep": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
        "surrogate": (_svamp(_svamp_item(answer=2, Body="\udc80")), "index 0, field 'Body'"),
    }
    for name, (text, words) in svamp_bad.items():
        add(data_case(f"svamp-{name}", text, words, fmt="svamp", suffix=".json"))
    add(
        data_case(
            "svamp-inferred-nan",
            _svamp(raw, raw_answer="NaN"),
            "index 0, field 'Answer'",
            fmt=None,
            suffix=".json",
        )
    )

    # -- QA files -----------------------------------------------------------------------
    qa_bad = {
        "no-options": (_qa(problem="Pick one: red or blue"), "field 'problem'"),
        "not-an-option": (_qa(answer="green"), "field 'answer'"),
        "empty-answer": (_qa(answer="  "), "field 'answer': empty"),
        "no-solution": (
            json.dumps({"problem": "P\nOptions:\na", "answer": "a"}),
            "field 'solution'",
        ),
        "problem-number": (_qa(problem=5), "field 'problem'"),
    }
    for name, (line, words) in qa_bad.items():
        add(data_case(f"qa-{name}", f"{_qa()}\n{line}\n", f"line 2, {words}", fmt="qa"))

    # -- the wrong format, or none that can be told -------------------------------------
    add(
        data_case(
            "format-svamp-as-gsm8k", _svamp(_svamp_item(answer=2)), "line 1: expected a JSON object"
        )
    )
    add(
        data_case(
            "format-gsm8k-as-svamp", f"{GOOD}\n{GOOD}\n", "line 2: not valid JSON", fmt="svamp"
        )
    )
    add(data_case("format-gsm8k-as-qa", f"{GOOD}\n", "line 1, field 'problem'", fmt="qa"))
    add(
        data_case(
            "format-unknown-keys",
            json.dumps({"text": "x" * 10_000}) + "\n",
            "line 1: cannot tell the format",
            fmt=None,
        )
    )
    add(data_case("format-empty-inferred", "", "cannot tell its format", fmt=None))

    # -- data paths that are not files --------------------------------------------------
    def eval_path_case(name: str, target: Callable[[Path], Path], words: str) -> Case:
        def make(folder: Path):
            path = target(folder)
            raw = _with("data.eval_files", [{"name": "held_out", "path": str(path)}])
            return _config(folder, raw), path, words

        return Case(name, make)

    add(eval_path_case("data-missing", lambda f: f / "missing.jsonl", "file not found"))
    add(eval_path_case("data-folder", lambda f: (f / "d").mkdir() or f / "d", "is a folder"))
    add(eval_path_case("data-pipe", lambda f: os.mkfifo(f / "p") or f / "p", "not a regular file"))
    return found


CASES = cases()


# The corpus's builders with nothing malformed: each must pass validation, so that every
# case above is refused for its own fault and not for one in what it was built from.
CONTROLS = [
    config_case("micro-as-text", _micro_text, ""),
    config_case("micro-as-mapping", lambda: MICRO, ""),
    data_case("gsm8k", f"{GOOD}\n{GOOD}\n", ""),
    data_case("gsm8k-inferred", f"{GOOD}\n", "", fmt=None),
    data_case("train-gsm8k", f"{GOOD}\n", ""),
    data_case("svamp", _svamp(_svamp_item()), "", fmt="svamp", suffix=".json"),
    data_case("qa", f"{_qa()}\n", "", fmt="qa"),
]


class _Validated(Exception):
    """Raised where a run would start Prefect: its inputs passed every check."""


@pytest.mark.parametrize("control", CONTROLS, ids=[control.name for control in CONTROLS])
def test_the_cases_well_formed_base_passes_validation(control, tmp_path, capsys, monkeypatch):
    reached = []

    def validated(workspace):
        reached.append(workspace)
        raise _Validated

    monkeypatch.setattr(flows.cli_commands, "configure_environment", validated)
    folder = tmp_path / "case"
    folder.mkdir()
    config, _, _ = control.make(folder)
    workspace = tmp_path / "ws"
    flows.cli.main(["run", "--config", str(config), "--workspace", str(workspace)])
    assert [str(w) for w in reached] == [str(workspace)], capsys.readouterr().err


@pytest.fixture
def no_flow(monkeypatch):
    """A case that passed validation would start Prefect: fail it instead."""

    def refuse(*args, **kwargs):
        raise AssertionError("the case passed validation")

    monkeypatch.setattr(flows.cli_commands, "configure_environment", refuse)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_malformed_input_is_refused_in_one_line(case, tmp_path, capsys, no_flow):
    folder = tmp_path / "case"
    folder.mkdir()
    config, at_fault, words = case.make(folder)
    before = sorted(p.name for p in folder.iterdir())
    repo_before = sorted(os.listdir(REPO))
    workspace = tmp_path / "ws"

    code = flows.cli.main(["run", "--config", str(config), "--workspace", str(workspace)])

    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert code == 2, err
    assert out == "" and len(lines) == 1, err
    [line] = lines
    assert line.startswith("rlmec: ") and "Traceback" not in line
    assert str(at_fault) in line, line
    assert words in line, line
    assert len(line) < 1000, len(line)
    # Nothing written: no workspace, nothing new beside the case's files or in the repo.
    assert not workspace.exists()
    assert sorted(p.name for p in folder.iterdir()) == before
    assert sorted(os.listdir(REPO)) == repo_before
