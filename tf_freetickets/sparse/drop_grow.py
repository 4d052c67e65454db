"""The prune-and-regrow step shared by every dynamic-sparse-training updater.

Pure `keras.ops` functions on one layer's tensors, compiled inside the
updater's `tf.function`. Counts are exact: a layer with `n` active weights keeps
`n - k` of them (largest drop score) and activates `k` new ones (largest grow
score among the positions it did not keep), so its active count never moves.
"""

from keras import ops

# Layers at least this large select through a threshold pre-filter (see
# `_top_k_indices`); smaller ones run one plain top-k.
PREFILTER_MIN_SIZE = 1 << 16
# The pre-filter estimates its threshold from every `_SAMPLE_STRIDE`-th score,
# keeping `_SAMPLE_MARGIN` times the expected share (plus a few) so that the
# threshold almost always leaves at least `k` scores above it.
_SAMPLE_STRIDE = 32
_SAMPLE_MARGIN = 1.5


def _top_k_indices(scores, k):
    """Indices of the `k` largest entries of the 1-D `scores`, ties to the lower index.

    Selects exactly the set `ops.top_k(scores, k)` selects, faster on large
    vectors. A top-k over n scores costs a heap pass over all n; instead a
    threshold `t` is read off a strided sample (its `k'`-th largest, `k'`
    slightly above the sample's share of `k`), the positions with score >= t
    are compacted in index order, and the top-k runs on those only. When at
    least `k` scores are >= t, every one of the `k` largest is among them
    (the k-th largest is >= t) and the order of the compacted scores is the
    order of the original ones, so the selection and its tie-breaking are
    unchanged. Otherwise (an unlucky sample) the plain top-k over all scores
    runs instead. Vectors under `PREFILTER_MIN_SIZE` always take the plain path.

    Args:
      scores: 1-D float tensor with a static length (no NaN).
      k: int32 scalar tensor, 0 <= k <= len(scores).

    Returns:
      int32 1-D tensor of `k` indices.
    """
    size = scores.shape[0]
    if size is None or size < PREFILTER_MIN_SIZE:
        return ops.top_k(scores, k)[1]
    sample = scores[::_SAMPLE_STRIDE]
    sample_size = sample.shape[0]
    quota = ops.minimum(
        ops.cast(ops.ceil(ops.cast(k, "float32") * (_SAMPLE_MARGIN / _SAMPLE_STRIDE)), "int32") + 8, sample_size
    )
    threshold = ops.take(ops.top_k(sample, quota)[0], quota - 1)
    above = ops.greater_equal(scores, threshold)
    count = ops.sum(ops.cast(above, "int32"))

    def filtered():
        positions = ops.cast(ops.reshape(ops.nonzero(above)[0], (-1,)), "int32")
        return ops.take(positions, ops.top_k(ops.take(scores, positions), k)[1])

    def full():
        return ops.top_k(scores, k)[1]

    return ops.cond(ops.logical_and(count >= k, quota < sample_size), filtered, full)


def top_k_mask(scores, k):
    """A 0/1 vector marking the `k` largest entries of the 1-D `scores`.

    `k` may be a scalar tensor (the drop count varies between updates). Uses a
    top-k selection, O(n log k), not a full sort: the counts of a mask update
    are small next to the layer; on large layers a threshold pre-filter
    shrinks the top-k to about 1.5 k candidates with the same result
    (`_top_k_indices`). Ties go to the lower index.
    """
    size = ops.shape(scores)[0]
    indices = _top_k_indices(scores, ops.cast(k, "int32"))
    return ops.scatter(ops.expand_dims(indices, 1), ops.ones_like(indices, dtype=scores.dtype), (size,))


def drop_and_grow_indices(mask, drop_scores, grow_scores, num_drop):
    """The positions RigL's update drops and grows, as flat indices.

    Works on compact index lists rather than full-size 0/1 vectors, so a layer
    of n weights costs a few element-wise passes plus two top-k selections
    over about 1.5 `num_drop` candidates (`_top_k_indices`). Selects exactly
    what `drop_and_grow` documents:
    - dropped: the `num_drop` active positions of smallest `drop_scores`; ties
      drop the higher index (the lower index is kept);
    - grown: the `num_drop` positions of largest `grow_scores` among those not
      kept (inactive or just dropped); ties grow the lower index.

    Args:
      mask: 0/1 tensor, any static shape.
      drop_scores, grow_scores: tensors of the mask's shape (finite).
      num_drop: int scalar, 0 <= num_drop <= number of active positions.

    Returns:
      (dropped, grown): int32 1-D tensors of `num_drop` indices into the
      flattened mask each. A position may be in both (dropped and regrown).
    """
    flat_mask = ops.reshape(mask, (-1,))
    dtype = flat_mask.dtype
    num_drop = ops.cast(num_drop, "int32")
    flat_drop = ops.cast(ops.reshape(drop_scores, (-1,)), dtype)
    flat_grow = ops.cast(ops.reshape(grow_scores, (-1,)), dtype)

    # Dropped: bottom-k among the active positions (ascending index order).
    # A top-k of the negated, reversed list breaks ties towards the higher index.
    active = ops.cast(ops.reshape(ops.nonzero(flat_mask > 0)[0], (-1,)), "int32")
    reversed_scores = ops.flip(-ops.take(flat_drop, active), 0)
    last = ops.shape(active)[0] - 1
    dropped = ops.take(active, last - _top_k_indices(reversed_scores, num_drop))

    # Grown: top-k of the grow scores with the kept positions (active, not dropped) at -inf.
    lowest = ops.cast(float("-inf"), dtype)
    candidate_scores = ops.where(flat_mask > 0, lowest, flat_grow)
    candidate_scores = ops.scatter_update(
        candidate_scores, ops.expand_dims(dropped, 1), ops.take(flat_grow, dropped)
    )
    grown = _top_k_indices(candidate_scores, num_drop)
    return dropped, grown


def drop_and_grow(mask, drop_scores, grow_scores, num_drop):
    """Drops the `num_drop` lowest-scoring active weights, grows as many new ones.

    Follows RigL's update (Evci et al. 2020, Sec. 3): the kept set is the
    `active - num_drop` active positions of largest `drop_scores`; the grown set
    is the `num_drop` positions of largest `grow_scores` outside the kept set. A
    position dropped in this update may be grown again in the same update.
    Ties keep the lower index and grow the lower index
    (`drop_and_grow_indices` does the selection).

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
    dropped, grown = drop_and_grow_indices(mask, drop_scores, grow_scores, num_drop)
    ones = ops.ones_like(grown, dtype=flat_mask.dtype)
    # A position dropped and regrown gets -1 + 1: it stays active.
    change = ops.scatter(
        ops.expand_dims(ops.concatenate([dropped, grown], 0), 1), ops.concatenate([-ones, ones], 0), ops.shape(flat_mask)
    )
    grown_mask = ops.scatter(ops.expand_dims(grown, 1), ones, ops.shape(flat_mask))
    return ops.reshape(flat_mask + change, shape), ops.reshape(grown_mask, shape)
