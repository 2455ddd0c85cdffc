"""A response's tokens as training sees them: prompt and response tokenised separately and
concatenated (``split_tokenize``, the one tokenisation of annotate, the trainer and the
GRM's scoring), and the solution step each response token belongs to (``token_steps``)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from transformers import PreTrainedTokenizerBase

from rlmec_core.trainers.sft import IGNORE_INDEX, tokenize_example


def split_tokenize(
    tokenizer: PreTrainedTokenizerBase, prompt: str, response: str, eos_id: int | None = None
) -> tuple[list[int], list[int]]:
    """``(prompt_ids, response_ids + [EOS])`` exactly as ``tokenize_example`` builds them
    (``eos_id``: the token ending the response, default the tokenizer's EOS)."""
    example = tokenize_example(tokenizer, prompt, response, max_length=sys.maxsize, eos_id=eos_id)
    n_prompt = sum(label == IGNORE_INDEX for label in example["labels"])
    return example["input_ids"][:n_prompt], example["input_ids"][n_prompt:]


def token_steps(
    tokenizer: PreTrainedTokenizerBase, text: str, token_ids: Sequence[int]
) -> list[int | None]:
    """The step (non-empty line index, as ``split_steps`` numbers them) of each token.

    ``token_ids`` is ``text``'s response ids, optionally ending with EOS (or another special
    token: a chat template's end of turn). A token belongs to the step of its first
    non-whitespace character; a whitespace-only token to the line it starts on (a step's
    closing newline belongs to that step). EOS and tokens on blank lines get None.
    """
    body = list(token_ids)
    if body and (body[-1] == tokenizer.eos_token_id or body[-1] in tokenizer.all_special_ids):
        body = body[:-1]
    spans = _token_spans(tokenizer, text, body)

    char_step: list[int | None] = []
    step = -1
    for line in text.splitlines(keepends=True):
        blank = not line.strip()
        if not blank:
            step += 1
        char_step.extend([None if blank else step] * len(line))

    steps: list[int | None] = []
    for start, end in spans:
        if start >= len(char_step):
            steps.append(None)
            continue
        visible = next((c for c in range(start, end) if not text[c].isspace()), start)
        steps.append(char_step[visible])
    return steps + [None] * (len(token_ids) - len(body))


def _token_spans(
    tokenizer: PreTrainedTokenizerBase, text: str, ids: list[int]
) -> list[tuple[int, int]]:
    """Character span of each token of ``ids`` (``text`` tokenised without special tokens)."""
    if tokenizer.is_fast:
        encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        if encoded["input_ids"] == ids:
            return [tuple(span) for span in encoded["offset_mapping"]]
    # Slow tokenizers have no offsets: the end of each token is the length of the decoded prefix.
    ends = [len(tokenizer.decode(ids[: n + 1])) for n in range(len(ids))]
    return list(zip([0, *ends[:-1]], ends, strict=True))
