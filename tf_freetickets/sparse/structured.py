"""N:M structured sparsity: every group of M consecutive input weights keeps exactly N.

tfmot's `sparsity_m_by_n` (its `pruning_utils.weights_rearrange`): groups run
along the input dimension of each output unit, in TFLite's kernel layout
[out, spatial..., in]: for a Dense kernel (in, out), M consecutive rows of one
column; for a ConvND kernel (spatial..., in, out), M consecutive input
channels at one spatial position of one filter. 2:4 is what sparse tensor
cores run. tfmot counts zeros, (2, 4) = "2 zeros in 4"; here `n_m=(N, M)`
counts the weights kept, so tfmot's `sparsity_m_by_n=(z, m)` is
`n_m=(m - z, m)`.

Everything here is `keras.ops` on one layer's tensors (compiled inside the
mask update) except the host-side checks and the initial-mask draw.
"""

import math

import keras
import numpy as np
from keras import ops

from tf_freetickets.sparse.drop_grow import top_k_mask

# Layers whose kernel is (spatial..., in, out) with in the summed input axis.
_SUPPORTED = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_NOT_SUPPORTED = (
    keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose,
    keras.layers.Conv3DTranspose,
    keras.layers.DepthwiseConv1D,
    keras.layers.DepthwiseConv2D,
)


class StructureError(ValueError):
    """A model's layers cannot take the requested structure (N:M or blocks): a user error, one line."""


def check_n_m(n_m):
    """`n_m` as a tuple (N, M) of ints with 1 <= N < M; ValueError in one line otherwise."""
    try:
        n, m = n_m
    except (TypeError, ValueError):
        raise ValueError(f"n_m must be a pair (N, M) of integers with 1 <= N < M, got {n_m!r}.") from None
    if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in (n, m)) or not 1 <= n < m:
        raise ValueError(f"n_m must be a pair (N, M) of integers with 1 <= N < M, got {n_m!r}.")
    return int(n), int(m)


def parse_n_m(text):
    """The (N, M) of a config string "N:M"; None for the empty string."""
    if text in ("", None):
        return None
    try:
        n, m = (int(part) for part in str(text).split(":"))
    except ValueError:
        raise ValueError(f"n_m must be written 'N:M' (e.g. '2:4'), got {text!r}.") from None
    return check_n_m((n, m))


def check_n_m_sparsity(n_m, sparsity, what="sparsity"):
    """Refuses a target sparsity other than 1 - N/M (every layer keeps exactly N of M)."""
    n, m = n_m
    if abs(float(sparsity) - (1.0 - n / m)) > 1e-9:
        raise ValueError(f"N:M sparsity {n}:{m} keeps {n}/{m} of every layer, so {what} must be {1 - n / m:g}, got {sparsity!r}.")


def check_layer(layer, n_m):
    """Refuses, in one line, a masked layer N:M cannot apply to (kind, or input dim not divisible by M)."""
    n, m = n_m
    if isinstance(layer, _NOT_SUPPORTED) or not isinstance(layer, _SUPPORTED):
        raise StructureError(
            f"N:M sparsity applies to Dense and Conv1D/2D/3D kernels; layer {layer.name!r} is a {type(layer).__name__}."
        )
    inputs = int(layer.kernel_mask.shape[-2])
    if inputs % m:
        raise StructureError(
            f"N:M sparsity {n}:{m} needs each layer's input dimension divisible by {m}; layer {layer.name!r} has {inputs}."
        )


def to_groups(x, m):
    """(G, M) view of a kernel-shaped tensor: groups of M consecutive inputs per (out, spatial) row."""
    rank = len(x.shape)
    perm = (rank - 1, *range(rank - 2), rank - 2)  # TFLite layout [out, spatial..., in]
    return ops.reshape(ops.transpose(x, perm), (-1, m))


def from_groups(groups, shape):
    """The inverse of `to_groups` for a kernel of `shape`."""
    rank = len(shape)
    permuted = (shape[-1], *shape[:-2], shape[-2])
    inverse = (*range(1, rank - 1), rank - 1, 0)
    return ops.transpose(ops.reshape(groups, permuted), inverse)


def group_counts(kernel, m):
    """Nonzero entries of each group of M (numpy, (G,)): the per-group count of a mask or a stripped kernel."""
    return np.count_nonzero(np.asarray(ops.convert_to_numpy(to_groups(ops.convert_to_tensor(kernel), m))), axis=1)


def _ranks_in_groups(scores):
    """Rank of each entry within its row, 0 = largest; ties to the lower index."""
    order = ops.argsort(-scores, axis=1)  # stable
    return ops.argsort(order, axis=1)


def keep_per_group(sparsity, m):
    """Weights kept per group of M at `sparsity` (tensor): M - floor(round(s * M, 6))."""
    return m - ops.floor(ops.round(ops.cast(sparsity, "float64") * m * 1e6) / 1e6)


def magnitude_mask(old_mask, weights, keep, m):
    """Each group keeps its `keep` largest |w| among its active positions (gradual pruning; masks only shrink)."""
    shape = tuple(old_mask.shape)
    mask = to_groups(old_mask, m)
    lowest = ops.cast(float("-inf"), mask.dtype)
    scores = ops.where(mask > 0, ops.abs(ops.cast(to_groups(weights, m), mask.dtype)), lowest)
    ranks = _ranks_in_groups(scores)
    kept = ops.cast(ops.logical_and(ranks < ops.cast(keep, ranks.dtype), mask > 0), mask.dtype)
    return from_groups(kept, shape)


def drop_and_grow(old_mask, drop_scores, grow_scores, num_drop, m):
    """RigL/SET's drop and grow under N:M: (new_mask, grown), each group keeping its count.

    The `num_drop` active weights of smallest `drop_scores` over the whole
    layer are dropped (as without N:M); then each group grows as many as it
    lost, its positions not kept of largest `grow_scores` (a weight dropped
    here may come back, as in RigL). Ties to the lower index within a group.
    """
    shape = tuple(old_mask.shape)
    flat = ops.reshape(old_mask, (-1,))
    dtype = flat.dtype
    lowest = ops.cast(float("-inf"), dtype)
    scores = ops.where(flat > 0, -ops.cast(ops.reshape(drop_scores, (-1,)), dtype), lowest)
    dropped = ops.reshape(top_k_mask(scores, ops.cast(num_drop, "int32")), shape)
    kept = to_groups(old_mask - dropped, m)
    lost = ops.sum(to_groups(dropped, m), axis=1, keepdims=True)
    candidates = ops.where(kept > 0, lowest, ops.cast(to_groups(grow_scores, m), dtype))
    grown = ops.cast(_ranks_in_groups(candidates) < ops.cast(lost, "int32"), dtype)
    return from_groups(kept + grown, shape), from_groups(grown, shape)


def initial_mask(mask, n, m, rng):
    """A random N:M mask (numpy) that keeps as many of `mask`'s active positions as it can."""
    groups = np.asarray(ops.convert_to_numpy(to_groups(ops.convert_to_tensor(mask), m)))
    priority = groups + rng.uniform(size=groups.shape) * 0.5  # active first, random among equals
    ranks = np.argsort(np.argsort(-priority, axis=1, kind="stable"), axis=1, kind="stable")
    new = (ranks < n).astype(groups.dtype)
    return np.asarray(ops.convert_to_numpy(from_groups(ops.convert_to_tensor(new), tuple(mask.shape))))


def group_total(shape, m):
    """Number of N:M groups in a kernel of `shape`."""
    return math.prod(shape) // m
