"""A real loopback OpenAI-compatible chat server that plays a stage-2 teacher in tests.

It reads the task fields back out of the last user message of ``ChatTeacher``'s prompts,
asks an oracle ``(question, gold_solution, prediction) -> Rewrite | None`` and answers
like a chatty model would. Faults can be scripted for the next requests. Use it as a
context manager (or through the ``teacher_server`` fixture) so it always stops.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from rlmec_core.teachers.base import Rewrite, split_steps
from rlmec_core.teachers.chat_prompts import (
    CORRECT_ANSWER,
    ERROR_STEP_ANSWER,
    INSTRUCTION_HEADING,
    KEPT_HEADING,
    NO_KEPT_STEPS,
    PREDICTION_HEADING,
    QUESTION_HEADING,
    REFERENCE_HEADING,
)

Oracle = Callable[[str, str, str], Rewrite | None]
_HEADINGS = (QUESTION_HEADING, REFERENCE_HEADING, PREDICTION_HEADING, KEPT_HEADING)


@dataclass(frozen=True)
class TeacherRequest:
    """The fields of one teacher prompt; ``kept_steps`` is None for a first-error request."""

    question: str
    gold_solution: str
    prediction: str
    kept_steps: list[str] | None

    @property
    def kind(self) -> str:
        return "first_error" if self.kept_steps is None else "correction"


def parse_teacher_request(messages: list[dict]) -> TeacherRequest:
    """Read the task fields out of the last user message of a ChatTeacher prompt."""
    user = [m for m in messages if m.get("role") == "user"]
    if not user:
        raise ValueError("no user message in the request")
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in str(user[-1]["content"]).split("\n"):
        if line in _HEADINGS or line == INSTRUCTION_HEADING:
            current = sections.setdefault(line, [])
        elif current is not None:
            current.append(line)
    missing = [h for h in _HEADINGS[:3] if h not in sections]
    if missing:
        raise ValueError(f"request lacks sections {missing}")

    def text(heading: str) -> str:
        return "\n".join(sections[heading]).strip()

    numbered = split_steps(text(PREDICTION_HEADING))
    prediction_steps = []
    for i, line in enumerate(numbered):
        prefix = f"[{i}] "
        if not line.startswith(prefix):
            raise ValueError(f"prediction step {i} is not numbered: {line!r}")
        prediction_steps.append(line[len(prefix) :])
    kept = None
    if KEPT_HEADING in sections:
        kept_text = text(KEPT_HEADING)
        kept = [] if kept_text == NO_KEPT_STEPS else split_steps(kept_text)
    return TeacherRequest(
        question=text(QUESTION_HEADING),
        gold_solution=text(REFERENCE_HEADING),
        prediction="\n".join(prediction_steps),
        kept_steps=kept,
    )


def qa_oracle(question: str, gold_solution: str, prediction: str) -> Rewrite | None:
    """For QA records: a prediction with the gold answer line is correct, else the rewrite
    is the gold solution from step 0."""
    gold_last = split_steps(gold_solution)[-1].strip().lower()
    steps = split_steps(prediction)
    if steps and steps[-1].strip().lower() == gold_last:
        return Rewrite(-1, prediction)
    return Rewrite(0, gold_solution.strip())


@dataclass(frozen=True)
class Fault:
    """What the server does instead of answering, for one request.

    kind: "status" (HTTP ``status``, with ``Retry-After: retry_after`` if given), "delay"
    (sleep ``delay_s``, then answer normally), "garbage" (a valid completion whose text
    is nonsense), "malformed_json" (HTTP 200 with a broken JSON body). ``message`` is
    the error message of a "status" fault.
    """

    kind: str
    status: int = 500
    retry_after: float | None = None
    delay_s: float = 0.0
    message: str = ""

    @staticmethod
    def http(status: int, retry_after: float | None = None, message: str = "") -> Fault:
        return Fault("status", status=status, retry_after=retry_after, message=message)

    @staticmethod
    def delay(seconds: float) -> Fault:
        return Fault("delay", delay_s=seconds)

    @staticmethod
    def garbage() -> Fault:
        return Fault("garbage")

    @staticmethod
    def malformed_json() -> Fault:
        return Fault("malformed_json")


# One of each transient fault a client must retry through (the delay outlasts a 1 s
# timeout), with pytest ids. The 500 leaves the wait to the client's backoff; the 503 and
# 429 name a short one, as servers may.
TRANSIENT_FAULTS = {
    "500": Fault.http(500),
    "503": Fault.http(503, retry_after=0.01),
    "429": Fault.http(429, retry_after=0.01),
    "timeout": Fault.delay(1.5),
    "garbage": Fault.garbage(),
    "malformed_json": Fault.malformed_json(),
}


@dataclass(frozen=True)
class RecordedRequest:
    path: str
    authorization: str | None
    body: dict


class LoopbackOpenAIServer:
    """An OpenAI-style server on 127.0.0.1 (ephemeral port, or ``port``): ``POST {route}``
    answered by ``respond``, ``GET /v1/models`` listing ``model``, scripted faults.

    ``expected_api_key``: when set, other bearer tokens get a 401 whose message echoes
    the token (as some real APIs partly do), to test that clients do not leak it.
    ``latency_s``: time each normal answer takes, so concurrent requests overlap.
    Subclasses define ``route``, ``respond(body) -> (status, payload)`` and ``garbage()``.
    """

    route = "/v1/chat/completions"

    def __init__(
        self,
        expected_api_key: str | None = None,
        latency_s: float = 0.0,
        model: str = "test-model",
        port: int = 0,
    ) -> None:
        self.expected_api_key = expected_api_key
        self.latency_s = latency_s
        self.model = model
        self.requests: list[RecordedRequest] = []
        self.max_in_flight = 0
        self._in_flight = 0
        self._faults: list[Fault | None] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), self._handler_class())
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self.requests)

    def script_faults(self, faults: Iterable[Fault | None]) -> None:
        """The next requests, one each in order, meet these faults (None: answer normally)."""
        with self._lock:
            self._faults.extend(faults)

    def start(self) -> LoopbackOpenAIServer:
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        """Serve in this thread until interrupted (for a server run as a process)."""
        try:
            self._httpd.serve_forever(0.05)
        finally:
            self._httpd.server_close()

    def stop(self) -> None:
        self._stop.set()  # wakes handlers sleeping on a delay fault
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def respond(self, body: dict) -> tuple[int, dict]:
        raise NotImplementedError

    def garbage(self) -> dict:
        raise NotImplementedError

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            _counted = False  # this request is in server._in_flight

            def log_message(self, format: str, *args: object) -> None:  # quiet tests
                pass

            def _end_in_flight(self) -> None:
                # Before the response's first byte: once the client has it, it may send its
                # next request, which must not overlap this one in the count.
                if self._counted:
                    self._counted = False
                    with server._lock:
                        server._in_flight -= 1

            def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self._end_in_flight()
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

            def _json(self, status: int, payload: dict, headers: dict | None = None) -> None:
                body = json.dumps(payload).encode()
                self._send(status, body, {"Content-Type": "application/json", **(headers or {})})

            def _error(self, status: int, message: str, headers: dict | None = None) -> None:
                self._json(status, {"error": {"message": message, "type": "test"}}, headers)

            def _authorised(self) -> bool:
                key = server.expected_api_key
                auth = self.headers.get("Authorization")
                if key is not None and auth != f"Bearer {key}":
                    self._error(401, f"Incorrect API key provided: {auth}")
                    return False
                return True

            def do_GET(self) -> None:
                if self.path.rstrip("/") != "/v1/models":
                    self._error(404, f"no route {self.path}")
                elif self._authorised():
                    model = {"id": server.model, "object": "model", "owned_by": "test"}
                    self._json(200, {"object": "list", "data": [model]})

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                raw = self.rfile.read(length)
                if self.path.rstrip("/") != server.route:
                    self._error(404, f"no route {self.path}")
                    return
                body = json.loads(raw)
                auth = self.headers.get("Authorization")
                with server._lock:
                    server.requests.append(RecordedRequest(self.path, auth, body))
                    fault = server._faults.pop(0) if server._faults else None
                    server._in_flight += 1
                    server.max_in_flight = max(server.max_in_flight, server._in_flight)
                self._counted = True
                try:
                    self._respond(body, fault)
                finally:
                    self._end_in_flight()  # a request answered with nothing (dropped)

            def _respond(self, body: dict, fault: Fault | None) -> None:
                if not self._authorised():
                    return
                if fault is not None and fault.kind == "status":
                    headers = {}
                    if fault.retry_after is not None:
                        headers["Retry-After"] = str(fault.retry_after)
                    message = fault.message or f"scripted HTTP {fault.status}"
                    self._error(fault.status, message, headers)
                    return
                if fault is not None and fault.kind == "malformed_json":
                    self._send(200, b'{"choices": [', {"Content-Type": "application/json"})
                    return
                if fault is not None and fault.kind == "delay":
                    server._stop.wait(fault.delay_s)
                if fault is not None and fault.kind == "garbage":
                    self._json(200, server.garbage())
                    return
                if server.latency_s:
                    server._stop.wait(server.latency_s)
                status, payload = server.respond(body)
                self._json(status, payload)

        return Handler


class TeacherServer(LoopbackOpenAIServer):
    """OpenAI-style ``POST /v1/chat/completions`` on 127.0.0.1, ephemeral port.

    ``expected_api_key``: when set, other bearer tokens get a 401 whose message echoes
    the token (as some real APIs partly do), to test that clients do not leak it.
    ``latency_s``: time each normal answer takes, so concurrent requests overlap.
    """

    route = "/v1/chat/completions"

    def __init__(
        self,
        oracle: Oracle,
        expected_api_key: str | None = None,
        latency_s: float = 0.0,
        model: str = "test-teacher",
    ) -> None:
        super().__init__(expected_api_key=expected_api_key, latency_s=latency_s, model=model)
        self.oracle = oracle

    def __enter__(self) -> TeacherServer:
        return self.start()

    # What the "model" says for a parsed request; chatter on purpose, to exercise parsers.
    def answer(self, request: TeacherRequest) -> str:
        verdict = self.oracle(request.question, request.gold_solution, request.prediction)
        if request.kind == "first_error":
            if verdict is None:
                return "I am not sure what to make of this."
            if verdict.error_step == -1:
                return f"I checked every step. {CORRECT_ANSWER}."
            return (
                "Let me compare the steps with the reference.\n"
                f"**{ERROR_STEP_ANSWER.format(k=verdict.error_step)}**"
            )
        if verdict is None or verdict.error_step < 0:
            return "Nothing to correct."
        continuation = split_steps(verdict.text)[len(request.kept_steps or []) :]
        return "Here is the corrected solution:\n```\n" + "\n".join(continuation) + "\n```"

    def respond(self, body: dict) -> tuple[int, dict]:
        try:
            request = parse_teacher_request(body["messages"])
        except (KeyError, ValueError) as exc:
            return 400, {"error": {"message": f"cannot read the teacher prompt: {exc}"}}
        return 200, self._completion(self.answer(request))

    def garbage(self) -> dict:
        return self._completion("lorem ipsum dolor sit amet")

    def _completion(self, text: str) -> dict:
        return {
            "id": f"chatcmpl-{len(self.requests)}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": "stop",
                }
            ],
            "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
        }
