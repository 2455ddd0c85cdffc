"""Benchmark: stage 4's batched scoring vs one sequence at a time, at the stage's shapes.

    python benchmarks/annotate_batching.py [--problems 64 --per-problem 4 --repeat 3
        --budgets 1024,4096 --batch-size 32 --threads 1 --device cpu]

Scores the samples the way stage 4 does, with the models and texts of the default offline
run (``configs/tiny.yaml``): a byte-level BPE tokenizer trained on policy prompts and
solutions (vocab 1024), two random tiny Llamas (hidden 96, 3 layers, 4 heads, intermediate
384) for the GRM and the reference policy, synthetic problems of 2-4 steps and, per
problem, ``--per-problem`` distinct predictions (its gold solution, then copies with a
wrong number in step 0, 1, ...: incorrect samples that leave the problem at different
steps, as the policy's do). Per sample: the GRM log-probs of ``y`` + EOS after
``rewrite_prompt(x, s*, y)`` (~300-450 tokens), turned into token rewards, and the
reference log-probs of the same ids after ``format_policy_prompt(x)`` (~40-70 tokens).

Methods, each run in its own fresh subprocess so memory peaks cannot mix, interleaved
round by round (``--repeat`` rounds, the order rotated each round); figures are medians:

- ``sequential``: ``tests.naive_logprobs.sequential_response_logprobs`` (one unpadded sequence per
  forward, full float32 log-softmax over the vocabulary): the reference;
- ``batched``: ``response_logprobs.batched_response_logprobs`` as stage 4 calls it (shared prompt
  prefixes run once, right-padded batches of the device's default token budget);
- ``batched@N``: the same with a token budget of N positions per batch (``--budgets``);
- ``batched, unshared``: the default budget without prefix sharing.

Memory on CPU is the growth of the process's peak resident set size
(``getrusage(RUSAGE_SELF).ru_maxrss``) during scoring, over its value right after a short
warm-up, i.e. the extra memory the scoring needed at its worst moment; on CUDA it is
``torch.cuda.max_memory_allocated`` during scoring. Throughput counts scored response tokens
(EOS included) of both models per second of scoring (wall clock); "CPU s" is the process's
CPU time for it, steadier than the wall clock when other work shares the cores. Exits
non-zero if any method's log-probs differ from the sequential ones by more than 1e-4.
"""

from __future__ import annotations

import argparse
import json
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from rlmec_core.data.synthetic import generate_problem  # noqa: E402
from rlmec_core.grm_data import rewrite_prompt  # noqa: E402
from rlmec_core.modeling import build_tiny_llama  # noqa: E402
from rlmec_core.policy_prompt import format_policy_prompt  # noqa: E402
from rlmec_core.response_logprobs import (  # noqa: E402
    ACCELERATOR_TOKEN_BUDGET,
    CPU_TOKEN_BUDGET,
    batched_response_logprobs,
)
from rlmec_core.response_tokens import split_tokenize  # noqa: E402
from rlmec_core.rewards import token_rewards  # noqa: E402
from rlmec_core.tokenizer import train_tokenizer  # noqa: E402
from tests.naive_logprobs import sequential_response_logprobs  # noqa: E402

TOLERANCE = 1e-4
SEQUENTIAL, BATCHED, UNSHARED = "sequential", "batched", "batched, unshared"
# configs/tiny.yaml: data.synthetic and bootstrap.
PROBLEM_SHAPE = {"min_steps": 2, "max_steps": 4, "max_operand": 10, "max_value": 100}
TOKENIZER_TEXTS = 2000  # training problems the tokenizer is trained on, as bootstrap does
_LAST_NUMBER = re.compile(r"(\d+)(\D*)$")


def _max_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def _predictions(gold: str, k: int, rng: random.Random) -> list[str]:
    """``gold`` and ``k - 1`` distinct incorrect copies, the j-th wrong from step j - 1 on."""
    lines = gold.split("\n")
    out = [gold]
    for j in range(1, k):
        wrong = list(lines)
        step = (j - 1) % len(lines)
        match = _LAST_NUMBER.search(wrong[step])
        if match is None:  # every synthetic step ends in its result; keep the guard anyway
            wrong[step] += " 1"
        else:
            value = int(match.group(1)) + rng.randint(1, 9) + j // len(lines)
            wrong[step] = wrong[step][: match.start()] + str(value) + match.group(2)
        out.append("\n".join(wrong))
    return out


def _workload(args: argparse.Namespace):
    """Tokenizer, the two models and the (prompt ids, response ids) pairs, from fixed seeds."""
    rng = random.Random(0)
    train = [generate_problem(rng, **PROBLEM_SHAPE) for _ in range(TOKENIZER_TEXTS)]
    tokenizer = train_tokenizer(
        (format_policy_prompt(p.question) + p.gold_solution for p in train), args.vocab
    )
    grm, ref = (
        build_tiny_llama(
            tokenizer,
            hidden_size=args.hidden,
            num_layers=args.layers,
            num_heads=args.heads,
            intermediate_size=4 * args.hidden,
            max_position_embeddings=1024,
            seed=seed,
        )
        .to(args.device)
        .eval()
        for seed in (1, 2)
    )
    grm_pairs, ref_pairs = [], []
    for _ in range(args.problems):
        p = generate_problem(rng, **PROBLEM_SHAPE)
        for y in _predictions(p.gold_solution, args.per_problem, rng):
            grm_pairs.append(
                split_tokenize(tokenizer, rewrite_prompt(p.question, p.gold_solution, y), y)
            )
            ref_pairs.append(split_tokenize(tokenizer, format_policy_prompt(p.question), y))
    return tokenizer, grm, ref, grm_pairs, ref_pairs


def _batched_options(method: str) -> dict:
    if method == BATCHED:
        return {}
    if method == UNSHARED:
        return {"share_prefixes": False}
    return {"token_budget": int(method.removeprefix(f"{BATCHED}@"))}


def _score(method: str, args, tokenizer, grm, ref, grm_pairs, ref_pairs):
    out = []
    for model, pairs in ((grm, grm_pairs), (ref, ref_pairs)):
        prompts, responses = [p for p, _ in pairs], [r for _, r in pairs]
        if method == SEQUENTIAL:
            lp = sequential_response_logprobs(model, prompts, responses)
        else:
            lp = batched_response_logprobs(
                model,
                prompts,
                responses,
                pad_id=tokenizer.pad_token_id,
                batch_size=args.batch_size,
                **_batched_options(method),
            )
        out.append(lp)
    # Rewards from the GRM's probabilities, as stage 4 does (the cost is negligible).
    for lp in out[0]:
        token_rewards(torch.tensor(lp).exp(), False)
    return out


def run_child(args: argparse.Namespace) -> None:
    if args.threads:
        torch.set_num_threads(args.threads)
    tokenizer, grm, ref, grm_pairs, ref_pairs = _workload(args)
    # Warm-up on a few samples, so one-off allocations are part of the setup, not the run.
    warm = max(2, args.per_problem)
    _score(args.child, args, tokenizer, grm, ref, grm_pairs[:warm], ref_pairs[:warm])
    cuda = args.device.startswith("cuda")
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    setup_rss = _max_rss_mib()
    start, cpu_start = time.perf_counter(), time.process_time()
    grm_lp, ref_lp = _score(args.child, args, tokenizer, grm, ref, grm_pairs, ref_pairs)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    result = {
        "seconds": seconds,
        "cpu_seconds": time.process_time() - cpu_start,
        "tokens": sum(len(r) for _, r in grm_pairs) + sum(len(r) for _, r in ref_pairs),
        "samples": len(grm_pairs),
        "vocab": len(tokenizer),
        "mean_response": statistics.mean(len(r) for _, r in ref_pairs),
        "mean_grm_prompt": statistics.mean(len(p) for p, _ in grm_pairs),
        "mean_ref_prompt": statistics.mean(len(p) for p, _ in ref_pairs),
        "above_setup_mib": _max_rss_mib() - setup_rss,
        "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20 if cuda else None,
        "threads": torch.get_num_threads(),
        "logprobs": [grm_lp, ref_lp],
    }
    Path(args.out).write_text(json.dumps(result))


def _max_diff(a: list[list[list[float]]], b: list[list[list[float]]]) -> float:
    worst = 0.0
    for x_model, y_model in zip(a, b, strict=True):
        for x, y in zip(x_model, y_model, strict=True):
            if len(x) != len(y):
                return float("inf")
            worst = max([worst, *(abs(u - v) for u, v in zip(x, y, strict=True))])
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--problems", type=int, default=64)
    parser.add_argument("--per-problem", type=int, default=4, help="samples per problem (k)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; figures are medians")
    parser.add_argument(
        "--budgets", default="1024,4096", help="extra token budgets to compare; '' for none"
    )
    parser.add_argument("--batch-size", type=int, default=32, help="max rows (annotate's)")
    parser.add_argument("--hidden", type=int, default=96)
    parser.add_argument("--layers", type=int, default=3)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=1024)
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads (0: torch's default); models this small gain little from more "
        "and lose much when other work shares the cores",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        run_child(args)
        return 0
    if args.repeat < 1 or args.problems < 1 or args.per_problem < 1:
        parser.error("--repeat, --problems and --per-problem must be >= 1")

    budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
    methods = [SEQUENTIAL, BATCHED, *(f"{BATCHED}@{b}" for b in budgets), UNSHARED]
    runs: dict[str, list[dict]] = {m: [] for m in methods}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(args.repeat):
            shift = round_ % len(methods)
            for method in methods[shift:] + methods[:shift]:
                out = Path(tmp) / "result.json"
                subprocess.run(
                    [sys.executable, __file__, *sys.argv[1:], "--child", method, "--out", str(out)],
                    check=True,
                )
                runs[method].append(json.loads(out.read_text()))

    reference = runs[SEQUENTIAL][0]
    first = runs[BATCHED][0]
    default_budget = str(CPU_TOKEN_BUDGET if args.device == "cpu" else ACCELERATOR_TOKEN_BUDGET)
    print(
        f"{first['samples']} samples ({args.problems} problems x {args.per_problem}), mean "
        f"response {first['mean_response']:.0f} tokens, mean prompt GRM "
        f"{first['mean_grm_prompt']:.0f} / reference {first['mean_ref_prompt']:.0f}; Llama "
        f"hidden {args.hidden}, {args.layers} layers, vocab {first['vocab']}; device "
        f"{args.device}, {first['threads']} threads, batch size {args.batch_size}; "
        f"median of {args.repeat} interleaved runs"
    )
    cuda = args.device.startswith("cuda")
    memory = "CUDA peak MiB" if cuda else "peak RSS +MiB"
    print(
        f"{'method':<20}{'token budget':>14}{'seconds':>10}{'CPU s':>8}{'tokens/s':>10}"
        f"{memory:>16}{'max |diff|':>12}"
    )
    worst = 0.0
    rates, cpu = {}, {}
    for method in methods:
        rs = runs[method]
        seconds = statistics.median(r["seconds"] for r in rs)
        cpu[method] = statistics.median(r["cpu_seconds"] for r in rs)
        rates[method] = [r["tokens"] / r["seconds"] for r in rs]
        mem = statistics.median(r["cuda_peak_mib"] if cuda else r["above_setup_mib"] for r in rs)
        if method == SEQUENTIAL:
            budget, diff = "-", "-"
        else:
            budget = default_budget if "@" not in method else method.split("@")[1]
            value = max(_max_diff(r["logprobs"], reference["logprobs"]) for r in rs)
            worst = max(worst, value)
            diff = f"{value:.1e}"
        print(
            f"{method:<20}{budget:>14}{seconds:>10.2f}{cpu[method]:>8.2f}"
            f"{statistics.median(rates[method]):>10.0f}"
            f"{mem:>16.1f}{diff:>12}"
        )
    per_round = [b / s for b, s in zip(rates[BATCHED], rates[SEQUENTIAL], strict=True)]
    speedup = statistics.median(rates[BATCHED]) / statistics.median(rates[SEQUENTIAL])
    print(
        f"speed-up (batched / sequential, median tokens/s): {speedup:.2f}x "
        f"(per round: {', '.join(f'{r:.2f}x' for r in per_round)}); "
        f"CPU time: {cpu[SEQUENTIAL] / cpu[BATCHED]:.2f}x"
    )
    print(f"max |log-prob difference| vs sequential: {worst:.2e}")
    return 0 if worst <= TOLERANCE else 1


if __name__ == "__main__":
    sys.exit(main())
