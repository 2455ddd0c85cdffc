"""Plain-text or chat-template prompts, and the token that ends a response.

Every prompt of the pipeline (the policy's, the GRM's two) is a pure function of its inputs
and a ``PromptStyle``. ``plain`` is the bare text prompt. ``chat`` renders the prompt's
instructions as one user message with the tokenizer's chat template and
``add_generation_prompt=True``, then appends the prompt's response prefix (the GRM's
``Correct prediction:`` line) at the start of the assistant turn.

Tokenisation stays the project's contract: the prompt text is tokenised with the
tokenizer's default special tokens, the response with none, then ``end_id``. For ``chat``
the rendered text is what ``apply_chat_template`` renders; when the tokenizer adds the BOS
itself and the template writes it as text too, the text's BOS is left out, so
``tokenizer(prompt)`` gives ``apply_chat_template(..., tokenize=True)``'s ids (one BOS).
The response ends with the template's end-of-turn token (``<|im_end|>``, ``<|eot_id|>``...)
or, when the template has none, the EOS token; ``plain`` responses end with EOS.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

FORMATS = ("auto", "plain", "chat")
# Stands in for an assistant message when reading what a template writes after one.
_PROBE = "rlmec-probe-7d1f"


@dataclass(frozen=True)
class PromptStyle:
    """How prompts are rendered for one tokenizer. ``PLAIN`` needs no tokenizer."""

    chat: bool = False
    tokenizer: Any = field(default=None, compare=False, repr=False)
    # The token appended to every response (None: the tokenizer's EOS).
    end_id: int | None = None
    strip_bos: bool = False

    @property
    def name(self) -> str:
        return "chat" if self.chat else "plain"

    def wrap(self, instructions: str, response_prefix: str = "", *, plain: str) -> str:
        """``plain`` for the plain style; else ``instructions`` as the user message and
        ``response_prefix`` opening the assistant turn."""
        if not self.chat:
            return plain
        text = self.tokenizer.apply_chat_template(
            [{"role": "user", "content": instructions}],
            tokenize=False,
            add_generation_prompt=True,
        )
        bos = self.tokenizer.bos_token
        if self.strip_bos and bos and text.startswith(bos):
            text = text[len(bos) :]
        return text + response_prefix

    def response_end(self, tokenizer: Any) -> int:
        """The id that ends every response tokenised for ``tokenizer``."""
        end = self.end_id if self.end_id is not None else tokenizer.eos_token_id
        if end is None:
            raise ValueError("tokenizer has no eos token; a response needs one to end")
        return int(end)


PLAIN = PromptStyle()


def has_chat_template(tokenizer: Any) -> bool:
    return bool(getattr(tokenizer, "chat_template", None))


def _special_ids(tokenizer: Any) -> set[int]:
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    added = getattr(tokenizer, "added_tokens_decoder", {}) or {}
    ids.update(i for i, token in added.items() if getattr(token, "special", False))
    return ids


def end_of_turn_id(tokenizer: Any) -> int | None:
    """The special token the chat template writes right after an assistant message, or
    None (no template, or plain text there)."""
    if not has_chat_template(tokenizer):
        return None
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": _PROBE}],
        tokenize=False,
    )
    at = text.rfind(_PROBE)
    tail = text[at + len(_PROBE) :].lstrip() if at >= 0 else ""
    if not tail:
        return None
    ids = tokenizer(tail, add_special_tokens=False)["input_ids"]
    return int(ids[0]) if ids and ids[0] in _special_ids(tokenizer) else None


def _adds_bos(tokenizer: Any) -> bool:
    bos = getattr(tokenizer, "bos_token_id", None)
    if bos is None:
        return False
    return tokenizer("x")["input_ids"][:1] == [bos] and tokenizer("x", add_special_tokens=False)[
        "input_ids"
    ][:1] != [bos]


def prompt_style(tokenizer: Any, fmt: str = "auto") -> PromptStyle:
    """The style of ``prompts.format`` for ``tokenizer``: auto is chat when the tokenizer
    has a chat template, plain otherwise."""
    if fmt not in FORMATS:
        raise ValueError(f"prompts.format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    chat = has_chat_template(tokenizer) if fmt == "auto" else fmt == "chat"
    if not chat:
        return PLAIN
    if not has_chat_template(tokenizer):
        raise ValueError(
            "prompts.format is chat, but the tokenizer has no chat_template; use plain or auto"
        )
    end = end_of_turn_id(tokenizer)
    if end is None:
        end = tokenizer.eos_token_id
    if end is None:
        raise ValueError("the tokenizer has neither an end-of-turn nor an eos token")
    return PromptStyle(
        chat=True, tokenizer=tokenizer, end_id=int(end), strip_bos=_adds_bos(tokenizer)
    )
