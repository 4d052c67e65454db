"""The prune-and-regrow step shared by every dynamic-sparse-training updater.

Pure `keras.ops` functions on one layer's tensors, compiled inside the
updater's `tf.function`. Counts are exact: a layer with `n` active weights keeps
`n - k` of them (largest drop score) and activates `k` new ones (largest grow
score among the positions it did not keep), so its active count never moves.
"""

from keras import ops

# Layers at least this large select through a threshold pre-filter (see
# `_top_k_indices`); smaller ones run one plain top-k.
PREFILTER_MIN_SIZE = 1 << 13
# The pre-filter reads two thresholds off every `_SAMPLE_STRIDE`-th score, at
# the sample ranks k / stride x (1 -+ `_SAMPLE_BAND`) (-+ a few), so that the
# band between them almost always holds the k-th largest score.
_SAMPLE_STRIDE = 32
_SAMPLE_BAND = 0.2


def _top_k_indices(scores, k):
    """Indices of the `k` largest entries of the 1-D `scores`, ties to the lower index.

    Selects exactly the set `ops.top_k(scores, k)` selects (in another
    order), faster on large vectors: a top-k over n scores runs a heap over
    all n, which is slow when k is in the thousands. Instead two thresholds
    `lo <= hi` are read off a strided sample of the scores. The positions with
    score >= lo are compacted in index order; those with score > hi are taken
    outright and the rest of the k are chosen by a top-k among the band
    lo <= score <= hi. When at most k scores exceed hi and at least k are
    >= lo, this is exact: every score above hi beats every score outside the
    band, the k-th largest lies in the band, and all scores equal to it are in
    the band in their original index order, so ties break as before.
    Otherwise (an unlucky sample) the plain top-k runs. Vectors under
    `PREFILTER_MIN_SIZE` always take the plain path.

    Args:
      scores: 1-D float tensor with a static length (no NaN).
      k: int32 scalar tensor, 0 <= k <= len(scores).

    Returns:
      int32 1-D tensor of `k` indices (not sorted).
    """
    size = scores.shape[0]
    if size is None or size < PREFILTER_MIN_SIZE:
        return ops.top_k(scores, k)[1]
    sample = scores[::_SAMPLE_STRIDE]
    sample_size = sample.shape[0]
    expected = ops.cast(k, "float32") / _SAMPLE_STRIDE
    rank_lo = ops.minimum(ops.cast(ops.ceil(expected * (1.0 + _SAMPLE_BAND)), "int32") + 8, sample_size)
    rank_hi = ops.maximum(ops.cast(ops.floor(expected * (1.0 - _SAMPLE_BAND)), "int32") - 8, 0)
    sample_best = ops.top_k(sample, rank_lo)[0]
    low = ops.take(sample_best, rank_lo - 1)
    high = ops.where(
        rank_hi > 0, ops.take(sample_best, ops.maximum(rank_hi - 1, 0)), ops.cast(float("inf"), scores.dtype)
    )
    positions = ops.cast(ops.reshape(ops.nonzero(ops.greater_equal(scores, low))[0], (-1,)), "int32")
    values = ops.take(scores, positions)
    is_sure = ops.greater(values, high)
    num_sure = ops.sum(ops.cast(is_sure, "int32"))
    exact = ops.logical_and(
        ops.logical_and(num_sure <= k, ops.shape(positions)[0] >= k), rank_lo < sample_size
    )

    def filtered():
        sure = ops.take(positions, ops.reshape(ops.nonzero(is_sure)[0], (-1,)))
        band = ops.reshape(ops.nonzero(ops.logical_not(is_sure))[0], (-1,))
        chosen = ops.top_k(ops.take(values, band), k - num_sure)[1]
        return ops.concatenate([sure, ops.take(positions, ops.take(band, chosen))], 0)

    def full():
        return ops.top_k(scores, k)[1]

    return ops.cond(exact, filtered, full)


def top_k_mask(scores, k):
    """A 0/1 vector marking the `k` largest entries of the 1-D `scores`.

    `k` may be a scalar tensor (the drop count varies between updates). Uses a
    top-k selection, O(n log k), not a full sort: the counts of a mask update
    are small next to the layer; on large layers a threshold pre-filter
    shrinks the top-k to a band of about 0.4 k candidates with the same result
    (`_top_k_indices`). Ties go to the lower index.
    """
    size = ops.shape(scores)[0]
    indices = _top_k_indices(scores, ops.cast(k, "int32"))
    return ops.scatter(ops.expand_dims(indices, 1), ops.ones_like(indices, dtype=scores.dtype), (size,))


def drop_and_grow_indices(mask, drop_scores, grow_scores, num_drop):
    """The positions RigL's update drops and grows, as flat indices.

    Works on compact index lists rather than full-size 0/1 vectors, so a layer
    of n weights costs a few element-wise passes plus two top-k selections
    over a band of about 0.4 `num_drop` candidates (`_top_k_indices`). Selects exactly
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
