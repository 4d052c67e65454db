"""Per-layer sparsity report of a masked model.

Active weights are counted as mask entries != 0, so a mask that is not
exactly 0/1 (a corrupted run) is neither summed into wrong counts nor hidden:
`sparsity_table` marks it and `global_sparsity` warns.
"""

import dataclasses
import warnings

import numpy as np

from tf_freetickets.sparse import layers as masking


@dataclasses.dataclass(frozen=True)
class LayerSparsity:
    """One kernel: its name, shape, density, active weights and what happens to its mask.

    `binary` is False when the mask holds a value other than 0 and 1. `note`
    is "" for a masked kernel whose mask the updates change, "frozen:
    mask fixed" for a masked kernel of a non-trainable layer, and "not masked:
    <reason>" for a kernel without a mask (counted dense, outside the budget).
    """

    name: str
    shape: tuple
    active: int
    total: int
    note: str = ""
    binary: bool = True

    @property
    def density(self):
        """Active weights over all weights of the layer."""
        return self.active / self.total


def sparsity_rows(model):
    """One `LayerSparsity` per masked layer of `model`, read from the masks (active = mask != 0).

    Layers inside other layers are named "parent/child" (attention projections).
    """
    rows = []
    names = masking.qualified_names(model)
    for layer in masking.masked_layers(model):
        mask = np.asarray(layer.kernel_mask.numpy())
        note = "frozen: mask fixed" if masking.is_frozen(layer) else ""
        binary = bool(np.all((mask == 0) | (mask == 1)))
        rows.append(
            LayerSparsity(names[id(layer)], tuple(mask.shape), int(np.count_nonzero(mask)), int(mask.size), note, binary)
        )
    return rows


def unmasked_rows(model):
    """One `LayerSparsity` per kernel of `model` without a mask (density 1, note says why)."""
    from tf_freetickets.sparse.sparsify import kernels_without_mask

    variables = {v.path: v for v in model.weights}
    rows = []
    for path, reason in kernels_without_mask(model):
        shape = tuple(variables[path].shape)
        size = int(np.prod(shape))
        rows.append(LayerSparsity(path, shape, size, size, f"not masked: {reason}"))
    return rows


def non_binary_masks(model):
    """Names of the masked layers of `model` whose mask holds a value other than 0 and 1."""
    return [row.name for row in sparsity_rows(model) if not row.binary]


def global_sparsity(model):
    """Fraction of zero mask entries over all masked kernels of `model` (warns if a mask is not 0/1)."""
    rows = sparsity_rows(model)
    total = sum(row.total for row in rows)
    if total == 0:
        raise ValueError(f"Model {model.name!r} has no masked layers; call tf_freetickets.sparsify first.")
    not_binary = [row.name for row in rows if not row.binary]
    if not_binary:
        warnings.warn(f"Masks of {not_binary} are not 0/1; sparsity counts their nonzero entries.", stacklevel=2)
    return 1.0 - sum(row.active for row in rows) / total


def sparsity_table(model):
    """A printable table of every kernel: name, shape, density, active / total, note.

    Masked layers come first, then kernels without a mask (recurrent cells,
    embeddings, excluded layers) with the reason in the note column. The last
    line sums the masked layers only: that is the sparsity `sparsify` was
    asked for. A layer whose mask is not exactly 0/1 is marked "NOT 0/1" (its
    active count is its nonzero entries). Example:

      >>> print(tft.sparsity_table(model))
    """
    rows = sparsity_rows(model)
    every = rows + unmasked_rows(model)
    width = max([28] + [len(row.name) + 1 for row in every])
    lines = [f"{'layer':<{width}} {'kernel shape':<20} {'density':>8} {'active':>10} {'total':>10}  note"]
    for row in every:
        shape = "x".join(str(d) for d in row.shape)
        flag = "" if row.binary else "  NOT 0/1"
        line = f"{row.name:<{width}} {shape:<20} {row.density:>8.4f} {row.active:>10d} {row.total:>10d}  {row.note}{flag}"
        lines.append(line.rstrip())
    active = sum(row.active for row in rows)
    total = sum(row.total for row in rows)
    if total:
        lines.append(f"{'all masked layers':<{width}} {'':<20} {active / total:>8.4f} {active:>10d} {total:>10d}")
    return "\n".join(lines)


def model_masks(model):
    """{layer name: bool mask array} of every masked layer of `model` ("parent/child" inside other layers)."""
    names = masking.qualified_names(model)
    return {names[id(layer)]: layer.kernel_mask.numpy().astype(bool) for layer in masking.masked_layers(model)}


def mask_overlap(masks_a, masks_b):
    """Fraction of the active weights of `masks_a` that are also active in `masks_b`.

    Args:
      masks_a, masks_b: models with masked layers, or dicts layer name -> mask
        array, over the same layers and shapes.

    Returns:
      float in [0, 1]; 1 for identical masks. Symmetric when both masks have the
      same number of active weights, as DST tickets do.
    """
    a = masks_a if isinstance(masks_a, dict) else model_masks(masks_a)
    b = masks_b if isinstance(masks_b, dict) else model_masks(masks_b)
    if sorted(a) != sorted(b):
        raise ValueError(f"Masks cover different layers: {sorted(a)} vs {sorted(b)}.")
    shared = active = 0
    for name, mask in a.items():
        if np.shape(mask) != np.shape(b[name]):
            raise ValueError(f"Layer {name!r} has mask shape {np.shape(mask)} vs {np.shape(b[name])}.")
        mask = np.asarray(mask, bool)
        shared += int(np.sum(mask & np.asarray(b[name], bool)))
        active += int(mask.sum())
    if active == 0:
        raise ValueError("The first masks have no active weight.")
    return shared / active
