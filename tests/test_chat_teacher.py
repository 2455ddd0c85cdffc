"""ChatTeacher against a real loopback OpenAI-compatible server (tests/teacher_server.py)."""

from __future__ import annotations

import logging
import pickle
import time

import pytest

from rlmec_core.answers import answers_match
from rlmec_core.config import ChatTeacherSection
from rlmec_core.teachers.arithmetic import ArithmeticTeacher
from rlmec_core.teachers.base import Rewrite, Teacher, split_steps
from rlmec_core.teachers.chat import ChatTeacher, ChatTeacherError
from rlmec_core.teachers.chat_prompts import (
    correction_messages,
    first_error_messages,
    parse_continuation,
    parse_first_error_step,
)
from tests.teacher_server import (
    TRANSIENT_FAULTS,
    Fault,
    TeacherServer,
    parse_teacher_request,
    qa_oracle,
)
from tests.verdicts import READ_ALIKE

KEY_ENV = "RLMEC_TEST_TEACHER_KEY"
SECRET = "sk-test-0123456789abcdefSECRET"

QUESTION = "Tom has 5 apples. He buys 3 bags with 4 apples each. How many apples does he have?"
GOLD = "He buys 3 * 4 = 12 apples.\nHe has 5 + 12 = 17 apples.\nThe answer is 17"
RIGHT = "He buys 3 * 4 = 12 apples.\nSo he has 5 + 12 = 17 apples.\nThe answer is 17"
WRONG = "Tom starts with 5 apples.\nHe buys 3 * 4 = 14 apples.\nHe has 5 + 14 = 19 apples.\nThe answer is 19"
FIXED = "Tom starts with 5 apples.\nHe buys 3 * 4 = 12 apples.\nHe has 5 + 12 = 17 apples.\nThe answer is 17"


# The server's default oracle: the offline arithmetic teacher plays the chat model.
ARITHMETIC = ArithmeticTeacher()


@pytest.fixture
def make_server():
    servers: list[TeacherServer] = []

    def make(oracle=ARITHMETIC.rewrite, **kwargs) -> TeacherServer:
        kwargs.setdefault("expected_api_key", SECRET)
        server = TeacherServer(oracle, **kwargs).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def teacher_server(make_server) -> TeacherServer:
    return make_server()


@pytest.fixture(autouse=True)
def api_key(monkeypatch):
    monkeypatch.setenv(KEY_ENV, SECRET)


def make_teacher(server: TeacherServer, **kwargs) -> ChatTeacher:
    settings = dict(
        base_url=server.base_url,
        model="test-teacher",
        api_key_env=KEY_ENV,
        timeout_s=5.0,
        max_retries=3,
        concurrency=2,
        max_tokens=256,
        backoff_base_s=0.001,
        backoff_cap_s=0.01,
    )
    settings.update(kwargs)
    backoff = {name: settings.pop(name) for name in ("backoff_base_s", "backoff_cap_s")}
    return ChatTeacher(ChatTeacherSection(**settings), **backoff)


# --- prompts and parsers -------------------------------------------------------------


def test_prompt_fields_round_trip_through_the_server_parser():
    question = "Which is a mammal?\nOptions:\nshark\nwhale"
    first = parse_teacher_request(first_error_messages(question, GOLD, WRONG))
    assert (first.kind, first.question, first.gold_solution) == ("first_error", question, GOLD)
    assert first.prediction == WRONG
    kept = split_steps(WRONG)[:2]
    second = parse_teacher_request(correction_messages(question, GOLD, WRONG, kept))
    assert second.kind == "correction" and second.kept_steps == kept
    assert second.prediction == WRONG
    assert parse_teacher_request(correction_messages(question, GOLD, WRONG, [])).kept_steps == []


def test_first_error_prompt_numbers_the_steps_and_has_one_worked_example():
    messages = first_error_messages(QUESTION, GOLD, WRONG)
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2]["content"] == "The first error step is [1]"
    assert (
        "[0] Tom starts with 5 apples.\n[1] He buys 3 * 4 = 14 apples." in messages[-1]["content"]
    )


# Where the teacher's parser differs from the GRM's: it knows other words for the error and
# a bare "Step 2", and reads no step from a reply that names two (the GRM's takes the first).
TEACHER_ONLY = [
    ("first erroneous step is 0", 0),
    ("The mistake happens in Step 2.", 2),
    ("Steps [1] and [2] both look wrong.", None),
    ("The prediction is correct up to step [1], then step [2] is wrong.", None),
]


@pytest.mark.parametrize(("text", "expected"), READ_ALIKE + TEACHER_ONLY)
def test_parse_first_error_step(text, expected):
    assert parse_first_error_step(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("He buys 12.\nThe answer is 17", "He buys 12.\nThe answer is 17"),
        (
            "Here is the corrected solution:\n```text\nHe buys 12.\nThe answer is 17\n```\nDone!",
            "He buys 12.\nThe answer is 17",
        ),
        (
            "Sure!\nHe buys 12.\n**The answer is 17**\nHope this helps.",
            "He buys 12.\nThe answer is 17",
        ),
        ("[1] He buys 12.\n[2] The answer is 17", "He buys 12.\nThe answer is 17"),
        ("He buys 12 apples.", None),
        ("lorem ipsum", None),
    ],
)
def test_parse_continuation(text, expected):
    assert parse_continuation(text) == expected


# --- the two-call protocol -------------------------------------------------------------


def test_correct_prediction_takes_one_call(teacher_server):
    teacher = make_teacher(teacher_server)
    assert isinstance(teacher, Teacher) and teacher.name == "chat"
    assert teacher.rewrite(QUESTION, GOLD, RIGHT) == Rewrite(-1, RIGHT)
    assert teacher_server.request_count == 1
    request = teacher_server.requests[0]
    assert request.authorization == f"Bearer {SECRET}"
    assert request.body["model"] == "test-teacher"
    assert request.body["temperature"] == 0
    assert request.body["max_tokens"] == 256


def test_wrong_prediction_gets_minimal_rewrite_in_two_calls(teacher_server):
    rewrite = make_teacher(teacher_server).rewrite(QUESTION, GOLD, WRONG)
    assert rewrite == Rewrite(1, FIXED)
    assert teacher_server.request_count == 2
    second = parse_teacher_request(teacher_server.requests[1].body["messages"])
    assert second.kept_steps == ["Tom starts with 5 apples."]


JANET = (
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes "
    "muffins for her friends every day with four. She sells the remainder at the farmers' "
    "market daily for $2 per fresh duck egg. How much in dollars does she make every day?"
)
JANET_GOLD = (
    "Janet sells 16 - 3 - 4 = 9 duck eggs a day.\n"
    "She makes 9 * 2 = $18 every day at the farmer's market.\n"
    "The answer is 18"
)


@pytest.mark.parametrize(
    ("prediction", "error_step"),
    [
        (
            "Janet sells 16 - 3 - 4 = 9 duck eggs a day.\nShe makes 9 * 2 = 18 dollars.\n"
            "The answer is 18",
            -1,
        ),
        (
            "Janet has 16 eggs.\nShe sells 16 - 3 - 4 = 8 eggs.\n"
            "She makes 8 * 2 = 16 dollars.\nThe answer is 16",
            1,
        ),
        ("She sells 16 - 3 - 4 = 10 eggs.\nShe makes 10 * 2 = 20 dollars.\nThe answer is 20", 0),
        ("Janet sells 16 - 3 - 4 = 9 eggs.\nShe makes 9 * 2 = 18 dollars.\nThe answer is 19", 2),
    ],
)
def test_through_the_server_matches_the_arithmetic_teacher(teacher_server, prediction, error_step):
    expected = ARITHMETIC.rewrite(JANET, JANET_GOLD, prediction)
    assert expected is not None and expected.error_step == error_step
    rewrite = make_teacher(teacher_server).rewrite(JANET, JANET_GOLD, prediction)
    assert rewrite == expected
    assert answers_match(rewrite.text, "18")
    kept = split_steps(prediction)[: max(rewrite.error_step, 0)]
    assert split_steps(rewrite.text)[: len(kept)] == kept
    assert teacher_server.request_count == (1 if rewrite.error_step == -1 else 2)


def test_error_step_out_of_range_abstains(make_server):
    server = make_server(lambda q, g, p: Rewrite(9, FIXED))
    assert make_teacher(server).rewrite(QUESTION, GOLD, WRONG) is None
    assert server.request_count == 1


def test_repeated_kept_steps_in_the_continuation_are_kept_once(make_server):
    server = make_server()
    server.answer = lambda request: (
        "The first error step is [1]" if request.kind == "first_error" else FIXED
    )
    assert make_teacher(server).rewrite(QUESTION, GOLD, WRONG) == Rewrite(1, FIXED)


def test_qa_record_gets_the_gold_solution_from_step_zero(make_server):
    server = make_server(qa_oracle)
    question = "Predators eat\nOptions:\nlions\nhumans\nbunnies\ngrass"
    gold = "The answer is bunnies"
    wrong = "Predators eat plants.\nThe answer is grass"
    teacher = make_teacher(server)
    assert teacher.rewrite(question, gold, wrong) == Rewrite(0, gold)
    asked = parse_teacher_request(server.requests[1].body["messages"])
    assert asked.question == question and asked.kept_steps == []
    assert teacher.rewrite(question, gold, "The answer is bunnies") == Rewrite(
        -1, "The answer is bunnies"
    )


# --- retries ---------------------------------------------------------------------------


@pytest.mark.parametrize("fault", TRANSIENT_FAULTS.values(), ids=TRANSIENT_FAULTS.keys())
@pytest.mark.parametrize("on_call", [0, 1], ids=["first_error_call", "correction_call"])
def test_each_fault_is_retried_and_recovers(make_server, fault, on_call):
    server = make_server()
    teacher = make_teacher(server, timeout_s=0.4)
    if on_call == 1:
        server.script_faults([None])  # let the first-error call through
    server.script_faults([fault, fault])
    assert teacher.rewrite(QUESTION, GOLD, WRONG) == Rewrite(1, FIXED)
    assert server.request_count == 4


def test_retry_after_is_respected_and_an_excessive_one_not_waited_for(make_server):
    server = make_server()
    server.script_faults([Fault.http(429, retry_after=0.3)])
    start = time.monotonic()
    assert make_teacher(server).rewrite(QUESTION, GOLD, RIGHT) == Rewrite(-1, RIGHT)
    assert time.monotonic() - start >= 0.3
    assert server.request_count == 2

    # The client waits at most two minutes for a Retry-After; beyond, it gives up at once.
    server.script_faults([Fault.http(429, retry_after=3600)])
    start = time.monotonic()
    with pytest.raises(ChatTeacherError, match="after 1 attempts: HTTP 429"):
        make_teacher(server).rewrite(QUESTION, GOLD, RIGHT)
    assert time.monotonic() - start < 3
    assert server.request_count == 2 + 1


def test_persistent_garbage_abstains_after_max_retries(make_server):
    server = make_server()
    server.script_faults([Fault.garbage()] * 4)
    assert make_teacher(server, max_retries=3).rewrite(QUESTION, GOLD, WRONG) is None
    assert server.request_count == 4

    server.script_faults([None] + [Fault.garbage()] * 2)  # garbage on the correction call
    assert make_teacher(server, max_retries=1).rewrite(QUESTION, GOLD, WRONG) is None
    assert server.request_count == 4 + 3


def test_persistent_outage_raises_instead_of_abstaining(make_server):
    server = make_server()
    server.script_faults([Fault.http(503)] * 3)
    with pytest.raises(ChatTeacherError, match="after 3 attempts: HTTP 503"):
        make_teacher(server, max_retries=2).rewrite(QUESTION, GOLD, WRONG)
    assert server.request_count == 3


def test_unauthorised_is_a_clear_error_without_retry(make_server, monkeypatch):
    server = make_server()
    monkeypatch.setenv(KEY_ENV, SECRET + "-wrong")  # the server echoes the bad key back
    with pytest.raises(ChatTeacherError, match=f"HTTP 401.*{KEY_ENV}") as caught:
        make_teacher(server).rewrite(QUESTION, GOLD, WRONG)
    assert SECRET not in str(caught.value)
    assert server.request_count == 1


def test_bad_request_is_not_retried(make_server):
    server = make_server()
    server.script_faults([Fault.http(400)])
    with pytest.raises(ChatTeacherError, match="HTTP 400.*scripted HTTP 400"):
        make_teacher(server).rewrite(QUESTION, GOLD, WRONG)
    assert server.request_count == 1


def test_missing_key_variable_is_named(make_server, monkeypatch):
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(ChatTeacherError, match=KEY_ENV):
        make_teacher(make_server())


def test_local_server_without_auth(make_server):
    server = make_server(expected_api_key=None)
    assert make_teacher(server, api_key_env=None).rewrite(QUESTION, GOLD, RIGHT) == Rewrite(
        -1, RIGHT
    )
    assert server.requests[0].authorization == "Bearer no-key"


# --- batches ---------------------------------------------------------------------------


def test_rewrite_many_keeps_order_and_bounds_concurrency(make_server):
    server = make_server(latency_s=0.1)
    items = [(QUESTION, GOLD, WRONG if i % 3 else RIGHT) for i in range(9)]
    items.append((QUESTION, GOLD, "Unknown to the oracle.\nThe answer is 1"))
    results = make_teacher(server, concurrency=3).rewrite_many(items)
    assert results == [Rewrite(1, FIXED) if i % 3 else Rewrite(-1, RIGHT) for i in range(9)] + [
        None
    ]
    assert server.max_in_flight == 3
    assert make_teacher(server).rewrite_many([]) == []


def test_rewrite_many_rejects_malformed_items(teacher_server):
    with pytest.raises(ValueError, match="item 1"):
        make_teacher(teacher_server).rewrite_many([(QUESTION, GOLD, RIGHT), (QUESTION, GOLD)])


# --- the key stays secret --------------------------------------------------------------


def test_key_never_leaks(make_server, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)
    server = make_server()
    server.script_faults([Fault.http(500), Fault.garbage(), Fault.malformed_json()])
    teacher = make_teacher(server)
    results = teacher.rewrite_many([(QUESTION, GOLD, WRONG), (QUESTION, GOLD, RIGHT)])
    assert results == [Rewrite(1, FIXED), Rewrite(-1, RIGHT)]
    assert server.requests[0].authorization == f"Bearer {SECRET}"  # it was sent

    shown = [repr(teacher), str(teacher), repr(results), caplog.text]
    assert caplog.records, "the retries should have been logged"
    assert not any(SECRET in text for text in shown)
    assert SECRET.encode() not in pickle.dumps(teacher)
    assert repr(pickle.loads(pickle.dumps(teacher))) == repr(teacher)

    server.script_faults([Fault.http(400, message=f"bad request with key {SECRET}")])
    with pytest.raises(ChatTeacherError, match="bad request with key") as caught:
        teacher.rewrite(QUESTION, GOLD, WRONG)
    assert SECRET not in str(caught.value) and SECRET not in repr(caught.value)
    assert caught.value.__cause__ is None


def test_rewrite_many_raises_when_the_endpoint_refuses(make_server, monkeypatch):
    server = make_server()
    monkeypatch.setenv(KEY_ENV, "wrong-key")
    items = [(QUESTION, GOLD, WRONG)] * 20
    with pytest.raises(ChatTeacherError, match="HTTP 401"):
        make_teacher(server, concurrency=2).rewrite_many(items)
    assert server.request_count < len(items)  # queued items were cancelled
