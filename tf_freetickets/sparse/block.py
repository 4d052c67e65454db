"""Block sparsity for gradual magnitude pruning (tfmot's `block_size`, `block_pooling_type`).

tfmot (`pruning_impl._maybe_update_block_mask`) applies blocks only to rank-2
weights (a Dense kernel (in, out)): a block of `block_size=(r, c)` covers r
consecutive inputs (kernel rows) by c consecutive outputs (kernel columns).
Each block is scored by pooling |w| over it ("avg" or "max"), whole blocks are
pruned by that score along the schedule, and the block mask is expanded back
to the kernel. Blocks start at index 0; when r or c does not divide the
kernel's dims the last block of a row/column is partial and is pooled over its
own entries only. (tfmot pools with TF's SAME padding, which centres the
padding, so when the remainder leaves 2 or more padded entries its pooled
windows are shifted against the blocks its mask expands to; here scores and
masks use the same blocks.)

Counts: at sparsity s a layer of B blocks has floor(s B) zero blocks, exactly
(ties to the lower block index), as the unstructured pruning here floors;
tfmot keeps max(round((1 - s) B), 1) blocks plus ties at its threshold.

Everything here is `keras.ops` on one layer's tensors (compiled inside the
mask update) except the host-side checks.
"""

import math

import numpy as np
from keras import ops

from tf_freetickets.sparse.drop_grow import top_k_mask
from tf_freetickets.sparse.structured import StructureError

POOLINGS = ("avg", "max")


def check_block_size(block_size):
    """`block_size` as a tuple (r, c) of positive ints; ValueError in one line otherwise."""
    try:
        r, c = block_size
    except (TypeError, ValueError):
        raise ValueError(f"block_size must be a pair (rows, cols) of positive integers, got {block_size!r}.") from None
    if any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1 for v in (r, c)):
        raise ValueError(f"block_size must be a pair (rows, cols) of positive integers, got {block_size!r}.")
    return int(r), int(c)


def check_pooling(pooling):
    """`pooling` lower-cased ("avg" or "max", tfmot's "AVG"/"MAX" too); ValueError in one line otherwise."""
    if not isinstance(pooling, str) or pooling.lower() not in POOLINGS:
        raise ValueError(f"block_pooling must be one of {POOLINGS}, got {pooling!r}.")
    return pooling.lower()


def parse_block_size(text):
    """The (r, c) of a config string "r,c" (e.g. "1,4"); None for "" or "1,1" (no blocks)."""
    if text in ("", None):
        return None
    try:
        r, c = (int(part) for part in str(text).split(","))
    except ValueError:
        raise ValueError(f"block_size must be written 'rows,cols' (e.g. '1,4'), got {text!r}.") from None
    size = check_block_size((r, c))
    return None if size == (1, 1) else size


def check_layer(layer, block_size):
    """Refuses, in one line, a masked layer whose kernel is not rank 2 (tfmot's rule: Dense kernels only)."""
    shape = tuple(int(d) for d in layer.kernel_mask.shape)
    if len(shape) != 2:
        raise StructureError(
            f"Block sparsity {block_size} applies to rank-2 (Dense) kernels as in tfmot; layer {layer.name!r} "
            f"({type(layer).__name__}) has kernel shape {shape}."
        )


def block_grid(shape, block_size):
    """(rows, cols) of blocks over a rank-2 kernel of `shape`, partial edge blocks included."""
    return math.ceil(shape[0] / block_size[0]), math.ceil(shape[1] / block_size[1])


def _padded_blocks(x, block_size):
    """(Rb, Cb, r * c) view of a rank-2 tensor zero-padded at the end to whole blocks."""
    (rows, cols), (r, c) = x.shape, block_size
    rb, cb = block_grid((rows, cols), block_size)
    padded = ops.pad(x, ((0, rb * r - rows), (0, cb * c - cols)))
    return ops.reshape(ops.transpose(ops.reshape(padded, (rb, r, cb, c)), (0, 2, 1, 3)), (rb, cb, r * c))


def block_scores(weights, block_size, pooling):
    """Pooled |w| per block, (Rb, Cb): the mean over the block's own entries ("avg") or their max."""
    magnitude = ops.abs(weights)
    blocks = _padded_blocks(magnitude, block_size)
    if pooling == "max":
        return ops.max(blocks, axis=-1)  # the zero padding never exceeds |w|
    entries = ops.sum(_padded_blocks(ops.ones_like(magnitude), block_size), axis=-1)
    return ops.sum(blocks, axis=-1) / entries


def expand(block_mask, shape, block_size):
    """The kernel-shaped mask of a (Rb, Cb) block mask (each block's value over its entries)."""
    r, c = block_size
    full = ops.repeat(ops.repeat(block_mask, r, axis=0), c, axis=1)
    return full[: shape[0], : shape[1]]


def block_mask_of(mask, block_size):
    """(Rb, Cb) 1 where a block of `mask` has any active entry."""
    return ops.cast(ops.max(_padded_blocks(mask, block_size), axis=-1) > 0, mask.dtype)


def magnitude_mask(old_mask, weights, sparsity, block_size, pooling):
    """The mask after pruning whole blocks to floor(s B) zero blocks, smallest pooled |w| first (masks only shrink)."""
    shape = tuple(old_mask.shape)
    blocks = ops.reshape(block_mask_of(old_mask, block_size), (-1,))
    total = math.prod(block_grid(shape, block_size))
    zeros = ops.floor(ops.round(ops.cast(sparsity, "float64") * total * 1e6) / 1e6)
    num_drop = ops.maximum(ops.sum(ops.cast(blocks, "float64")) - (total - zeros), 0.0)
    scores = ops.reshape(block_scores(ops.cast(weights, blocks.dtype), block_size, pooling), (-1,))
    prune_scores = ops.where(blocks > 0, -scores, ops.cast(float("-inf"), blocks.dtype))
    kept = blocks - top_k_mask(prune_scores, ops.cast(num_drop, "int32"))
    return expand(ops.reshape(kept, block_grid(shape, block_size)), shape, block_size)


def block_counts(kernel, block_size):
    """Nonzero entries of each block (numpy, (Rb, Cb)) of a mask or a stripped rank-2 kernel."""
    kernel = np.asarray(kernel)
    return np.asarray(
        ops.convert_to_numpy(ops.sum(_padded_blocks(ops.convert_to_tensor(kernel != 0, "float32"), block_size), -1))
    )


def block_sizes(shape, block_size):
    """Entries of each block (numpy, (Rb, Cb)) of a rank-2 kernel of `shape`, partial edge blocks smaller."""
    return block_counts(np.ones(shape, "float32"), block_size)


def check_aligned(layer, block_size):
    """Refuses, in one line, a mask with a partly active block (block pruning needs a block-aligned start)."""
    mask = np.asarray(layer.kernel_mask.numpy())
    counts, sizes = block_counts(mask, block_size), block_sizes(mask.shape, block_size)
    if np.any((counts > 0) & (counts < sizes)):
        raise StructureError(
            f"Layer {layer.name!r} has blocks of {block_size} that are partly masked; block pruning needs whole "
            "blocks active: start dense (sparsify(model, sparsity=0))."
        )
