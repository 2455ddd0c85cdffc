"""A stage-2 teacher behind any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp...).

Two calls per incorrect prediction, as in the reference: the first error step k, then a
minimal continuation from the kept prefix (steps 0..k-1 verbatim). The ``openai`` client
retries transient HTTP errors; unparseable answers are retried here (``OpenAIEndpoint.retry``).
The API key is read from the environment and never stored anywhere it could be printed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import TypeVar

from rlmec_core.config import ChatTeacherSection
from rlmec_core.openai_client import (
    NO_KEY_PLACEHOLDER,
    EndpointError,
    OpenAIEndpoint,
    Retryable,
)
from rlmec_core.teachers.base import Rewrite, split_steps
from rlmec_core.teachers.chat_prompts import (
    correction_messages,
    first_error_messages,
    parse_continuation,
    parse_first_error_step,
)

logger = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = ["NO_KEY_PLACEHOLDER", "ChatTeacher", "ChatTeacherError"]


class ChatTeacherError(EndpointError):
    """The teacher endpoint refused the request, or stayed unavailable through all retries."""


class ChatTeacher:
    """First error step and minimum-edit rewrite from an OpenAI-compatible chat model.

    ``settings`` is distill's teacher section whole (its fields and defaults are declared
    there once): ``api_key_env`` names the environment variable that holds the key (read
    once, here), ``None`` a local server without auth; ``max_retries`` counts retries after
    the first attempt, of each request through transient HTTP errors and of unparseable
    answers. Key handling, retries, backoff and the concurrency limit are
    ``openai_client.OpenAIEndpoint``'s.
    """

    name = "chat"
    # A sample that fails with these (after the retries) abstains: rlmec_core.distill.
    sample_errors = (ChatTeacherError,)

    def __init__(
        self,
        settings: ChatTeacherSection,
        *,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = 30.0,
    ) -> None:
        self.settings = settings
        self._backoff = {"backoff_base_s": backoff_base_s, "backoff_cap_s": backoff_cap_s}
        self._endpoint = OpenAIEndpoint.of_section(
            settings,
            **self._backoff,
            label="teacher",
            owner="ChatTeacher",
            error_type=ChatTeacherError,
        )

    @property
    def model(self) -> str:
        return self.settings.model

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"ChatTeacher(base_url={s.base_url!r}, model={s.model!r}, "
            f"api_key_env={s.api_key_env!r}, concurrency={s.concurrency})"
        )

    # Pickles (e.g. task caches) carry the settings only; the key is re-read on load.
    def __getstate__(self) -> dict:
        return {"settings": self.settings.model_dump(mode="json"), **self._backoff}

    def __setstate__(self, state: dict) -> None:
        state = dict(state)
        self.__init__(ChatTeacherSection.model_validate(state.pop("settings")), **state)

    def _complete(self, messages: list[dict]) -> str:
        """One chat completion's text (the client retries transient failures); a malformed
        or empty answer becomes ``Retryable``."""
        completion = self._endpoint.call(
            lambda client: client.chat.completions.create(
                model=self.model,
                messages=messages,
                temperature=0,
                max_tokens=self.settings.max_tokens,
            )
        )
        try:
            content = completion.choices[0].message.content
        except (AttributeError, IndexError, TypeError):
            raise Retryable("malformed response body") from None
        if not isinstance(content, str):
            raise Retryable("response without text content")
        return content

    def _ask(self, messages: list[dict], parse: Callable[[str], T | None], what: str) -> T | None:
        """Ask until ``parse`` reads the answer; None if it never could within the retries.

        Raises ``ChatTeacherError`` when the endpoint itself stayed unavailable: silently
        abstaining on every record of an outage would corrupt the distilled data.
        """
        answer = self._endpoint.retry(lambda: parse(self._complete(messages)), what)
        if answer is None:
            logger.warning("teacher %s: abstaining, %s answer never parsed", self.model, what)
        return answer

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
        return self._endpoint.map(lambda item: self.rewrite(*item), items)
