"""How a problem is shown to the policy; shared by bootstrap, collect, RL and evaluation."""

from __future__ import annotations

PROMPT_TEMPLATE = "Question: {question}\nAnswer:\n"


def format_policy_prompt(question: str) -> str:
    """The policy's prompt for ``question``; the solution follows it directly."""
    return PROMPT_TEMPLATE.format(question=question.strip())
