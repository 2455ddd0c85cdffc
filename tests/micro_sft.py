"""The micro bootstrap's settings and SFT examples, shared by the bootstrap and the
early-stopping tests (their data and tokenizer are conftest's ``micro_splits`` and
``micro_tokenizer``)."""

from __future__ import annotations

from rlmec_core.config import BootstrapSection
from rlmec_core.policy_prompt import format_policy_prompt
from tests.tiny_models import DEFAULT_SIZES, tiny_llama

# The policy one_layer_llama builds (tiny_llama's sizes, one layer, a 300-token vocabulary),
# trained from scratch by bootstrap_policy for one epoch at a high rate.
MICRO = BootstrapSection(
    vocab_size=300, num_layers=1, **DEFAULT_SIZES, epochs=1.0, learning_rate=3e-3,
    batch_size=16, save_steps=2, logging_steps=1, eval_max_new_tokens=24, eval_batch_size=16,
)  # fmt: skip


def sft_examples(splits, n: int) -> list[dict[str, str]]:
    """The first ``n`` train problems as SFT examples: policy prompt and gold solution."""
    rows = splits["train"].select(range(n))
    return [
        {"prompt": format_policy_prompt(r["question"]), "response": r["gold_solution"]}
        for r in rows
    ]


def one_layer_llama(tokenizer):
    return tiny_llama(tokenizer, layers=1)
