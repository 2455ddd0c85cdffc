"""Benchmark: rapidfuzz minimum-edit weights vs a plain dynamic-programming alignment.

    python benchmarks/edit_weights.py [--pairs 1000 --length 400 --seed 0 --dp-pairs N]

Builds random token-id sequences of about ``--length`` tokens, derives each rewrite by random
insertions, deletions and substitutions, then times ``rlmec_core.editing`` against a textbook
Levenshtein DP (full table, rows updated with numpy, backtrace in Python) that yields the same
kind of weights. Exits non-zero if any edit distance disagrees.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlmec_core.editing import (  # noqa: E402
    EDITED_WEIGHT,
    KEPT_WEIGHT,
    edit_distance,
    minimum_edit_weights,
)

VOCAB = 32_000


def dp_table(source: list[int], target: list[int]) -> np.ndarray:
    """Full Levenshtein table ``D[i, j]`` = distance between ``source[:i]`` and ``target[:j]``.

    Row ``i`` from row ``i-1``: deletions and substitutions are elementwise; the chain of
    insertions along the row, ``D[i, j] = min_k (T[k] + j - k)``, is a running minimum.
    """
    n, m = len(source), len(target)
    tgt = np.asarray(target, dtype=np.int64)
    cols = np.arange(m + 1, dtype=np.int64)
    table = np.empty((n + 1, m + 1), dtype=np.int64)
    table[0] = cols
    for i in range(1, n + 1):
        prev = table[i - 1]
        row = np.empty(m + 1, dtype=np.int64)
        row[0] = i
        row[1:] = np.minimum(prev[1:] + 1, prev[:-1] + (tgt != source[i - 1]))
        table[i] = np.minimum.accumulate(row - cols) + cols
    return table


def dp_weights(source: list[int], target: list[int]) -> tuple[int, list[float]]:
    """Distance and per-target-token weights from a backtrace through the DP table."""
    table = dp_table(source, target)
    weights = [KEPT_WEIGHT] * len(target)
    i, j = len(source), len(target)
    while i or j:
        here = table[i, j]
        if i and j and source[i - 1] == target[j - 1] and table[i - 1, j - 1] == here:
            i, j = i - 1, j - 1  # match: kept
        elif i and j and table[i - 1, j - 1] + 1 == here:
            weights[j - 1] = EDITED_WEIGHT  # substitution
            i, j = i - 1, j - 1
        elif j and table[i, j - 1] + 1 == here:
            weights[j - 1] = EDITED_WEIGHT  # insertion
            j -= 1
        else:
            i -= 1  # deletion: no target token
    return int(table[-1, -1]), weights


def make_pairs(n_pairs: int, length: int, seed: int) -> list[tuple[list[int], list[int]]]:
    rng = random.Random(seed)
    pairs = []
    for _ in range(n_pairs):
        n = max(1, length + rng.randint(-length // 10, length // 10))
        source = [rng.randrange(VOCAB) for _ in range(n)]
        target = list(source)
        for _ in range(rng.randint(0, n // 5)):
            op = rng.choice(("insert", "delete", "replace"))
            if op == "insert" or not target:
                target.insert(rng.randint(0, len(target)), rng.randrange(VOCAB))
            elif op == "delete":
                del target[rng.randrange(len(target))]
            else:
                target[rng.randrange(len(target))] = rng.randrange(VOCAB)
        pairs.append((source, target))
    return pairs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=1000)
    parser.add_argument("--length", type=int, default=400)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--dp-pairs", type=int, default=None, help="pairs for the DP side (default: all)"
    )
    args = parser.parse_args(argv)
    pairs = make_pairs(args.pairs, args.length, args.seed)
    dp_pairs = pairs[: args.dp_pairs if args.dp_pairs is not None else len(pairs)]

    start = time.perf_counter()
    fast = [(edit_distance(s, t), minimum_edit_weights(s, t)) for s, t in pairs]
    fast_s = time.perf_counter() - start

    start = time.perf_counter()
    slow = [dp_weights(s, t) for s, t in dp_pairs]
    slow_s = time.perf_counter() - start

    distance_mismatch = sum(f[0] != d[0] for f, d in zip(fast, slow, strict=False))
    same_weights = sum(f[1] == d[1] for f, d in zip(fast, slow, strict=False))
    # Both weight lists come from optimal alignments; ties may be broken differently.
    bad_counts = sum(w.count(EDITED_WEIGHT) > dist for dist, w in (*fast, *slow))
    mean_distance = sum(f[0] for f in fast) / len(fast)

    fast_ms = 1000 * fast_s / len(pairs)
    slow_ms = 1000 * slow_s / max(len(dp_pairs), 1)
    print(
        f"pairs: {len(pairs)}, mean length ~{args.length}, mean edit distance {mean_distance:.1f}"
    )
    print(f"{'method':<34} {'pairs':>6} {'total s':>9} {'ms/pair':>9}")
    print(f"{'rapidfuzz (distance + weights)':<34} {len(pairs):>6} {fast_s:>9.3f} {fast_ms:>9.3f}")
    print(
        f"{'plain DP (numpy rows, backtrace)':<34} {len(dp_pairs):>6} {slow_s:>9.3f} {slow_ms:>9.3f}"
    )
    print(f"speed ratio (DP ms/pair ÷ rapidfuzz ms/pair): {slow_ms / fast_ms:.1f}x")
    print(f"edit distances agree: {len(dp_pairs) - distance_mismatch}/{len(dp_pairs)}")
    print(f"identical weight lists (tie-breaks may differ): {same_weights}/{len(dp_pairs)}")
    for label, results in (("rapidfuzz", fast[: len(slow)]), ("plain DP", slow)):
        edited = sum(w.count(EDITED_WEIGHT) for _, w in results) / max(len(results), 1)
        print(f"mean edited tokens per rewrite, {label}: {edited:.2f}")
    if distance_mismatch or bad_counts:
        print(f"FAIL: {distance_mismatch} distance mismatches, {bad_counts} weight-count errors")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
