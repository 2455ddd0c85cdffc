"""Imitation weights from the minimum-edit alignment of a sample and its rewrite (stage 4d)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from rlmec_core.editing import EDITED_WEIGHT, KEPT_WEIGHT, edit_distance, minimum_edit_weights

token_lists = st.lists(st.integers(min_value=0, max_value=6), max_size=25)


def test_a_rewritten_token_weighs_twice_a_copied_one():
    # The method's weights, as the function hands them out: 1 for every token of a rewrite
    # that shares nothing with the sample, 0.5 for every token of an exact copy.
    assert minimum_edit_weights([1, 2, 3], [4, 5, 6]) == [1.0, 1.0, 1.0]
    assert minimum_edit_weights([1, 2, 3], [1, 2, 3]) == [0.5, 0.5, 0.5]


def test_substitution_and_insertion_are_edited():
    # y = 1 2 3 4 ; ŷ = 1 9 3 4 7 : 2->9 substituted, 7 inserted at the end; distance 2.
    weights = minimum_edit_weights([1, 2, 3, 4], [1, 9, 3, 4, 7])
    assert weights == [0.5, 1.0, 0.5, 0.5, 1.0]
    assert edit_distance([1, 2, 3, 4], [1, 9, 3, 4, 7]) == 2


def test_deletion_touches_no_target_token():
    # y = 5 6 7 8 ; ŷ = 5 7 8 : 6 deleted, every token of ŷ is a copy; distance 1.
    assert minimum_edit_weights([5, 6, 7, 8], [5, 7, 8]) == [0.5, 0.5, 0.5]
    assert edit_distance([5, 6, 7, 8], [5, 7, 8]) == 1


def test_rewrite_of_a_wrong_tail():
    # Prefix 10 11 12 kept verbatim, tail 13 14 rewritten as 20 21 22:
    # two substitutions + one insertion = distance 3, three edited target tokens.
    weights = minimum_edit_weights([10, 11, 12, 13, 14], [10, 11, 12, 20, 21, 22])
    assert weights == [0.5, 0.5, 0.5, 1.0, 1.0, 1.0]


def test_empty_sequences():
    assert minimum_edit_weights([], []) == []
    assert minimum_edit_weights([1, 2], []) == []
    assert minimum_edit_weights([], [3, 4]) == [1.0, 1.0]


def test_tensor_and_large_ids_compare_by_value():
    # torch scalars hash by identity; ids must be compared as ints.
    source = torch.tensor([151643, 7, 8])
    target = torch.tensor([151643, 7, 9])
    assert minimum_edit_weights(source, target) == [0.5, 0.5, 1.0]
    assert edit_distance(source, target) == 1


def test_non_integer_ids_are_rejected():
    with pytest.raises(TypeError, match="source_ids"):
        minimum_edit_weights([1.5, 2], [1, 2])
    with pytest.raises(TypeError, match="target_ids"):
        minimum_edit_weights([1, 2], ["a", "b"])


def _naive_distance(a: list[int], b: list[int]) -> int:
    # Textbook DP, independent of rapidfuzz.
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (x != y)))
        prev = cur
    return prev[-1]


def _lcs_length(a: list[int], b: list[int]) -> int:
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b, 1):
            cur.append(prev[j - 1] + 1 if x == y else max(prev[j], cur[j - 1]))
        prev = cur
    return prev[-1]


def _is_subsequence(short: list[int], long: list[int]) -> bool:
    it = iter(long)
    return all(any(x == y for y in it) for x in short)


@settings(max_examples=150, deadline=None)
@given(token_lists, token_lists)
def test_weights_shape_values_and_edit_count(source, target):
    weights = minimum_edit_weights(source, target)
    distance = edit_distance(source, target)
    assert distance == _naive_distance(source, target)
    assert len(weights) == len(target)
    assert set(weights) <= {KEPT_WEIGHT, EDITED_WEIGHT}
    edited = weights.count(EDITED_WEIGHT)
    # An optimal alignment has S + I + D = distance and D - I = len(y) - len(ŷ); the
    # edited tokens are S + I = distance - D, and D >= len(y) - len(ŷ).
    assert edited <= distance - max(0, len(source) - len(target))
    # Kept tokens are matches, so they form a common subsequence of y and ŷ.
    kept = [t for t, w in zip(target, weights, strict=True) if w == KEPT_WEIGHT]
    assert _is_subsequence(kept, source)
    assert edited >= len(target) - _lcs_length(source, target)


@settings(max_examples=60, deadline=None)
@given(token_lists)
def test_identical_sequences_are_all_kept(tokens):
    assert minimum_edit_weights(tokens, tokens) == [KEPT_WEIGHT] * len(tokens)
    assert edit_distance(tokens, tokens) == 0


@settings(max_examples=60, deadline=None)
@given(token_lists, st.data())
def test_kept_tokens_match_source_in_order(source, data):
    # Build ŷ from y by a few random edits: a minimum alignment edits at most that many.
    target = list(source)
    n_ops = data.draw(st.integers(0, 4))
    for _ in range(n_ops):
        op = data.draw(st.sampled_from(["insert", "delete", "replace"]))
        if op == "insert" or not target:
            target.insert(data.draw(st.integers(0, len(target))), data.draw(st.integers(0, 6)))
        elif op == "delete":
            del target[data.draw(st.integers(0, len(target) - 1))]
        else:
            target[data.draw(st.integers(0, len(target) - 1))] = data.draw(st.integers(0, 6))
    weights = minimum_edit_weights(source, target)
    kept = [t for t, w in zip(target, weights, strict=True) if w == KEPT_WEIGHT]
    assert _is_subsequence(kept, source)
    assert weights.count(EDITED_WEIGHT) <= edit_distance(source, target) <= n_ops
