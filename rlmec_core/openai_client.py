"""One OpenAI-compatible endpoint: API key, retries, a concurrency limit.

Shared by the chat teacher (``teachers.chat``) and the completions generation backend
(``generation_server``). Transport failures are the ``openai`` client's to retry (its
``max_retries``): connection errors, timeouts and HTTP 408/409/429/5xx, with exponential
backoff and the server's ``Retry-After`` (up to two minutes). ``OpenAIEndpoint.retry``
retries only what the client does not: a malformed body and, for callers that parse
answers, an unusable answer. The API key is read from the environment variable the caller
*names*; it is kept only to redact messages and never reaches a repr, a pickle or a log.
``openai`` is imported when an endpoint is made, not with this module (it takes ~0.5 s).
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    import openai

    from rlmec_core.config import EndpointSection

logger = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

# Sent when api_key_env is None: local servers without auth ignore it, the client needs one.
NO_KEY_PLACEHOLDER = "no-key"
# The statuses the client retries (openai._base_client._should_retry): when one still
# comes back, the endpoint is unavailable rather than refusing the request.
TRANSIENT_STATUS = frozenset({408, 409, 429}) | frozenset(range(500, 600))


class EndpointError(RuntimeError):
    """The endpoint refused the request, or stayed unavailable through all retries."""


class Retryable(Exception):
    """An answer that arrived but cannot be read (a malformed body): worth another try."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _attempts(exc: openai.APIError) -> int:
    """How many attempts the client made before raising ``exc`` (its retry-count header)."""
    try:
        return int(exc.request.headers.get("x-stainless-retry-count", "0")) + 1
    except (AttributeError, ValueError):
        return 1


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
    after the first attempt: the client's of each request through transport failures, and
    ``retry``'s of malformed or unusable answers, which back off from ``backoff_base_s``
    up to ``backoff_cap_s``. ``concurrency`` bounds the requests ``map`` keeps in flight.
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
        self.label = label
        self.error_type = error_type
        import openai

        api_key = read_api_key(api_key_env, owner, error_type)
        # Held only for redacting messages; never in repr, pickles or returned objects.
        self._secret = api_key if api_key_env is not None else None
        self.client = openai.OpenAI(
            base_url=base_url, api_key=api_key, timeout=timeout_s, max_retries=max_retries
        )
        self._rng = random.Random()
        self._rng_lock = threading.Lock()

    @classmethod
    def of_section(
        cls,
        settings: EndpointSection,
        *,
        base_url: str | None = None,
        model: str | None = None,
        **policy: Any,
    ) -> OpenAIEndpoint:
        """The endpoint a config section describes; ``base_url`` and ``model`` where the
        caller knows them instead (a launched server), ``policy`` the other arguments."""
        return cls(
            base_url or settings.base_url or "",
            model or settings.model or "",
            api_key_env=settings.api_key_env,
            timeout_s=settings.timeout_s,
            max_retries=settings.max_retries,
            concurrency=settings.concurrency,
            **policy,
        )

    def __repr__(self) -> str:
        return (
            f"OpenAIEndpoint(base_url={self.base_url!r}, model={self.model!r}, "
            f"api_key_env={self.api_key_env!r}, concurrency={self.concurrency})"
        )

    def __getstate__(self) -> dict:
        raise TypeError("OpenAIEndpoint is not picklable; pickle its owner's settings instead")

    def redact(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def backoff_s(self, attempt: int) -> float:
        """Exponential backoff with jitter before retrying an unusable answer."""
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * (2**attempt))
        with self._rng_lock:
            return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def call(self, request: Callable[[openai.OpenAI], R]) -> R:
        """``request(client)``, retried by the client through transport failures; a
        malformed body becomes ``Retryable``, anything else ``error_type`` (with the key
        redacted and no exception chained)."""
        import openai

        try:
            return request(self.client)
        except openai.APIConnectionError as exc:  # timeouts included
            raise self._unavailable(type(exc).__name__, _attempts(exc)) from None
        except openai.APIStatusError as exc:
            status = exc.status_code
            if status in TRANSIENT_STATUS:
                raise self._unavailable(f"HTTP {status}", _attempts(exc)) from None
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
            # A body that is not JSON (ValueError from the decoder) or not a completion:
            # the client does not retry these.
            raise Retryable("malformed response body") from None

    def _unavailable(self, reason: str, attempts: int) -> EndpointError:
        return self.error_type(
            f"{self.label} at {self.base_url} still failing after {attempts} attempts: "
            f"{self.redact(reason)}"
        )

    def retry(self, attempt: Callable[[], T | None], what: str) -> T | None:
        """Run ``attempt`` until it returns a value, at most ``max_retries + 1`` times.

        Ours, not the client's: the client retries transport failures (inside ``call``),
        not an answer that arrived unusable. ``attempt`` raises ``Retryable`` for a
        malformed body and returns None for an answer that could not be used (``what``
        names it in the logs). Raises ``error_type`` when the last failure was a malformed
        body, as for an outage: silently giving up on every item would corrupt the data.
        Returns None when the last failure was an unusable answer.
        """
        malformed: str | None = None
        for number in range(self.max_retries + 1):
            try:
                result = attempt()
            except Retryable as failure:
                malformed = reason = failure.reason
            else:
                if result is not None:
                    return result
                malformed, reason = None, f"unparseable {what} answer"
            if number == self.max_retries:
                break
            delay = self.backoff_s(number)
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
        if malformed is not None:
            raise self._unavailable(malformed, self.max_retries + 1)
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
