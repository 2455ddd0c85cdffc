"""A stage-2 teacher behind any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp...).

Two calls per incorrect prediction, as in the reference: the first error step k, then a
minimal continuation from the kept prefix (steps 0..k-1 verbatim). Retries are ours (the
client's own are off) so that unparseable answers are retried like transient HTTP errors.
The API key is read from the environment and never stored anywhere it could be printed.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import openai

from rlmec_core.teachers.base import Rewrite, split_steps
from rlmec_core.teachers.chat_prompts import (
    correction_messages,
    first_error_messages,
    parse_continuation,
    parse_first_error_step,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Sent when api_key_env is None: local servers without auth ignore it, the client needs one.
NO_KEY_PLACEHOLDER = "no-key"
_RETRYABLE_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))


class ChatTeacherError(RuntimeError):
    """The teacher endpoint refused the request, or stayed unavailable through all retries."""


class _Retryable(Exception):
    """One failed attempt worth retrying; ``retry_after`` is the server's hint in seconds."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def _retry_after_seconds(headers: object) -> float | None:
    """Seconds from ``Retry-After`` (delta or HTTP date) or ``retry-after-ms``, if any."""
    get = getattr(headers, "get", None)
    if get is None:
        return None
    raw_ms = get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(float(raw_ms) / 1000.0, 0.0)
        except ValueError:
            pass
    raw = get("retry-after")
    if raw is None:
        return None
    try:
        return max(float(raw), 0.0)
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError):
        return None
    return max(when.timestamp() - time.time(), 0.0)


class ChatTeacher:
    """First error step and minimum-edit rewrite from an OpenAI-compatible chat model.

    ``api_key_env`` names the environment variable that holds the key (read once, here);
    ``None`` means a local server without auth. ``max_retries`` counts retries after the
    first attempt, for transient HTTP errors and unparseable answers alike.
    """

    name = "chat"

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str | None = "OPENAI_API_KEY",
        timeout_s: float = 60.0,
        max_retries: int = 4,
        concurrency: int = 4,
        max_tokens: int = 1024,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 30.0,
        retry_after_cap_s: float = 60.0,
    ) -> None:
        if not base_url:
            raise ValueError("ChatTeacher: base_url is empty")
        if not model:
            raise ValueError("ChatTeacher: model is empty")
        for field, value in (
            ("timeout_s", timeout_s),
            ("backoff_base_s", backoff_base_s),
            ("backoff_cap_s", backoff_cap_s),
            ("retry_after_cap_s", retry_after_cap_s),
        ):
            if value < 0:
                raise ValueError(f"ChatTeacher: {field} must be >= 0, got {value}")
        if max_retries < 0:
            raise ValueError(f"ChatTeacher: max_retries must be >= 0, got {max_retries}")
        if concurrency < 1:
            raise ValueError(f"ChatTeacher: concurrency must be >= 1, got {concurrency}")
        if max_tokens < 1:
            raise ValueError(f"ChatTeacher: max_tokens must be >= 1, got {max_tokens}")
        self.base_url = base_url
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.max_tokens = max_tokens
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.retry_after_cap_s = retry_after_cap_s
        api_key = self._read_key(api_key_env)
        # Held only for redacting messages; never in repr, pickles or returned objects.
        self._secret = api_key if api_key_env is not None else None
        self._client = openai.OpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0
        )
        self._rng = random.Random()
        self._rng_lock = threading.Lock()

    @staticmethod
    def _read_key(api_key_env: str | None) -> str:
        if api_key_env is None:
            return NO_KEY_PLACEHOLDER
        key = os.environ.get(api_key_env, "")
        if not key.strip():
            raise ChatTeacherError(
                f"ChatTeacher: environment variable {api_key_env} (api_key_env) is not set "
                "or empty; export the teacher's API key there, or set api_key_env to null "
                "for a local server without auth"
            )
        return key.strip()

    def __repr__(self) -> str:
        return (
            f"ChatTeacher(base_url={self.base_url!r}, model={self.model!r}, "
            f"api_key_env={self.api_key_env!r}, concurrency={self.concurrency})"
        )

    # Pickles (e.g. task caches) carry the settings only; the key is re-read on load.
    def __getstate__(self) -> dict:
        return {
            "base_url": self.base_url,
            "model": self.model,
            "api_key_env": self.api_key_env,
            "timeout_s": self.timeout_s,
            "max_retries": self.max_retries,
            "concurrency": self.concurrency,
            "max_tokens": self.max_tokens,
            "backoff_base_s": self.backoff_base_s,
            "backoff_cap_s": self.backoff_cap_s,
            "retry_after_cap_s": self.retry_after_cap_s,
        }

    def __setstate__(self, state: dict) -> None:
        self.__init__(**state)

    def _redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _backoff_s(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter; a server's Retry-After (capped) is a floor."""
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * (2**attempt))
        with self._rng_lock:
            delay = ceiling / 2 + self._rng.uniform(0, ceiling / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_cap_s))
        return delay

    def _complete(self, messages: list[dict]) -> str:
        """One chat completion's text; transient failures become ``_Retryable``."""
        try:
            completion = self._client.chat.completions.create(
                model=self.model,
                messages=messages,
                temperature=0,
                max_tokens=self.max_tokens,
            )
        except openai.APIConnectionError as exc:  # timeouts included
            raise _Retryable(type(exc).__name__) from None
        except openai.APIStatusError as exc:
            status = exc.status_code
            if status in _RETRYABLE_STATUS:
                raise _Retryable(
                    f"HTTP {status}", _retry_after_seconds(exc.response.headers)
                ) from None
            if status in (401, 403):
                raise ChatTeacherError(
                    f"teacher at {self.base_url} rejected the credentials (HTTP {status}); "
                    f"check the key in ${self.api_key_env}"
                    if self.api_key_env
                    else f"teacher at {self.base_url} requires an API key (HTTP {status}); "
                    "set api_key_env to the environment variable that holds it"
                ) from None
            raise ChatTeacherError(
                f"teacher at {self.base_url} rejected the request for model {self.model!r} "
                f"(HTTP {status}): {self._redact(str(exc.message))}"
            ) from None
        except (openai.APIResponseValidationError, ValueError):
            # A body that is not JSON (ValueError from the decoder) or not a completion.
            raise _Retryable("malformed response body") from None
        try:
            content = completion.choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            raise _Retryable("malformed response body") from None
        if not isinstance(content, str):
            raise _Retryable("response without text content")
        return content

    def _ask(self, messages: list[dict], parse: Callable[[str], T | None], what: str) -> T | None:
        """Ask until ``parse`` reads the answer; None if it never could within the retries.

        Raises ``ChatTeacherError`` when the endpoint itself stayed unavailable: silently
        abstaining on every record of an outage would corrupt the distilled data.
        """
        transport_failure: str | None = None
        for attempt in range(self.max_retries + 1):
            retry_after = None
            try:
                reply = self._complete(messages)
            except _Retryable as failure:
                transport_failure, retry_after = failure.reason, failure.retry_after
                reason = failure.reason
            else:
                parsed = parse(reply)
                if parsed is not None:
                    return parsed
                transport_failure, reason = None, f"unparseable {what} answer"
            if attempt == self.max_retries:
                break
            delay = self._backoff_s(attempt, retry_after)
            logger.warning(
                "teacher %s: %s; retry %d/%d in %.2fs",
                self.model,
                self._redact(reason),
                attempt + 1,
                self.max_retries,
                delay,
            )
            time.sleep(delay)
        if transport_failure is not None:
            raise ChatTeacherError(
                f"teacher at {self.base_url} still failing after {self.max_retries + 1} "
                f"attempts: {self._redact(transport_failure)}"
            )
        logger.warning("teacher %s: abstaining, %s answer never parsed", self.model, what)
        return None

    def rewrite(self, question: str, gold_solution: str, prediction: str) -> Rewrite | None:
        """Stage 2 for one prediction: first error step, then the minimal continuation."""
        steps = split_steps(prediction)
        if not steps:
            return None
        k = self._ask(
            first_error_messages(question, gold_solution, prediction),
            parse_first_error_step,
            "first-error-step",
        )
        if k is None or k >= len(steps):
            return None
        if k == -1:
            return Rewrite(-1, prediction)
        kept = steps[:k]
        continuation = self._ask(
            correction_messages(question, gold_solution, prediction, kept),
            parse_continuation,
            "correction",
        )
        if continuation is None:
            return None
        new_steps = split_steps(continuation)
        # Some models repeat the kept steps despite the instruction; keep them once.
        if kept and new_steps[: len(kept)] == [step.strip() for step in kept]:
            new_steps = new_steps[len(kept) :]
        if not new_steps:
            return None
        return Rewrite(k, "\n".join([*kept, *new_steps]))

    def rewrite_many(self, items: Sequence[tuple[str, str, str]]) -> list[Rewrite | None]:
        """``rewrite`` for each (question, gold_solution, prediction), in input order.

        At most ``concurrency`` requests are in flight: each worker makes its calls in turn.
        """
        for index, item in enumerate(items):
            if len(item) != 3 or not all(isinstance(field, str) for field in item):
                raise ValueError(
                    f"rewrite_many: item {index} must be (question, gold_solution, prediction) "
                    "strings"
                )
        if not items:
            return []
        executor = ThreadPoolExecutor(max_workers=min(self.concurrency, len(items)))
        try:
            futures = [executor.submit(self.rewrite, *item) for item in items]
            return [future.result() for future in futures]
        finally:
            # On error, queued items are dropped instead of hammering a failing endpoint.
            executor.shutdown(wait=True, cancel_futures=True)
