"""Batched solution sampling from the policy (stage 1 collection and evaluation).

``model`` is a ``PreTrainedModel`` (``generate`` in this process) or a
``generation_server.ServedModel`` (an OpenAI-compatible completions endpoint, fed the same
prompt token ids).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from rlmec_core.decoding import decode, left_padded
from rlmec_core.generation_server import ServedModel
from rlmec_core.progress import progress as report_progress


@dataclass(frozen=True)
class GenerationResult:
    """``texts[i][j]`` is the j-th solution for prompt i (prompt and special tokens removed).

    ``n_generated_tokens`` counts the new tokens up to and including EOS, summed over all
    sequences, so ``n_generated_tokens / seconds`` is the decoding throughput.
    """

    texts: list[list[str]]
    n_generated_tokens: int
    seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.n_generated_tokens / self.seconds if self.seconds > 0 else 0.0


@torch.no_grad()
def generate_solutions(
    model: PreTrainedModel | ServedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[str],
    *,
    num_return_sequences: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
    batch_size: int,
    seed: int,
    progress: bool = True,
) -> GenerationResult:
    """Generate ``num_return_sequences`` solutions per prompt (``rlmec_core.decoding``).

    Prompts are processed in left-padded batches of ``batch_size`` prompts with the KV
    cache, a finished sample leaving its batch; ``temperature == 0`` means greedy
    decoding (then all sequences of a prompt are identical, so ask for one). Each batch reseeds from ``seed`` and its index, so the
    output depends only on the seed, the prompts and ``batch_size``.

    With a ``ServedModel`` each prompt is one request for ``num_return_sequences`` samples
    (``batch_size`` unused: the server batches concurrent requests), seeded from ``seed``
    and the prompt's index; the server's sampler decides the samples.
    """
    _check_sampling(num_return_sequences, batch_size, max_new_tokens, temperature, top_p)
    if isinstance(model, ServedModel):
        start = time.perf_counter()
        # Each prompt's ids as the batched hf path has them under its padding: special tokens.
        prompt_ids = [tokenizer(prompt)["input_ids"] for prompt in prompts]
        texts, n_tokens = model.complete(
            prompt_ids,
            n=num_return_sequences,
            temperature=temperature,
            top_p=top_p,
            max_tokens=max_new_tokens,
            seed=seed,
            progress=progress,
        )
        stripped = [[text.strip() for text in group] for group in texts]
        return GenerationResult(stripped, n_tokens, time.perf_counter() - start)
    if tokenizer.pad_token_id is None:
        raise ValueError("tokenizer has no pad token; load it with rlmec_core.modeling.load_policy")
    eos_ids = _eos_ids(model, tokenizer)

    was_training = model.training
    model.eval()
    texts: list[list[str]] = []
    n_tokens = 0
    start = time.perf_counter()
    batches = range(0, len(prompts), batch_size)
    for index, offset in enumerate(report_progress(batches, "generate", enabled=progress)):
        batch = prompts[offset : offset + batch_size]
        batch_texts, batch_tokens = _generate_batch(
            model,
            tokenizer,
            batch,
            seed=seed * 1_000_003 + index,  # each batch reseeds: see the docstring
            eos_ids=eos_ids,
            num_return_sequences=num_return_sequences,
            temperature=temperature,
            top_p=top_p,
            max_new_tokens=max_new_tokens,
        )
        texts += batch_texts
        n_tokens += batch_tokens
    if was_training:
        model.train()
    return GenerationResult(texts, n_tokens, time.perf_counter() - start)


def _check_sampling(
    num_return_sequences: int,
    batch_size: int,
    max_new_tokens: int,
    temperature: float,
    top_p: float,
) -> None:
    if num_return_sequences < 1 or batch_size < 1 or max_new_tokens < 1:
        raise ValueError(
            "num_return_sequences, batch_size and max_new_tokens must be >= 1, got "
            f"{num_return_sequences}, {batch_size}, {max_new_tokens}"
        )
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature >= 0 and 0 < top_p <= 1, got {temperature}, {top_p}")


def _eos_ids(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """The ids that end a solution: the model's generation config's, else the tokenizer's."""
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    return set(eos) if isinstance(eos, list) else {eos}


def _generate_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    batch: list[str],
    *,
    seed: int,
    eos_ids: set[int],
    num_return_sequences: int,
    temperature: float,
    top_p: float,
    max_new_tokens: int,
) -> tuple[list[list[str]], int]:
    """One batch's solutions (``num_return_sequences`` per prompt) and how many tokens were
    generated, sampled after seeding torch with ``seed``."""
    # Default special tokens (e.g. a BOS), exactly as SFT tokenised its prompts.
    ids = [tokenizer(prompt)["input_ids"] for prompt in batch]
    input_ids, attention_mask = left_padded(ids, tokenizer.pad_token_id, model.device)
    torch.manual_seed(seed)
    new_ids = decode(
        model,
        input_ids,
        attention_mask,
        max_new_tokens=max_new_tokens,
        eos_ids=eos_ids,
        temperature=temperature,
        top_p=top_p,
        num_return_sequences=num_return_sequences,
    )
    n_tokens = sum(len(row) for row in new_ids)  # up to and including EOS
    decoded = tokenizer.batch_decode(new_ids, skip_special_tokens=True)
    texts = []
    for i in range(len(batch)):
        group = decoded[i * num_return_sequences : (i + 1) * num_return_sequences]
        texts.append([t.strip() for t in group])
    return texts, n_tokens
