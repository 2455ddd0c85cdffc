"""One OpenAI-compatible endpoint: API key, retries with backoff, a concurrency limit.

Shared by the chat teacher (``teachers.chat``) and the completions generation backend
(``generation_server``). The client's own retries are off: ``OpenAIEndpoint.retry`` retries
transient HTTP errors, timeouts and malformed bodies itself (and, for callers that parse
answers, unusable answers), with exponential backoff, jitter and the server's
``Retry-After`` as a floor. The API key is read from the environment variable the caller
*names*; it is kept only to redact messages and never reaches a repr, a pickle or a log.
``openai`` is imported when an endpoint is made, not with this module (it takes ~0.5 s).
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import openai

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# Sent when api_key_env is None: local servers without auth ignore it, the client needs one.
NO_KEY_PLACEHOLDER = "no-key"
RETRYABLE_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))


class EndpointError(RuntimeError):
    """The endpoint refused the request, or stayed unavailable through all retries."""


class Retryable(Exception):
    """One failed attempt worth retrying; ``retry_after`` is the server's hint in seconds."""

    def __init__(self, reason: str, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after


def retry_after_seconds(headers: object) -> float | None:
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


def read_api_key(
    api_key_env: str | None, owner: str, error_type: type[EndpointError] = EndpointError
) -> str:
    """The key in the environment variable ``api_key_env`` names (placeholder for None)."""
    if api_key_env is None:
        return NO_KEY_PLACEHOLDER
    key = os.environ.get(api_key_env, "")
    if not key.strip():
        raise error_type(
            f"{owner}: environment variable {api_key_env} (api_key_env) is not set or empty; "
            "export the API key there, or set api_key_env to null for a local server "
            "without auth"
        )
    return key.strip()


class OpenAIEndpoint:
    """An ``openai.OpenAI`` client for ``base_url`` plus the retry and concurrency policy.

    ``label`` names the endpoint in messages ("teacher", "generation server");
    ``error_type`` is what unrecoverable failures raise. ``max_retries`` counts retries
    after the first attempt; ``concurrency`` bounds the requests ``map`` keeps in flight.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str | None,
        timeout_s: float,
        max_retries: int,
        concurrency: int,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 30.0,
        retry_after_cap_s: float = 60.0,
        label: str = "endpoint",
        owner: str | None = None,
        error_type: type[EndpointError] = EndpointError,
    ) -> None:
        owner = owner or label
        if not base_url:
            raise ValueError(f"{owner}: base_url is empty")
        if not model:
            raise ValueError(f"{owner}: model is empty")
        for field, value in (
            ("timeout_s", timeout_s),
            ("backoff_base_s", backoff_base_s),
            ("backoff_cap_s", backoff_cap_s),
            ("retry_after_cap_s", retry_after_cap_s),
        ):
            if value < 0:
                raise ValueError(f"{owner}: {field} must be >= 0, got {value}")
        if max_retries < 0:
            raise ValueError(f"{owner}: max_retries must be >= 0, got {max_retries}")
        if concurrency < 1:
            raise ValueError(f"{owner}: concurrency must be >= 1, got {concurrency}")
        self.base_url = base_url
        self.model = model
        self.api_key_env = api_key_env
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.retry_after_cap_s = retry_after_cap_s
        self.label = label
        self.error_type = error_type
        import openai

        api_key = read_api_key(api_key_env, owner, error_type)
        # Held only for redacting messages; never in repr, pickles or returned objects.
        self._secret = api_key if api_key_env is not None else None
        self.client = openai.OpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=0
        )
        self._rng = random.Random()
        self._rng_lock = threading.Lock()

    def __repr__(self) -> str:
        return (
            f"OpenAIEndpoint(base_url={self.base_url!r}, model={self.model!r}, "
            f"api_key_env={self.api_key_env!r}, concurrency={self.concurrency})"
        )

    def __getstate__(self) -> dict:
        raise TypeError("OpenAIEndpoint is not picklable; pickle its owner's settings instead")

    def redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def backoff_s(self, attempt: int, retry_after: float | None) -> float:
        """Exponential backoff with jitter; a server's Retry-After (capped) is a floor."""
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * (2**attempt))
        with self._rng_lock:
            delay = ceiling / 2 + self._rng.uniform(0, ceiling / 2)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.retry_after_cap_s))
        return delay

    def call(self, request: Callable[[openai.OpenAI], R]) -> R:
        """One attempt of ``request(client)``; transient failures become ``Retryable``,
        refusals ``error_type`` (with the key redacted and no exception chained)."""
        import openai

        try:
            return request(self.client)
        except openai.APIConnectionError as exc:  # timeouts included
            raise Retryable(type(exc).__name__) from None
        except openai.APIStatusError as exc:
            status = exc.status_code
            if status in RETRYABLE_STATUS:
                raise Retryable(
                    f"HTTP {status}", retry_after_seconds(exc.response.headers)
                ) from None
            if status in (401, 403):
                raise self.error_type(
                    f"{self.label} at {self.base_url} rejected the credentials (HTTP {status}); "
                    f"check the key in ${self.api_key_env}"
                    if self.api_key_env
                    else f"{self.label} at {self.base_url} requires an API key (HTTP {status}); "
                    "set api_key_env to the environment variable that holds it"
                ) from None
            raise self.error_type(
                f"{self.label} at {self.base_url} rejected the request for model "
                f"{self.model!r} (HTTP {status}): {self.redact(str(exc.message))}"
            ) from None
        except (openai.APIResponseValidationError, ValueError):
            # A body that is not JSON (ValueError from the decoder) or not a completion.
            raise Retryable("malformed response body") from None

    def retry(self, attempt: Callable[[], T | None], what: str) -> T | None:
        """Run ``attempt`` until it returns a value, at most ``max_retries + 1`` times.

        ``attempt`` raises ``Retryable`` for a transport failure and returns None for an
        answer that arrived but could not be used (``what`` names it in the logs). Raises
        ``error_type`` when the last failure was the transport's: silently giving up on
        every item of an outage would corrupt the data. Returns None when the last
        failure was an unusable answer.
        """
        transport_failure: str | None = None
        for number in range(self.max_retries + 1):
            retry_after = None
            try:
                result = attempt()
            except Retryable as failure:
                transport_failure, retry_after = failure.reason, failure.retry_after
                reason = failure.reason
            else:
                if result is not None:
                    return result
                transport_failure, reason = None, f"unparseable {what} answer"
            if number == self.max_retries:
                break
            delay = self.backoff_s(number, retry_after)
            logger.warning(
                "%s %s: %s; retry %d/%d in %.2fs",
                self.label,
                self.model,
                self.redact(reason),
                number + 1,
                self.max_retries,
                delay,
            )
            time.sleep(delay)
        if transport_failure is not None:
            raise self.error_type(
                f"{self.label} at {self.base_url} still failing after {self.max_retries + 1} "
                f"attempts: {self.redact(transport_failure)}"
            )
        return None

    def map(
        self,
        fn: Callable[[T], R],
        items: Sequence[T],
        on_done: Callable[[], None] | None = None,
    ) -> list[R]:
        """``fn`` over ``items`` in input order, at most ``concurrency`` calls at a time.

        On the first error the queued items are dropped instead of hammering a failing
        endpoint, and the error is raised. ``on_done`` is called as each item finishes.
        """
        if not items:
            return []
        executor = ThreadPoolExecutor(max_workers=min(self.concurrency, len(items)))
        try:
            futures = [executor.submit(fn, item) for item in items]
            if on_done is not None:
                for future in as_completed(futures):
                    future.result()
                    on_done()
            return [future.result() for future in futures]
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
