"""The prune-and-regrow step shared by every dynamic-sparse-training updater.

Pure `keras.ops` functions on one layer's tensors, compiled inside the
updater's `tf.function`. Counts are exact: a layer with `n` active weights keeps
`n - k` of them (largest drop score) and activates `k` new ones (largest grow
score among the positions it did not keep), so its active count never moves.
"""

from keras import ops


def top_k_mask(scores, k):
    """A 0/1 vector marking the `k` largest entries of the 1-D `scores`.

    `k` may be a scalar tensor (the drop count varies between updates). Uses a
    top-k selection, O(n log k), not a full sort: the counts of a mask update
    are small next to the layer. Ties go to the lower index.
    """
    size = ops.shape(scores)[0]
    _, indices = ops.top_k(scores, ops.cast(k, "int32"))
    return ops.scatter(ops.expand_dims(indices, 1), ops.ones_like(indices, dtype=scores.dtype), (size,))


def _bottom_k_mask(scores, k):
    """A 0/1 vector marking the `k` smallest entries of the 1-D `scores`; ties go to the higher index.

    The complement of `top_k_mask(scores, size - k)`, found with a top-k over
    the negated, reversed scores so only `k` entries are selected.
    """
    return ops.flip(top_k_mask(ops.flip(-scores, 0), k), 0)


def drop_and_grow(mask, drop_scores, grow_scores, num_drop):
    """Drops the `num_drop` lowest-scoring active weights, grows as many new ones.

    Follows RigL's update (Evci et al. 2020, Sec. 3): the kept set is the
    `active - num_drop` active positions of largest `drop_scores`; the grown set
    is the `num_drop` positions of largest `grow_scores` outside the kept set. A
    position dropped in this update may be grown again in the same update.

    Args:
      mask: 0/1 tensor, any shape (a layer's kernel mask).
      drop_scores: tensor of the mask's shape, higher = more worth keeping
        (|w| for magnitude pruning).
      grow_scores: tensor of the mask's shape, higher = grown first (|dense
        gradient| for RigL, random for SET, |momentum| for SNFS).
      num_drop: int scalar, 0 <= num_drop <= number of active positions.

    Returns:
      (new_mask, grown): 0/1 tensors of the mask's shape; `grown` marks the
      positions chosen by the growth step (their weights and optimizer slots are
      to be reset to zero).
    """
    shape = ops.shape(mask)
    flat_mask = ops.reshape(mask, (-1,))
    dtype = flat_mask.dtype
    lowest = ops.cast(float("-inf"), dtype)
    num_drop = ops.cast(num_drop, "int32")

    # Kept = the active - num_drop best active weights = active minus the num_drop worst ones.
    keep_scores = ops.where(flat_mask > 0, ops.cast(ops.reshape(drop_scores, (-1,)), dtype), -lowest)
    kept = flat_mask - _bottom_k_mask(keep_scores, num_drop)

    candidate_scores = ops.where(kept > 0, lowest, ops.cast(ops.reshape(grow_scores, (-1,)), dtype))
    grown = top_k_mask(candidate_scores, num_drop)

    return ops.reshape(kept + grown, shape), ops.reshape(grown, shape)
