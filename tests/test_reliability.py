"""Issue 12, the parts that need no flow: config and data refused up front by field or
line, BOM and CRLF accepted, bounded messages, locks that die with their holder, the last
line of each kind of failure, run records and manifests that cannot be read, file modes,
a chat teacher's failed samples, and training that diverges."""

from __future__ import annotations

import errno
import json
import os
import socket
import sqlite3
import stat
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from flows.cli import failure_line
from flows.cli import main as rlmec
from rlmec_core.config import ConfigError, PipelineConfig, load_config
from rlmec_core.config_yaml import MAX_NODES
from rlmec_core.data.loaders import DataFormatError, eval_file_records, load_eval_file
from rlmec_core.distill import DistillError, distill_rewrites, read_shards
from storage.atomic import write_json_atomic
from storage.manifest import Provenance
from storage.run_records import close_interrupted_runs, load_run_records
from storage.store import ArtifactStore
from tasks.locks import StageLockManager
from tasks.stage import StageError
from tests.config_fields import float_fields
from tests.pipeline_helpers import REPO
from tests.test_distill import FakeTeacher, make_sample
from tests.tiny_models import tiny_llama

FIXTURES = REPO / "tests" / "fixtures"


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


# --- config ----------------------------------------------------------------------------


def config_with(path: str, value) -> dict:
    raw: dict = {}
    node = raw
    *parents, leaf = path.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if part == "teacher":
            node.update(kind="chat", base_url="http://127.0.0.1:1/v1", model="m")
    node[leaf] = {"rlmec": value} if leaf == "variant_learning_rates" else value
    return raw


@pytest.mark.parametrize("field", float_fields())
@pytest.mark.parametrize("value", [".inf", "-.inf", ".nan"])
def test_no_float_field_takes_a_non_finite_number(tmp_path, field, value):
    import yaml

    text = yaml.safe_dump(config_with(field, 0.5)).replace("0.5", value)
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path / "c.yaml", text))
    leaf = field.rsplit(".", 1)[-1]
    assert "finite number" in str(err.value) and f"{leaf}" in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("seed", [-1, 2**32, 1.5, "x"])
def test_seeds_are_bounded(tmp_path, seed):
    for section in ("run", "train_policy"):
        path = write(tmp_path / "c.yaml", json.dumps({section: {"seed": seed}}))
        with pytest.raises(ConfigError, match=rf"{section}\.seed:"):
            load_config(path)


def test_a_duplicated_key_is_an_error_naming_its_line(tmp_path):
    path = write(tmp_path / "c.yaml", "collect:\n  k: 2\nrun: {seed: 1}\ncollect:\n  k: 3\n")
    with pytest.raises(ConfigError, match=r"c\.yaml, line 4: duplicate key 'collect' \(first"):
        load_config(path)
    nested = write(tmp_path / "n.yaml", "collect:\n  k: 2\n  k: 3\n")
    with pytest.raises(ConfigError, match=r"line 3: duplicate key 'k'"):
        load_config(nested)


def test_merge_keys_may_still_be_overridden(tmp_path):
    text = "x-base: &b {k: 4, temperature: 0.5}\ncollect:\n  <<: *b\n  k: 3\n"
    raw = write(tmp_path / "c.yaml", text)
    with pytest.raises(ConfigError, match="x-base: unknown key"):  # the anchor's own key
        load_config(raw)
    from rlmec_core.config_yaml import load_yaml

    assert load_yaml(text)["collect"] == {"k": 3, "temperature": 0.5}


def test_an_alias_bomb_is_refused_with_a_short_message(tmp_path):
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{','.join(['*' + prev] * 9)}]")
    path = write(tmp_path / "bomb.yaml", "\n".join(lines) + "\n")
    assert path.stat().st_size < 400
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"more than {MAX_NODES}" in str(err.value) and len(str(err.value)) < 300


def test_bom_and_crlf_configs_load(tmp_path):
    text = (REPO / "configs" / "micro.yaml").read_text(encoding="utf-8")
    text = text.replace("../tests/fixtures/", f"{FIXTURES}/")
    path = write(tmp_path / "c.yaml", "\ufeff" + text.replace("\n", "\r\n"))
    assert load_config(path).run.name == "micro"


@pytest.mark.parametrize(
    "name", ["../train", "/tmp/x", "train", "dev", "test", "Synthetic_Test", "a b", "", "9a"]
)
def test_eval_set_names_are_plain_identifiers_and_not_splits(tmp_path, name):
    path = write(
        tmp_path / "c.yaml", json.dumps({"data": {"eval_files": [{"name": name, "path": "x"}]}})
    )
    with pytest.raises(ConfigError, match=r"data\.eval_files\.0\.name:"):
        load_config(path)


def test_eval_set_names_are_unique(tmp_path):
    files = [{"name": "gsm", "path": "a"}, {"name": "GSM", "path": "b"}]
    path = write(tmp_path / "c.yaml", json.dumps({"data": {"eval_files": files}}))
    with pytest.raises(ConfigError, match=r"data\.eval_files: items 0 and 1 are both named"):
        load_config(path)


def test_config_errors_quote_little_of_the_input(tmp_path):
    path = write(tmp_path / "c.yaml", json.dumps({"run": {"seed": "x" * 100_000}}))
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert len(str(err.value)) < 400
    many = write(tmp_path / "m.yaml", "".join(f"key{i}: 1\n" for i in range(1000)))
    with pytest.raises(ConfigError, match="and 995 more") as err:
        load_config(many)
    assert len(str(err.value)) < 400


# --- data files ------------------------------------------------------------------------


def gsm8k_line(answer: str = "3 + 4 = 7\n#### 7", question: str = "What is 3 + 4?") -> str:
    return json.dumps({"question": question, "answer": answer})


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("x\n#### NaN", "not a number: 'NaN'"),
        ("x\n#### three bolts", "not a number: 'three bolts'"),
        ("x\n#### inf", "not a number"),
        ("x\n#### 1/0", "not a number"),
    ],
)
def test_gsm8k_gold_answers_are_finite_numbers(tmp_path, answer, reason):
    path = write(tmp_path / "g.jsonl", gsm8k_line() + "\n" + gsm8k_line(answer) + "\n")
    with pytest.raises(DataFormatError, match=rf"line 2, field 'answer': .*{reason}"):
        load_eval_file(path, "gsm8k")


@pytest.mark.parametrize("value", ["NaN", "Infinity", "-Infinity", "1e400"])
def test_svamp_answers_are_finite_numbers(tmp_path, value):
    item = '{"ID": "a", "Body": "b", "Question": "q", "Equation": "1 + 1", "Answer": %s}'
    path = write(tmp_path / "s.json", f"[{item % 2}, {item.replace('a', 'c', 1) % value}]")
    with pytest.raises(DataFormatError, match=r"index 1, field 'Answer': not a finite number"):
        load_eval_file(path, "svamp")


def test_qa_answer_must_be_one_of_the_options(tmp_path):
    row = {"problem": "Pick\nOptions:\nred\nblue", "solution": "s", "answer": "green"}
    path = write(tmp_path / "q.jsonl", json.dumps(row) + "\n")
    with pytest.raises(DataFormatError, match=r"line 1, field 'answer': 'green' is not one"):
        load_eval_file(path, "qa")


def test_empty_files_and_duplicate_ids_are_refused(tmp_path):
    with pytest.raises(DataFormatError, match=r"e\.jsonl: no records"):
        load_eval_file(write(tmp_path / "e.jsonl", "\n\n"), "gsm8k")
    with pytest.raises(DataFormatError, match=r"e\.json: no records"):
        load_eval_file(write(tmp_path / "e.json", "[]"), "svamp")
    item = '{"ID": "same", "Body": "b", "Question": "q", "Equation": "1 + 1", "Answer": 2}'
    with pytest.raises(DataFormatError, match=r"d\.json: two records have the id 'same'"):
        load_eval_file(write(tmp_path / "d.json", f"[{item}, {item}]"), "svamp")


def test_bom_and_crlf_data_files_load_like_the_originals(tmp_path):
    for name, fmt in [
        ("gsm8k_slice.jsonl", "gsm8k"),
        ("svamp_slice.json", "svamp"),
        ("openbookqa_slice.jsonl", "qa"),
    ]:
        original = (FIXTURES / name).read_text(encoding="utf-8")
        crlf = write(tmp_path / name, "\ufeff" + original.replace("\n", "\r\n"))
        assert eval_file_records(crlf) == eval_file_records(FIXTURES / name), name
        assert eval_file_records(crlf, fmt) == eval_file_records(FIXTURES / name, fmt), name


def test_a_qa_problem_with_crlf_inside_its_text_loads(tmp_path):
    row = {"problem": "Pick\r\nOptions:\r\nred\r\nblue", "solution": "s\r\nt", "answer": "red"}
    [record] = eval_file_records(write(tmp_path / "q.jsonl", json.dumps(row) + "\n"), "qa")
    assert record["question"] == "Pick\nOptions:\nred\nblue"
    assert "\r" not in record["gold_solution"]


@pytest.mark.parametrize(
    ("content", "where", "reason"),
    [
        (b'{"question": "q", "answer": "x\\n#### 1"}\n\xff\xfe\n', "line 2", "not UTF-8"),
        ('{"question": "\\ud800", "answer": "#### 1"}\n', "line 1, field 'question'", "surrogate"),
        ("[" * 100_000 + "]" * 100_000 + "\n", "line 1", "nested too deeply"),
        ('{"question": "q", "answer": 1' + "0" * 5000 + "}\n", "line 1", "not valid JSON"),
    ],
)
def test_unusable_bytes_are_refused_by_line(tmp_path, content, where, reason):
    path = write(tmp_path / "bad.jsonl", content)
    with pytest.raises(DataFormatError, match=rf"bad\.jsonl, {where}: .*{reason}"):
        load_eval_file(path, "gsm8k")


def test_a_missing_file_or_a_folder_is_named(tmp_path):
    with pytest.raises(DataFormatError, match=r"nope\.jsonl: file not found"):
        load_eval_file(tmp_path / "nope.jsonl", "gsm8k")
    with pytest.raises(DataFormatError, match=r": is a folder"):
        load_eval_file(tmp_path, "gsm8k")


# --- locks -----------------------------------------------------------------------------


def test_stage_locks_exclude_other_holders_and_die_with_their_process(tmp_path):
    manager = StageLockManager(tmp_path)
    assert manager.acquire_lock("k", "me")
    assert manager.is_locked("k") and manager.is_lock_holder("k", "me")
    assert not manager.acquire_lock("k", "other", acquire_timeout=0.3)  # same process
    manager.release_lock("k", "me")
    assert not manager.is_locked("k")

    # A process killed while holding a lock leaves the file but not the lock.
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from pathlib import Path
                from tasks.locks import StageLockManager
                StageLockManager(Path({str(tmp_path)!r})).acquire_lock("k", "them")
                print("held", flush=True)
                time.sleep(60)
                """
            ),
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        assert manager.is_locked("k")
        assert not manager.acquire_lock("k", "me", acquire_timeout=0.3)
    finally:
        holder.kill()
        holder.wait()
    assert (tmp_path / "k.lock").exists() and not manager.is_locked("k")
    assert manager.acquire_lock("k", "me", acquire_timeout=5)
    manager.release_lock("k", "me")


def test_a_waiting_holder_gets_the_lock_when_it_is_released(tmp_path):
    manager = StageLockManager(tmp_path)
    manager.acquire_lock("k", "first")
    got = []
    waiter = threading.Thread(target=lambda: got.append(manager.acquire_lock("k", "second")))
    waiter.start()
    time.sleep(0.5)
    assert got == []
    manager.release_lock("k", "first")
    waiter.join(timeout=10)
    assert got == [True] and manager.is_lock_holder("k", "second")
    manager.release_lock("k", "second")


def test_a_thread_waits_for_a_lock_another_holder_took_in_it(tmp_path):
    # Prefect's async path takes locks in anyio's reused worker threads, and releases them
    # from the event loop: the wait must not be refused as a deadlock.
    manager = StageLockManager(tmp_path)
    manager.acquire_lock("k", "first")
    releaser = threading.Timer(0.5, manager.release_lock, ("k", "first"))
    releaser.start()
    assert manager.acquire_lock("k", "second")
    releaser.join()
    assert manager.is_lock_holder("k", "second")
    manager.release_lock("k", "second")


# --- the last line of a failure --------------------------------------------------------


def test_failure_lines_say_what_failed_and_what_to_do(tmp_path):
    ws = str(tmp_path)

    def line(exc, started=True):
        text, code = failure_line(exc, ws, started)
        assert "\n" not in text and text.startswith("rlmec: ")
        return text, code

    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "m.bin"))
    stage = StageError("stage 'collect' failed: x", "collect", full, tmp_path / "scratch")
    text, code = line(stage)
    assert "stage 'collect' failed: no space left on device writing" in text and code == 1
    assert "free some space" in text and "rlmec runs" in text

    read_only = sqlite3.OperationalError("attempt to write a readonly database")
    text, _ = line(RuntimeError("MLflow failed").with_traceback(None))
    wrapped = RuntimeError("tracking failed")
    wrapped.__cause__ = read_only
    text, _ = line(wrapped)
    assert "make the workspace writable" in text

    fmt = DataFormatError(tmp_path / "d.jsonl", "line 3", "missing", field="answer")
    text, code = line(StageError("x", "data", fmt, tmp_path), started=True)
    assert "d.jsonl, line 3, field 'answer': missing; fix it" in text
    assert "resume" not in text  # a format error never claims it will resume

    text, code = line(KeyboardInterrupt())
    assert code == 130 and "interrupted" in text

    text, code = line(StageError("x", "train_grm", ValueError("y" * 10_000), tmp_path))
    # The 10,000-character message is cut; the workspace paths are the rest of the line.
    assert len(text.replace(str(tmp_path), "")) < 600
    assert "partial work" in text and "--debug" in text

    text, code = line(ValueError("boom"), started=False)
    assert code == 1 and "unexpected error: ValueError: boom (--debug" in text


# --- run records, manifests, file modes ------------------------------------------------


def record(status: str, pid: int, **extra) -> dict:
    return {
        "mlflow_run_id": "r" * 32,
        "prefect_flow_run_id": None,
        "config_path": "c.yaml",
        "host": socket.gethostname(),
        "pid": pid,
        "status": status,
        "started_at": "2026-01-01T00:00:00+0000",
        "stages": [{"stage": "data", "status": "ran", "artifact": "a"}],
        **extra,
    }


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_runs_skips_a_corrupt_record_and_shows_the_interrupted_stage(tmp_path, capsys):
    runs = tmp_path / "runs"
    write_json_atomic(runs / "1.json", record("RUNNING", dead_pid(), in_flight="bootstrap"))
    write(runs / "2.json", '{"status": "FIN')
    write(runs / "3.json", "[1, 2]")
    assert rlmec(["runs", "--workspace", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    warnings = [line for line in captured.err.splitlines() if line]
    assert len(warnings) == 2 and all(
        line.startswith("rlmec: warning: skipping") for line in warnings
    )
    assert "2.json" in warnings[0] and "3.json" in warnings[1]
    [shown] = load_run_records(tmp_path, warn=lambda message: None)
    statuses = {s["stage"]: s["status"] for s in shown["stages"]}
    assert shown["status"] == "INTERRUPTED"
    assert statuses["data"] == "ran" and statuses["bootstrap"] == "interrupted"
    assert statuses["collect"] == "not reached"


def test_an_interrupted_runs_mlflow_runs_are_closed_by_the_next(tmp_path):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("e", artifact_location=(tmp_path / "a").as_uri())
    parent = client.create_run(experiment).info.run_id
    child = client.create_run(experiment, tags={"mlflow.parentRunId": parent}).info.run_id
    done = client.create_run(experiment, tags={"mlflow.parentRunId": parent}).info.run_id
    client.set_terminated(done, "FINISHED")
    write_json_atomic(
        tmp_path / "runs" / "1.json", {**record("RUNNING", dead_pid()), "mlflow_run_id": parent}
    )
    close_interrupted_runs(tmp_path, client)
    assert client.get_run(parent).info.status == "KILLED"
    assert client.get_run(child).info.status == "KILLED"
    assert client.get_run(done).info.status == "FINISHED"
    saved = json.loads((tmp_path / "runs" / "1.json").read_text())
    assert saved["status"] == "INTERRUPTED" and saved["mlflow_closed"] is True


def test_lineage_skips_a_corrupt_ancestor_with_a_warning(tmp_path, capsys):
    store = ArtifactStore(tmp_path)

    def put(content: str, parents=()) -> str:
        with store.staging() as out:
            (out / "f.txt").write_text(content)
            return store.commit(out, Provenance(stage="s", kind="k", parents=tuple(parents))).id

    root = put("raw")
    middle = put("middle", [root])
    leaf = put("leaf", [middle])
    (store.path(middle) / "manifest.json").write_text("{not json")
    assert rlmec(["lineage", leaf, "--workspace", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert leaf in captured.out and middle not in captured.out.split("productions")[0]
    assert "rlmec: warning: skipping" in captured.err and "manifest.json" in captured.err
    (store.path(leaf) / "manifest.json").write_text("[]")
    assert rlmec(["lineage", leaf, "--workspace", str(tmp_path)]) == 1
    assert "unreadable artifact manifest" in capsys.readouterr().err


def test_artifact_files_and_records_follow_the_umask(tmp_path):
    old = os.umask(0o027)
    try:
        write_json_atomic(tmp_path / "r.json", {"a": 1})
        store = ArtifactStore(tmp_path / "ws")
        with store.staging() as out:
            (out / "f.txt").write_text("x")
            artifact = store.commit(out, Provenance(stage="s", kind="k")).id
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o640
    manifest = store.path(artifact) / "manifest.json"
    assert stat.S_IMODE(manifest.stat().st_mode) == 0o640
    assert stat.S_IMODE((store.path(artifact) / "f.txt").stat().st_mode) == 0o640


# --- a chat teacher's failed samples ---------------------------------------------------


class FlakyTeacher(FakeTeacher):
    """Fails (as a chat teacher does after its retries) on predictions marked FAIL."""

    sample_errors = (TimeoutError,)

    def rewrite(self, question, gold_solution, prediction):
        if "FAIL" in prediction:
            raise TimeoutError("teacher still failing after 3 attempts")
        return super().rewrite(question, gold_solution, prediction)


def test_a_sample_the_teacher_gives_up_on_abstains_and_is_asked_again_later(tmp_path):
    samples = [make_sample(i, False, "FAIL" if i == 2 else "") for i in range(10)]
    shards = tmp_path / "shards"
    rows = distill_rewrites(
        samples, FlakyTeacher(), shards, max_failed_fraction=0.1, progress=False
    )
    assert [r["teacher_status"] for r in rows].count("abstained") == 1
    assert rows[2]["teacher_status"] == "abstained"
    assert "p02/0" not in read_shards(shards)  # a rerun asks the teacher again


def test_too_many_failed_samples_fail_the_stage(tmp_path):
    samples = [make_sample(i, False, "FAIL" if i in (2, 5) else "") for i in range(10)]
    with pytest.raises(
        DistillError, match=r"2 of 10 samples failed, more than max_failed_fraction 0\.1"
    ):
        distill_rewrites(samples, FlakyTeacher(), tmp_path, max_failed_fraction=0.1, progress=False)
    with pytest.raises(DistillError, match="'p02/0'"):  # 0 by default: any failure fails
        distill_rewrites(samples[:3], FlakyTeacher(), tmp_path / "b", progress=False)


def test_chat_teacher_sections_take_the_fraction(tmp_path):
    from tasks.distill import make_teacher

    section = PipelineConfig.model_validate(
        {
            "distill": {
                "teacher": {
                    "kind": "chat",
                    "base_url": "http://x/v1",
                    "model": "m",
                    "api_key_env": None,
                    "max_failed_fraction": 0.25,
                }
            }
        }
    ).distill.teacher
    teacher, _ = make_teacher(section)
    assert section.max_failed_fraction == 0.25 and teacher.sample_errors


# --- training that diverges ------------------------------------------------------------


def test_a_diverging_training_run_stops_with_a_clear_error(tmp_path):
    from rlmec_core.config import TrainingSection
    from rlmec_core.tokenizer import train_tokenizer
    from rlmec_core.trainers.guards import NonFiniteLossError
    from rlmec_core.trainers.sft import train_sft

    texts = [f"{i} + {i} = {2 * i}" for i in range(40)]
    tokenizer = train_tokenizer(texts, vocab_size=300)
    model = tiny_llama(tokenizer, hidden=16, layers=1, intermediate=32, positions=64)
    examples = [{"prompt": f"{i} + {i} =", "response": f" {2 * i}"} for i in range(40)]
    training = TrainingSection(learning_rate=1e30, max_steps=6, batch_size=4, save_steps=100)
    with pytest.raises(NonFiniteLossError, match=r"training diverged at step \d+: .*not finite"):
        train_sft(model, tokenizer, examples, tmp_path / "out", training, seed=0)
