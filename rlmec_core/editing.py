"""Minimum-edit imitation weights (stage 4d): which tokens of a rewrite were actually edited.

The rewrite ``ŷ`` of a sampled solution ``y`` is aligned to ``y`` on token ids with a
minimum-edit (Levenshtein) alignment. Tokens of ``ŷ`` that the alignment inserts or
substitutes carry the correction, so the imitation loss weighs them fully; tokens matched
as equal are copies of ``y`` and get half weight.
"""

from __future__ import annotations

import operator
from collections.abc import Sequence

from rapidfuzz.distance import Levenshtein

EDITED_WEIGHT = 1.0  # a token of the rewrite that the alignment inserts or substitutes
KEPT_WEIGHT = 0.5  # a token of the rewrite matched as equal to a token of the sample


def _as_token_ids(ids: Sequence[int], name: str) -> list[int]:
    # Plain ints: rapidfuzz compares elements by hash and equality, and e.g. torch scalars
    # hash by identity, so equal ids held as tensors would never match. operator.index
    # accepts Python, numpy and torch integers and refuses floats and strings.
    try:
        return [operator.index(i) for i in ids]
    except TypeError as err:
        raise TypeError(f"{name} must be a sequence of integer token ids: {err}") from err


def edit_distance(source_ids: Sequence[int], target_ids: Sequence[int]) -> int:
    """Levenshtein distance (unit cost insert/delete/substitute) between two token-id lists."""
    return int(
        Levenshtein.distance(
            _as_token_ids(source_ids, "source_ids"), _as_token_ids(target_ids, "target_ids")
        )
    )


def minimum_edit_weights(source_ids: Sequence[int], target_ids: Sequence[int]) -> list[float]:
    """One imitation weight per token of ``target_ids`` (the rewrite ``ŷ``).

    ``source_ids`` is the sampled solution ``y``. A target token gets ``EDITED_WEIGHT`` when
    the minimum-edit alignment of ``y`` to ``ŷ`` inserts or substitutes it, ``KEPT_WEIGHT``
    when it is matched as equal. Identical sequences therefore get ``KEPT_WEIGHT`` everywhere.
    """
    source = _as_token_ids(source_ids, "source_ids")
    target = _as_token_ids(target_ids, "target_ids")
    weights = [KEPT_WEIGHT] * len(target)
    # Editops lists only the edits; deletions touch no target token.
    for op in Levenshtein.editops(source, target):
        if op.tag in ("insert", "replace"):
            weights[op.dest_pos] = EDITED_WEIGHT
    return weights
