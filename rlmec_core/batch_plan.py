"""The order in which ``response_logprobs`` scores (prompt, response) pairs: prompt prefixes
that several pairs share, run once and cached, and length-sorted batches under them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

# A prompt prefix shared by several pairs is run once and cached when that saves at least
# this many token positions (pairs beyond the first x prefix tokens): below it, the extra
# forward and the smaller batches it leads to cost more than the positions saved.
SHARED_PREFIX_MIN_SAVING = 128
# Nesting of shared prefixes the planner follows; deeper sharing is left unused.
MAX_PREFIX_DEPTH = 64


@dataclass(frozen=True)
class Prefix:
    """Run prompt tokens ``[start, end)`` of pair ``source`` after the cache of plan step
    ``parent`` (None: from the start) and cache them; every pair under it shares them."""

    parent: int | None
    source: int
    start: int
    end: int


@dataclass(frozen=True)
class Batch:
    """Score ``pairs`` as one right-padded batch of ``prompt[start:] + response`` rows that
    continue the cache of plan step ``prefix`` (None and ``start == 0``: no cache)."""

    prefix: int | None
    start: int
    pairs: tuple[int, ...]
    width: int  # the longest row, padding included


def common_length(a: Sequence[int], b: Sequence[int]) -> int:
    """How many leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def plan_batches(
    prompt_ids: Sequence[Sequence[int]],
    response_ids: Sequence[Sequence[int]],
    *,
    token_budget: int,
    max_rows: int,
    share_prefixes: bool = True,
) -> list[Prefix | Batch]:
    """Order the scoring of all pairs as cached prefixes and batches, in execution order.

    Prompts are sorted, so pairs sharing a prompt prefix are neighbours and form nested
    intervals (the GRM's instruction, shared by all pairs; then a problem and its reference
    solution, shared by that problem's samples; a policy prompt, by its problem's samples).
    An interval gets a ``Prefix`` when running its shared tokens once saves at least
    ``SHARED_PREFIX_MIN_SAVING`` positions; each pair keeps at least its last prompt token
    out of any prefix, since the state there predicts its first response token. The pairs
    under a prefix (or under none) that no deeper prefix takes are cut, longest first, into
    ``Batch``es of at most ``max_rows`` rows and ``token_budget`` positions (rows x
    (prefix + longest row)); a row longer than the budget goes alone.
    """
    planner = _Planner(prompt_ids, response_ids, token_budget, max_rows, share_prefixes)
    top: list[int] = []
    planner.interval(0, len(prompt_ids), 0, 0, None, top, 0)
    planner.batches(top, 0, None)
    return planner.plan


class _Planner:
    """The state ``plan_batches`` builds: the sorted pairs and the plan so far."""

    def __init__(self, prompt_ids, response_ids, token_budget, max_rows, share_prefixes):
        self.prompt_ids, self.response_ids = prompt_ids, response_ids
        self.token_budget, self.max_rows = token_budget, max_rows
        self.share_prefixes = share_prefixes
        self.order = sorted(range(len(prompt_ids)), key=lambda i: (list(prompt_ids[i]), i))
        # shared[j]: prompt tokens order[j] and order[j + 1] share, leaving each one its own.
        self.shared = [
            min(
                common_length(prompt_ids[a], prompt_ids[b]),
                len(prompt_ids[a]) - 1,
                len(prompt_ids[b]) - 1,
            )
            for a, b in zip(self.order, self.order[1:], strict=False)
        ]
        self.plan: list[Prefix | Batch] = []

    def batches(self, pool: list[int], start: int, prefix: int | None) -> None:
        """Cut ``pool``, longest row first, into batches continuing ``prefix``'s cache."""
        rows = {i: len(self.prompt_ids[i]) - start + len(self.response_ids[i]) for i in pool}
        batch: list[int] = []
        for i in sorted(pool, key=lambda i: (-rows[i], i)):
            width = rows[batch[0]] if batch else 0
            full = len(batch) == self.max_rows
            if batch and (full or (len(batch) + 1) * (start + width) > self.token_budget):
                self.plan.append(Batch(prefix, start, tuple(batch), width))
                batch = []
            batch.append(i)
        if batch:
            self.plan.append(Batch(prefix, start, tuple(batch), rows[batch[0]]))

    def interval(
        self, lo: int, hi: int, common: int, start: int, prefix: int | None, pool: list, depth: int
    ) -> None:
        """``order[lo:hi]`` share ``common`` prompt tokens, the cache of plan step ``prefix``
        the first ``start`` of them; pairs no deeper prefix takes go to ``pool``."""
        shared, j = self.shared, lo
        while j < hi:
            k = j
            while k + 1 < hi and shared[k] > common:
                k += 1
            if k == j or not self.share_prefixes or depth >= MAX_PREFIX_DEPTH:
                pool.extend(self.order[j : k + 1])
            else:
                deeper = min(shared[j:k])
                if (k - j) * (deeper - start) >= SHARED_PREFIX_MIN_SAVING:
                    self.plan.append(Prefix(prefix, self.order[j], start, deeper))
                    index, own = len(self.plan) - 1, []
                    self.interval(j, k + 1, deeper, deeper, index, own, depth + 1)
                    self.batches(own, deeper, index)
                else:
                    self.interval(j, k + 1, deeper, start, prefix, pool, depth + 1)
            j = k + 1
