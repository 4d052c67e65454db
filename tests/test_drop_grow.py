"""The prune-and-regrow selection, checked by hand."""

import numpy as np
import pytest
import tensorflow as tf

from tf_freetickets.sparse import drop_grow
from tf_freetickets.sparse.drop_grow import drop_and_grow, top_k_mask


def test_top_k_mask_marks_largest_and_breaks_ties_by_index():
    np.testing.assert_array_equal(top_k_mask(np.array([0.5, 0.1, 0.9, 0.3], "float32"), 2), [1, 0, 1, 0])
    np.testing.assert_array_equal(top_k_mask(np.array([1.0, 2.0, 1.0, 1.0], "float32"), 2), [1, 1, 0, 0])
    np.testing.assert_array_equal(top_k_mask(np.array([1.0, 2.0], "float32"), 0), [0, 0])


def test_drops_smallest_active_magnitudes_and_grows_largest_gradients():
    mask = np.array([[1, 1, 1, 0], [0, 1, 0, 0]], "float32")
    weights = np.array([[0.5, -0.1, 0.9, 0.0], [0.0, -0.3, 0.0, 0.0]], "float32")
    grads = np.array([[9.0, 9.0, 9.0, 0.2], [-0.7, 9.0, 0.05, 0.4]], "float32")
    new_mask, grown = drop_and_grow(mask, np.abs(weights), np.abs(grads), 2)
    # Active magnitudes 0.5, 0.1, 0.9, 0.3: drop 0.1 and 0.3, keep 0.5 and 0.9.
    # Outside the kept set the largest |grad| are 9.0 at (0,1) and (1,1) (the two
    # just dropped) -> RigL may regrow them; next come 0.7, 0.4, 0.2, 0.05.
    np.testing.assert_array_equal(grown, [[0, 1, 0, 0], [0, 1, 0, 0]])
    np.testing.assert_array_equal(new_mask, [[1, 1, 1, 0], [0, 1, 0, 0]])


def test_grows_the_k_inactive_positions_of_largest_gradient():
    mask = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0], "float32")
    weights = np.array([0.4, -0.2, 0.8, 0.05, 0, 0, 0, 0, 0, 0], "float32")
    grads = np.array([0.0, 0.0, 0.0, 0.0, 0.3, -2.0, 0.1, 1.5, -0.2, 0.9], "float32")
    new_mask, grown = drop_and_grow(mask, np.abs(weights), np.abs(grads), 3)
    # Keep |0.8| only; grow the 3 largest |grad| outside it: positions 5, 7, 9.
    np.testing.assert_array_equal(np.flatnonzero(grown), [5, 7, 9])
    np.testing.assert_array_equal(np.flatnonzero(new_mask), [2, 5, 7, 9])


@pytest.mark.parametrize("num_drop", [0, 1, 5, 20])
def test_active_count_is_preserved(num_drop):
    rng = np.random.default_rng(num_drop)
    mask = np.zeros(100, "float32")
    mask[rng.permutation(100)[:20]] = 1
    new_mask, grown = drop_and_grow(mask, rng.random(100), rng.random(100), num_drop)
    assert np.asarray(new_mask).sum() == 20
    assert np.asarray(grown).sum() == num_drop
    assert np.all(np.asarray(new_mask) >= np.asarray(grown))


def _reference_drop_and_grow(mask, drop_scores, grow_scores, num_drop):
    """RigL's update by full stable sorts in numpy: ties keep (and grow) the lower index first."""
    active = np.flatnonzero(mask)
    kept = active[np.argsort(-drop_scores[active], kind="stable")][: len(active) - num_drop]
    candidates = np.setdiff1d(np.arange(mask.size), kept)
    grown = candidates[np.argsort(-grow_scores[candidates], kind="stable")][:num_drop]
    new_mask, grown_mask = np.zeros(mask.size), np.zeros(mask.size)
    new_mask[np.concatenate([kept, grown])] = 1
    grown_mask[grown] = 1
    return new_mask, grown_mask


@pytest.mark.parametrize("seed", range(6))
def test_top_k_selection_equals_a_full_stable_sort_with_ties(seed):
    rng = np.random.default_rng(seed)
    size = int(rng.integers(50, 400))
    mask = (rng.random(size) < 0.3).astype("float32")
    # Scores on a coarse grid, so ties are common on both sides of the cut.
    drop_scores = rng.integers(0, 5, size).astype("float32")
    grow_scores = rng.integers(0, 5, size).astype("float32")
    num_drop = int(rng.integers(0, mask.sum() + 1))
    new_mask, grown = drop_and_grow(mask, drop_scores, grow_scores, num_drop)
    expected_mask, expected_grown = _reference_drop_and_grow(mask, drop_scores, grow_scores, num_drop)
    np.testing.assert_array_equal(np.asarray(new_mask), expected_mask)
    np.testing.assert_array_equal(np.asarray(grown), expected_grown)


@pytest.mark.parametrize("seed", range(4))
def test_prefiltered_selection_on_a_large_layer_equals_the_reference_with_ties(seed):
    # Above PREFILTER_MIN_SIZE the threshold pre-filter runs; the masks must not move.
    rng = np.random.default_rng(seed)
    size = drop_grow.PREFILTER_MIN_SIZE + int(rng.integers(1, 50_000))
    mask = (rng.random(size) < (0.05, 0.1, 0.5, 0.9)[seed]).astype("float32")
    if seed % 2:  # coarse grid: many ties at the cut
        drop_scores = rng.integers(0, 7, size).astype("float32")
        grow_scores = rng.integers(0, 7, size).astype("float32")
    else:
        drop_scores = rng.random(size).astype("float32")
        grow_scores = rng.random(size).astype("float32")
    num_drop = int(mask.sum() * (0.3, 0.01, 1.0, 0.5)[seed])
    compiled = tf.function(drop_and_grow)
    new_mask, grown = compiled(mask, drop_scores, grow_scores, tf.constant(num_drop))
    expected_mask, expected_grown = _reference_drop_and_grow(mask, drop_scores, grow_scores, num_drop)
    np.testing.assert_array_equal(np.asarray(new_mask), expected_mask)
    np.testing.assert_array_equal(np.asarray(grown), expected_grown)


@pytest.mark.parametrize("k", [0, 1, 7, 300, 2_000, 4_095, 4_096])
def test_prefiltered_top_k_indices_equal_plain_top_k(monkeypatch, k):
    # Small vectors forced through the pre-filter, incl. k = 0, k = size and the fallback
    # (all-equal scores leave fewer than k above a threshold only when the sample misleads).
    monkeypatch.setattr(drop_grow, "PREFILTER_MIN_SIZE", 64)
    rng = np.random.default_rng(k)
    for scores in (
        rng.random(4096).astype("float32"),
        rng.integers(0, 3, 4096).astype("float32"),
        np.where(rng.random(4096) < 0.9, -np.inf, rng.random(4096)).astype("float32"),
        np.sort(rng.random(4096)).astype("float32")[::-1].copy(),  # sample's best are all at the front
    ):
        got = np.sort(np.asarray(drop_grow._top_k_indices(tf.constant(scores), tf.constant(k))))
        want = np.sort(tf.math.top_k(scores, k).indices.numpy())
        np.testing.assert_array_equal(got, want)
