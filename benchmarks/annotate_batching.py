"""Benchmark: stage 4's batched scoring vs one sequence at a time.

    python benchmarks/annotate_batching.py [--samples 128 --batch-size 16 --hidden 128
        --layers 4 --vocab 512 --steps 6 --threads 0 --device cpu]

Scores ``--samples`` synthetic solutions (~180 tokens each at the defaults) the way stage 4
does: GRM log-probs of ``y`` after the GRM's rewrite prompt, turned into token rewards, and
reference log-probs of ``y`` after the policy prompt, with two small random Llamas. Modes:

- ``batched``: ``annotate.batched_response_logprobs`` (length-sorted, right-padded batches,
  output head applied only at response positions, a chunk of rows at a time);
- ``sequential``: ``annotate.sequential_response_logprobs`` (one unpadded sequence per
  forward, full float32 log-softmax over the vocabulary).

Each mode runs in its own fresh subprocess so their memory peaks cannot mix. Memory on CPU is
the process's peak resident set size (``getrusage(RUSAGE_SELF).ru_maxrss``): "peak RSS" is
the whole process (Python, torch, both models, the data), "above setup" is how much the
scoring raised that peak over its value right before scoring started (after a short warm-up),
so it is the extra memory the scoring needed at its worst moment, as the OS saw it. On CUDA
it is ``torch.cuda.max_memory_allocated`` during scoring instead. Throughput counts scored
response tokens (EOS included) of both models per second of scoring. Exits non-zero if the
two modes' log-probs differ by more than 1e-4.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from rlmec_core.annotate import (  # noqa: E402
    batched_response_logprobs,
    sequential_response_logprobs,
    split_tokenize,
)
from rlmec_core.data.synthetic import generate_problem  # noqa: E402
from rlmec_core.grm_data import rewrite_prompt  # noqa: E402
from rlmec_core.modeling import build_tiny_llama  # noqa: E402
from rlmec_core.policy_prompt import format_policy_prompt  # noqa: E402
from rlmec_core.rewards import token_rewards  # noqa: E402
from rlmec_core.tokenizer import train_tokenizer  # noqa: E402

MODES = ("batched", "sequential")
TOLERANCE = 1e-4


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _workload(args: argparse.Namespace):
    """Tokenizer, two models and the (prompt, response) id lists, all from fixed seeds."""
    rng = random.Random(0)
    problems = [
        generate_problem(rng, min_steps=args.steps, max_steps=args.steps + 2, max_value=500)
        for _ in range(args.samples)
    ]
    texts = [p.question for p in problems] + [p.gold_solution for p in problems]
    tokenizer = train_tokenizer(texts, vocab_size=args.vocab)
    models = [
        build_tiny_llama(
            tokenizer,
            hidden_size=args.hidden,
            num_layers=args.layers,
            num_heads=4,
            intermediate_size=4 * args.hidden,
            max_position_embeddings=2048,
            seed=seed,
        )
        .to(args.device)
        .eval()
        for seed in (1, 2)
    ]
    grm_pairs, ref_pairs = [], []
    for i, p in enumerate(problems):
        # A wrong-looking y: this problem's solution with another problem's answer line.
        other = problems[(i + 1) % len(problems)]
        y = p.gold_solution.rsplit("\n", 1)[0] + "\n" + other.gold_solution.rsplit("\n", 1)[1]
        grm_pairs.append(
            split_tokenize(tokenizer, rewrite_prompt(p.question, p.gold_solution, y), y)
        )
        ref_pairs.append(split_tokenize(tokenizer, format_policy_prompt(p.question), y))
    return tokenizer, models, grm_pairs, ref_pairs


def _score(mode: str, args, tokenizer, grm, ref, grm_pairs, ref_pairs):
    out = []
    for model, pairs in ((grm, grm_pairs), (ref, ref_pairs)):
        prompts, responses = [p for p, _ in pairs], [r for _, r in pairs]
        if mode == "batched":
            lp = batched_response_logprobs(
                model, prompts, responses, pad_id=tokenizer.pad_token_id, batch_size=args.batch_size
            )
        else:
            lp = sequential_response_logprobs(model, prompts, responses)
        out.append(lp)
    # Rewards from the GRM's probabilities, as stage 4 does (the cost is negligible).
    for lp in out[0]:
        token_rewards(torch.tensor(lp).exp(), False)
    return out


def run_child(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer, (grm, ref), grm_pairs, ref_pairs = _workload(args)
    # Warm-up on two samples, so one-off allocations are part of the setup, not the run.
    _score(args.child, args, tokenizer, grm, ref, grm_pairs[:2], ref_pairs[:2])
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    setup_rss = _max_rss_mib()
    start = time.perf_counter()
    grm_lp, ref_lp = _score(args.child, args, tokenizer, grm, ref, grm_pairs, ref_pairs)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = {
        "mode": args.child,
        "seconds": seconds,
        "tokens": sum(len(r) for _, r in grm_pairs) + sum(len(r) for _, r in ref_pairs),
        "mean_response_tokens": sum(len(r) for _, r in ref_pairs) / len(ref_pairs),
        "mean_grm_prompt_tokens": sum(len(p) for p, _ in grm_pairs) / len(grm_pairs),
        "peak_rss_mib": _max_rss_mib(),
        "above_setup_mib": _max_rss_mib() - setup_rss,
        "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "threads": torch.get_num_threads(),
        "grm_logprobs": grm_lp,
        "ref_logprobs": ref_lp,
    }
    Path(args.out).write_text(json.dumps(result))


def _max_diff(a: list[list[float]], b: list[list[float]]) -> float:
    if [len(x) for x in a] != [len(x) for x in b]:
        return float("inf")
    pairs = (pair for x, y in zip(a, b, strict=True) for pair in zip(x, y, strict=True))
    return max((abs(u - v) for u, v in pairs), default=0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--samples", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--steps", type=int, default=6, help="solution steps (length)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads; 0: default")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return 0

    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in MODES:
            out = Path(tmp) / f"{mode}.json"
            subprocess.run(
                [sys.executable, __file__, *sys.argv[1:], "--child", mode, "--out", str(out)],
                check=True,
            )
            results[mode] = json.loads(out.read_text())

    b, s = results["batched"], results["sequential"]
    diff = max(
        _max_diff(b["grm_logprobs"], s["grm_logprobs"]),
        _max_diff(b["ref_logprobs"], s["ref_logprobs"]),
    )
    print(
        f"{args.samples} samples, mean response {b['mean_response_tokens']:.0f} tokens "
        f"(GRM prompt {b['mean_grm_prompt_tokens']:.0f}), Llama hidden {args.hidden}, "
        f"{args.layers} layers, vocab {args.vocab}, device {args.device}, "
        f"{b['threads']} threads, batch size {args.batch_size}"
    )
    memory = "CUDA peak MiB" if args.device.startswith("cuda") else "peak RSS MiB (above setup)"
    print(f"{'mode':<12}{'seconds':>10}{'tokens/s':>12}   {memory}")
    for r in (b, s):
        if r["cuda_peak_mib"] is not None:
            mem = f"{r['cuda_peak_mib']:.1f}"
        else:
            mem = f"{r['peak_rss_mib']:.0f} (+{r['above_setup_mib']:.0f})"
        rate = r["tokens"] / r["seconds"]
        print(f"{r['mode']:<12}{r['seconds']:>10.2f}{rate:>12.0f}   {mem}")
    print(f"speed-up (batched / sequential tokens/s): {s['seconds'] / b['seconds']:.2f}x")
    print(f"max |log-prob difference| between modes: {diff:.2e}")
    return 0 if diff <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
