"""Benchmark: one RLMEC policy step against one plain supervised step on the same batch.

    python benchmarks/train_step.py [--hidden 128 --layers 4 --vocab 512 --batch 8
                                     --prompt-len 40 --response-len 150 --steps 6 --seed 0]

Both steps run through the Hugging Face ``Trainer`` exactly as training does, on the same
``batch`` samples: the RLMEC step is ``RlmecTrainer`` (variant ``rlmec``: a forward pass over
prompt + y and one over prompt + ŷ, lean log-probs, ``L_RL + L_IM``); the supervised step is
the project's SFT trainer (``LeanCausalLMTrainer``, as bootstrap and gold_sft train) with the
causal-LM loss over the same 2 × ``batch`` sequences (the ``batch`` y's and the ``batch``
ŷ's, loss on response tokens). Both take their settings from one ``TrainPolicySection``
through ``training_arguments``, as the stages do. A step is timed
from the Trainer's ``on_step_begin`` to ``on_step_end`` (forward, backward, clipping, optimizer
and scheduler step); the first step is a warm-up and the median of the rest is reported.

Each kind of step runs in its own fresh Python process, so the peak memory of one cannot
hide in the other. "peak RSS" is that process's maximum resident set size (``ru_maxrss``:
Python, torch, the model, optimizer state and the step's activations, i.e. everything the
process ever held); "RSS before" is its resident size just before training starts, so
"peak − before" is what training steps added on top. On CUDA the table also gives
``torch.cuda.max_memory_allocated`` (tensors on the GPU only).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

KINDS = ("rlmec", "sft")


def _current_rss_mib() -> float:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _synthetic_rows(args: argparse.Namespace, eos_id: int) -> list[dict]:
    """RL rows with random ids; ŷ is y with ~10% of its tokens substituted."""
    import torch

    from rlmec_core.editing import minimum_edit_weights

    gen = torch.Generator().manual_seed(args.seed)
    rows = []
    for i in range(args.batch):
        n = args.response_len + int(torch.randint(-10, 11, (1,), generator=gen))
        prompt = torch.randint(3, args.vocab, (args.prompt_len,), generator=gen).tolist()
        y = [*torch.randint(3, args.vocab, (n - 1,), generator=gen).tolist(), eos_id]
        y_hat = list(y)
        for t in torch.randint(0, n - 1, (max(1, n // 10),), generator=gen).tolist():
            y_hat[t] = int(torch.randint(3, args.vocab, (1,), generator=gen))
        correct = i % 2 == 0
        p = torch.rand(n, generator=gen)
        rewards = (p - 0.5).clamp(0, 0.5) if correct else (p - 0.5).clamp(-0.1, 0)
        rows.append(
            {
                "sample_id": f"b{i}",
                "correct": correct,
                "prompt_ids": prompt,
                "response_ids": y,
                "rewards": rewards.tolist(),
                "ref_logprobs": (-6.2 + 0.3 * torch.randn(n, generator=gen)).tolist(),
                "target_ids": y_hat,
                "target_weights": [0.5] * n if correct else minimum_edit_weights(y, y_hat),
            }
        )
    return rows


def worker(args: argparse.Namespace) -> dict:
    """Run ``args.steps`` steps of one kind in this process; return timings and memory."""
    import torch
    from torch.utils.data import SequentialSampler
    from transformers import LlamaConfig, LlamaForCausalLM, TrainerCallback

    from rlmec_core.config import TrainPolicySection
    from rlmec_core.tokenizer import train_tokenizer
    from rlmec_core.trainers.lean import IGNORE_INDEX, LeanCausalLMTrainer
    from rlmec_core.trainers.rlmec_trainer import build_policy_trainer
    from rlmec_core.trainers.sft import ListDataset, ResponseOnlyCollator, training_arguments

    tokenizer = train_tokenizer(["step one\nThe answer is 5"], vocab_size=300)  # pad/eos ids only
    config = LlamaConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        intermediate_size=4 * args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=4,
        num_key_value_heads=4,
        max_position_embeddings=1024,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(args.seed)
    model = LlamaForCausalLM(config)
    # The same batch every step: `steps` copies of the batch, in order.
    rows = _synthetic_rows(args, tokenizer.eos_token_id) * args.steps

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.seconds: list[float] = []

        def _sync(self) -> None:
            if torch.cuda.is_available():
                torch.cuda.synchronize()

        def on_step_begin(self, *_, **__):
            self._sync()
            self._start = time.perf_counter()

        def on_step_end(self, *_, **__):
            self._sync()
            self.seconds.append(time.perf_counter() - self._start)

    out = tempfile.mkdtemp(prefix=f"bench-{args.worker}-")
    cfg = TrainPolicySection(
        variant="rlmec",
        epochs=1,
        learning_rate=1e-4,
        batch_size=args.batch,
        warmup_ratio=0.0,
        logging_steps=1,
        seed=args.seed,
    )
    if args.worker == "rlmec":
        trainer = build_policy_trainer(model, tokenizer, rows, out, cfg)
    else:
        sft_rows = []
        for r in rows[: args.batch]:  # the batch's y's and ŷ's, loss on the response only
            for cont in (r["response_ids"], r["target_ids"]):
                sft_rows.append(
                    {
                        "input_ids": r["prompt_ids"] + cont,
                        "labels": [IGNORE_INDEX] * len(r["prompt_ids"]) + cont,
                    }
                )
        train_args = training_arguments(
            cfg, out, seed=args.seed, per_device_train_batch_size=2 * args.batch
        )
        trainer = LeanCausalLMTrainer(
            model=model,
            args=train_args,
            train_dataset=ListDataset(sft_rows * args.steps),
            data_collator=ResponseOnlyCollator(tokenizer.pad_token_id),
        )
    # No checkpoints: only the steps are measured. In order, so every step sees the batch.
    trainer.args.save_strategy = "no"
    trainer._get_train_sampler = lambda *_, **__: SequentialSampler(trainer.train_dataset)
    timer = StepTimer()
    trainer.add_callback(timer)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    rss_before = _current_rss_mib()
    trainer.train()
    timed = timer.seconds[1:] or timer.seconds
    return {
        "kind": args.worker,
        "steps": len(timer.seconds),
        "seconds_per_step": statistics.median(timed),
        "rss_before_mib": rss_before,
        "peak_rss_mib": _peak_rss_mib(),
        "cuda_peak_mib": torch.cuda.max_memory_allocated() / 2**20
        if torch.cuda.is_available()
        else None,
        "device": "cuda" if torch.cuda.is_available() else "cpu",
        "threads": torch.get_num_threads(),
    }


def _run_kind(kind: str, argv: list[str]) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv, "--worker", kind]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"{kind} worker failed with exit code {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--prompt-len", type=int, default=40)
    parser.add_argument("--response-len", type=int, default=150)
    parser.add_argument("--steps", type=int, default=6, help="steps per kind; the first is warm-up")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="worker processes per kind")
    parser.add_argument("--worker", choices=KINDS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.steps < 2:
        parser.error("--steps must be >= 2 (one warm-up step, then timed ones)")
    if args.worker:
        print(json.dumps(worker(args)))
        return

    # Worker processes alternate (rlmec, sft, rlmec, sft, ...) so a burst of load elsewhere on
    # the machine hits both kinds; each kind keeps its fastest median and its largest peak.
    argv = [
        f"--{name.replace('_', '-')}={getattr(args, name)}"
        for name in (
            "hidden",
            "layers",
            "vocab",
            "batch",
            "prompt_len",
            "response_len",
            "steps",
            "seed",
        )
    ]
    runs: dict[str, list[dict]] = {kind: [] for kind in KINDS}
    for _ in range(args.repeats):
        for kind in KINDS:
            runs[kind].append(_run_kind(kind, argv))
    results = {}
    for kind, rs in runs.items():
        results[kind] = {
            **rs[0],
            "seconds_per_step": min(r["seconds_per_step"] for r in rs),
            "step_spread": [r["seconds_per_step"] for r in rs],
            **{k: max(r[k] for r in rs) for k in ("peak_rss_mib", "rss_before_mib")},
        }
        if rs[0]["cuda_peak_mib"] is not None:
            results[kind]["cuda_peak_mib"] = max(r["cuda_peak_mib"] for r in rs)
    rl, sft = results["rlmec"], results["sft"]
    print(
        f"Llama hidden {args.hidden}, {args.layers} layers, vocab {args.vocab}; batch {args.batch} "
        f"samples, prompt {args.prompt_len} + response ~{args.response_len} tokens; "
        f"{rl['device']}, {rl['threads']} threads; median of {rl['steps'] - 1} steps after 1 warm-up, "
        f"best of {args.repeats} processes per kind"
    )
    rows = [
        ("seconds / step", "seconds_per_step", "{:.3f}"),
        ("peak RSS MiB (process)", "peak_rss_mib", "{:.0f}"),
        ("RSS before training MiB", "rss_before_mib", "{:.0f}"),
    ]
    print(f"| measure | RLMEC (y + ŷ, 2 passes) | SFT (2×{args.batch} seqs, 1 pass) | ratio |")
    print("|---|---|---|---|")
    for label, key, fmt in rows:
        ratio = rl[key] / sft[key] if sft[key] else float("nan")
        print(f"| {label} | {fmt.format(rl[key])} | {fmt.format(sft[key])} | {ratio:.2f} |")
    grow_rl = rl["peak_rss_mib"] - rl["rss_before_mib"]
    grow_sft = sft["peak_rss_mib"] - sft["rss_before_mib"]
    ratio = grow_rl / grow_sft if grow_sft > 0 else float("nan")
    print(f"| peak − before MiB | {grow_rl:.0f} | {grow_sft:.0f} | {ratio:.2f} |")
    if rl["cuda_peak_mib"] is not None:
        ratio = rl["cuda_peak_mib"] / sft["cuda_peak_mib"]
        print(
            f"| CUDA max allocated MiB | {rl['cuda_peak_mib']:.0f} | {sft['cuda_peak_mib']:.0f} "
            f"| {ratio:.2f} |"
        )
    for kind in KINDS:
        spread = ", ".join(f"{x:.3f}" for x in results[kind]["step_spread"])
        print(f"{kind}: seconds/step per process: {spread}")


if __name__ == "__main__":
    main()
