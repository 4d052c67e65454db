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
    """One masked layer: its name, kernel shape, density, active weights and whether its mask is exactly 0/1."""

    name: str
    shape: tuple
    active: int
    total: int
    binary: bool = True

    @property
    def density(self):
        return self.active / self.total


def sparsity_rows(model):
    """One `LayerSparsity` per masked layer of `model`, read from the masks (active = mask != 0)."""
    rows = []
    for layer in masking.masked_layers(model):
        mask = np.asarray(layer.kernel_mask.numpy())
        binary = bool(np.all((mask == 0) | (mask == 1)))
        rows.append(LayerSparsity(layer.name, tuple(mask.shape), int(np.count_nonzero(mask)), int(mask.size), binary))
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
    """A printable table: name, kernel shape, density, active / total weights.

    The last line sums the masked layers; a layer whose mask is not exactly
    0/1 is marked "NOT 0/1" (its active count is its nonzero entries). Example:

      >>> print(tft.sparsity_table(model))
    """
    rows = sparsity_rows(model)
    lines = [f"{'layer':<28} {'kernel shape':<20} {'density':>8} {'active':>10} {'total':>10}"]
    for row in rows:
        shape = "x".join(str(d) for d in row.shape)
        flag = "" if row.binary else "  NOT 0/1"
        lines.append(f"{row.name:<28} {shape:<20} {row.density:>8.4f} {row.active:>10d} {row.total:>10d}{flag}")
    active = sum(row.active for row in rows)
    total = sum(row.total for row in rows)
    if total:
        lines.append(f"{'all masked layers':<28} {'':<20} {active / total:>8.4f} {active:>10d} {total:>10d}")
    return "\n".join(lines)


def model_masks(model):
    """{layer name: bool mask array} of every masked layer of `model`."""
    return {layer.name: layer.kernel_mask.numpy().astype(bool) for layer in masking.masked_layers(model)}


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
