"""Benchmark: SmolLM2-135M-Instruct's tokens/s in each heavy stage, against this machine's
fp32 matmul peak.

    rlmec fetch-model && python benchmarks/smollm_throughput.py [--batch 16 --new 64]

The limit: a generated (or scored) token costs about 2 × parameters FLOPs, a trained one
6 × (forward, and a backward of twice its cost); the machine's peak is the best fp32
``torch.mm`` rate of 2048² matrices on every core torch uses. The ratio of a stage's
tokens/s to peak / FLOPs-per-token is how close the stage comes to what the cores can do.

Rows: collect's sampling (``generate_solutions``, k samples per prompt, KV cache), the
GRM's rewrites (``greedy_continuations`` after the rewrite prompt, as annotate calls it), annotate's scoring (one
no-grad forward over GRM prompt + response, annotate's ``batched_response_logprobs``) and a
train_policy step (forward and backward of the response log-probs over prompt + y, AdamW
step), in full fine-tuning and with LoRA (4 × parameters FLOPs a trained token: no weight
gradients for the frozen base), and train_grm's SFT step on the rewrite examples (GRM prompt
+ rewrite), with the model's own loss (logits at every position) and with the project's
lean loss (the output head at the trained positions only). Each is timed after one warm-up
call (the best of two timed calls), on the same synthetic problems; with ``--grm-batch B``
the GRM's rewrites run on B problems, timed at ``--batch`` and at B (about 17 minutes here
for B = 64).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch.nn.utils.rnn import pad_sequence  # noqa: E402


def matmul_peak_flops(size: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


REPEATS = 2  # timed calls after the warm-up; the best counts (this machine's CPU steal varies)


def timed(fn):
    fn()  # warm-up
    best = float("inf")
    for _ in range(REPEATS):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return out, best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="an HF folder or GGUF (default: the fetched SmolLM2)")
    parser.add_argument("--batch", type=int, default=16, help="prompts per batch")
    parser.add_argument("--k", type=int, default=4, help="collect's samples per prompt")
    parser.add_argument("--new", type=int, default=64, help="max new tokens")
    parser.add_argument("--train-batch", type=int, default=8)
    parser.add_argument(
        "--grm-batch",
        type=int,
        default=0,
        help="also time the GRM's rewrites at this batch, on as many rows (0: skip)",
    )
    args = parser.parse_args()

    from transformers import Trainer, TrainingArguments

    from flows.fetch_model import default_cache
    from rlmec_core.config import LoraSection
    from rlmec_core.data.synthetic import synthetic_splits
    from rlmec_core.generation import generate_solutions
    from rlmec_core.gguf_model import dequantized_folder, is_gguf_source
    from rlmec_core.grm import greedy_continuations
    from rlmec_core.grm_data import rewrite_prompt
    from rlmec_core.logprobs import response_logprobs
    from rlmec_core.modeling import load_policy
    from rlmec_core.policy_prompt import format_policy_prompt
    from rlmec_core.prompt_format import prompt_style
    from rlmec_core.response_logprobs import batched_response_logprobs
    from rlmec_core.trainers.lean import IGNORE_INDEX, LeanCausalLMTrainer
    from rlmec_core.trainers.lora import wrap_lora
    from rlmec_core.trainers.sft import ResponseOnlyCollator

    source = Path(args.model) if args.model else default_cache() / "smollm2-135m-instruct"
    folder = source
    if is_gguf_source(source):
        folder, _ = dequantized_folder(source, Path("/tmp/rlmec-bench-dequantized"))
    model, tokenizer = load_policy(folder)
    style = prompt_style(tokenizer, "chat")
    n_params = sum(p.numel() for p in model.parameters())
    peak = matmul_peak_flops()
    problems = list(synthetic_splits(0, args.batch, 1, 1)["train"])
    rows = _wrong_rows(problems)
    prompts = [format_policy_prompt(p["question"], style) for p in problems]
    results = []

    sampled, seconds = timed(
        lambda: generate_solutions(
            model, tokenizer, prompts, num_return_sequences=args.k, temperature=0.7,
            top_p=0.95, max_new_tokens=args.new, batch_size=args.batch, seed=0, progress=False,
        )
    )  # fmt: skip
    # The prompts are work too: each is run once for its k samples.
    prompt_tokens = sum(len(tokenizer(prompt)["input_ids"]) for prompt in prompts)
    results.append(
        (
            "collect sampling",
            sampled.n_generated_tokens / seconds,
            2,
            (prompt_tokens + sampled.n_generated_tokens) / seconds,
        )
    )

    # The GRM's rewrite call as annotate makes it (greedy_continuations after the rewrite
    # prompt): the untrained SmolLM2 here would not write a parseable verdict, so timing
    # grm_rewrites end to end would skip most rewrites. Generated tokens are counted from
    # the returned text plus its EOS, at most --new per row.
    # With --grm-batch B, the GRM's call runs on B rows, at batch --batch and at batch B:
    # what a larger decoding batch buys on this CPU.
    grm_rows = rows
    if args.grm_batch > args.batch:
        grm_rows = _wrong_rows(list(synthetic_splits(0, args.grm_batch, 1, 1)["train"]))
    rewrite_ids = [
        tokenizer(rewrite_prompt(r["question"], r["gold_solution"], r["prediction"], style))[
            "input_ids"
        ]
        for r in grm_rows
    ]
    prompt_tokens = sum(len(ids) for ids in rewrite_ids)
    for batch in sorted({args.batch, max(args.grm_batch, args.batch)}):
        texts, seconds = timed(
            lambda batch=batch: greedy_continuations(
                model, tokenizer, rewrite_ids, max_new_tokens=args.new, batch_size=batch,
                progress=False,
            )
        )  # fmt: skip
        generated = sum(
            min(args.new, len(tokenizer(t, add_special_tokens=False)["input_ids"]) + 1)
            for t in texts
        )
        label = "GRM rewrites" if batch == args.batch else f"GRM rewrites, batch {batch}"
        results.append((label, generated / seconds, 2, (prompt_tokens + generated) / seconds))

    end = style.response_end(tokenizer)
    grm_prompts = [
        tokenizer(rewrite_prompt(r["question"], r["gold_solution"], r["prediction"], style))[
            "input_ids"
        ]
        for r in rows
    ]
    responses = [
        tokenizer(r["prediction"], add_special_tokens=False)["input_ids"] + [end] for r in rows
    ]
    # annotate's own batched pass (prefix sharing, chunked log-softmax), as the stage runs it
    with torch.no_grad():
        _, seconds = timed(
            lambda: batched_response_logprobs(
                model, grm_prompts, responses, pad_id=tokenizer.pad_token_id,
                batch_size=args.batch,
            )
        )  # fmt: skip
    scored = sum(len(p) + len(r) for p, r in zip(grm_prompts, responses, strict=True))
    results.append(("annotate scoring", scored / seconds, 2, None))

    policy_prompts = [tokenizer(prompt)["input_ids"] for prompt in prompts][: args.train_batch]
    ids, attention, mask = _right_padded(
        policy_prompts, responses[: args.train_batch], tokenizer.pad_token_id
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-6)
    model.train()

    def step() -> None:
        logprobs = response_logprobs(model, ids, attention, mask)
        (-logprobs.sum() / mask.sum()).backward()
        optimizer.step()
        optimizer.zero_grad()

    _, seconds = timed(step)
    results.append(("train_policy step", int(attention.sum()) / seconds, 6, None))

    # train_grm's step: SFT on GRM prompt + rewrite, the loss as HF's model computes it and
    # as the stage's trainer does (rlmec_core.trainers.lean).
    collate = ResponseOnlyCollator(tokenizer.pad_token_id)
    sft_rows = [
        {"input_ids": p + r, "labels": [IGNORE_INDEX] * len(p) + r}
        for p, r in zip(grm_prompts, responses, strict=True)
    ][: args.train_batch]
    sft_batch = collate(sft_rows)
    sft_tokens = int(sft_batch["attention_mask"].sum())
    for label, trainer_class in (("model's own loss", Trainer), ("lean loss", LeanCausalLMTrainer)):
        trainer = trainer_class(
            model=model,
            args=TrainingArguments(
                output_dir="/tmp/rlmec-bench-trainer", report_to="none", use_cpu=True
            ),
        )

        def sft_step(trainer=trainer) -> None:
            trainer.compute_loss(model, dict(sft_batch)).backward()
            optimizer.step()
            optimizer.zero_grad()

        _, seconds = timed(sft_step)
        results.append((f"train_grm step, {label}", sft_tokens / seconds, 6, None))

    # The same step with LoRA (the config's default section: r 16, every linear layer): the
    # frozen weights get no gradient, so a trained token costs about 4 × parameters FLOPs.
    model = wrap_lora(model, LoraSection())
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-6)
    model.train()
    _, seconds = timed(step)
    results.append(("train_policy step, LoRA r16", int(attention.sum()) / seconds, 4, None))

    print(f"SmolLM2: {n_params / 1e6:.1f}M parameters; fp32 matmul peak {peak / 1e9:.1f} GFLOP/s")
    print(f"threads {torch.get_num_threads()}, batch {args.batch}, k {args.k}, new {args.new}\n")
    # The last column counts a generation's prompt tokens too (2N FLOPs each, run once):
    # how busy the cores were, where the ratio counts only what came out.
    print(
        "| stage | tokens/s | limit tokens/s (peak / FLOPs per token) | ratio "
        "| ratio with prompt tokens |"
    )
    print("|---|---|---|---|---|")
    for name, rate, factor, with_prompt in results:
        limit = peak / (factor * n_params)
        busy = f"{with_prompt / limit:.1%}" if with_prompt is not None else "–"
        print(f"| {name} | {rate:.0f} | {limit:.0f} ({factor}N) | {rate / limit:.1%} | {busy} |")


def _wrong_rows(problems: list[dict]) -> list[dict]:
    """Each problem with a wrong prediction: its gold solution, the first result off by one."""
    rows = []
    for p in problems:
        lines = p["gold_solution"].split("\n")
        head, _, tail = lines[0].rpartition("= ")
        number = tail.split(" ")[0]
        if number.isdigit():
            lines[0] = f"{head}= {int(number) + 1}{tail[len(number) :]}"
        rows.append({**p, "prediction": "\n".join(lines)})
    return rows


def _right_padded(prompts, responses, pad_id):
    """ids, attention and response mask of prompt + response rows, padded on the right."""
    rows = [torch.tensor(p + r) for p, r in zip(prompts, responses, strict=True)]
    ids = pad_sequence(rows, batch_first=True, padding_value=pad_id)
    attention = pad_sequence([torch.ones_like(row) for row in rows], batch_first=True)
    mask = pad_sequence(
        [
            torch.tensor([0] * len(p) + [1] * len(r))
            for p, r in zip(prompts, responses, strict=True)
        ],
        batch_first=True,
    )
    return ids, attention, mask


if __name__ == "__main__":
    main()
