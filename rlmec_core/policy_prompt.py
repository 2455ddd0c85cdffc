"""How a problem is shown to the policy; shared by bootstrap, collect, RL and evaluation."""

from __future__ import annotations

from rlmec_core.prompt_format import PLAIN, PromptStyle

PROMPT_TEMPLATE = "Question: {question}\nAnswer:\n"
# The user message of the chat style: an instruct model is told the solution's shape.
CHAT_TEMPLATE = (
    "Solve the following problem step by step, one step per line, and end with a line "
    '"The answer is <answer>".\n\nQuestion: {question}'
)


def format_policy_prompt(question: str, style: PromptStyle | None = None) -> str:
    """The policy's prompt for ``question``; the solution follows it directly.

    ``style`` (``rlmec_core.prompt_format.prompt_style``): plain text (the default) or the
    tokenizer's chat template around an instruction and the question.
    """
    style = style or PLAIN
    question = question.strip()
    return style.wrap(
        CHAT_TEMPLATE.format(question=question), plain=PROMPT_TEMPLATE.format(question=question)
    )
