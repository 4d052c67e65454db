"""Layer-wise densities: uniform, Erdos-Renyi (ER) and Erdos-Renyi-Kernel (ERK).

Follows RigL (Evci et al. 2020, Sec. 3 and its `sparse_utils` reference code):
every masked layer gets density `eps * raw(shape)`, with one global `eps` chosen
so that the masked layers together keep `(1 - sparsity)` of their weights.

- ER:  raw = (n_in + n_out) / (n_in * n_out), from the last two kernel dims.
- ERK: raw = sum(shape) / prod(shape), the kernel's spatial dims included.

A layer whose density would exceed 1 is made dense, its surplus is taken from
the budget of the others, and `eps` is solved again until no layer exceeds 1.
"""

import math

import numpy as np

DISTRIBUTIONS = ("uniform", "er", "erk")


def check_sparsity(sparsity, name="sparsity"):
    """Raises ValueError unless `sparsity` is a number in [0, 1)."""
    if isinstance(sparsity, bool) or not isinstance(sparsity, (int, float, np.floating)):
        raise ValueError(f"{name} must be a number in [0, 1), got {sparsity!r}.")
    if not 0.0 <= float(sparsity) < 1.0 or math.isnan(sparsity):
        raise ValueError(f"{name} must be in [0, 1), got {sparsity!r}.")
    return float(sparsity)


def _raw_probability(shape, distribution, erk_power_scale):
    shape = tuple(int(d) for d in shape)
    if distribution == "erk":
        dims = shape
    else:  # "er": only the fan-in / fan-out dims, as for a dense matrix
        dims = shape[-2:] if len(shape) >= 2 else shape
    return (sum(dims) / float(np.prod(dims))) ** erk_power_scale


def layer_densities(shapes, sparsity, distribution="erk", erk_power_scale=1.0):
    """Computes the density of each masked layer for a global sparsity.

    Args:
      shapes: mapping layer name -> kernel shape (tuple of ints), or a list of
        (name, shape) pairs. Order is kept.
      sparsity: fraction of the weights of these layers that are zero, in [0, 1).
      distribution: "uniform" (every layer at `1 - sparsity`), "er" or "erk"
        (RigL's Erdos-Renyi and Erdos-Renyi-Kernel).
      erk_power_scale: exponent on the raw ER/ERK probabilities; 1.0 is the
        papers' choice, 0.0 reduces to uniform.

    Returns:
      dict layer name -> density in (0, 1]. The total number of active weights,
      sum(density * size), equals (1 - sparsity) * sum(size) up to rounding.

    Raises:
      ValueError: unknown distribution, sparsity outside [0, 1), empty shapes,
        or a shape with a zero or negative dimension.
    """
    sparsity = check_sparsity(sparsity)
    if distribution not in DISTRIBUTIONS:
        raise ValueError(f"Unknown density distribution {distribution!r}; use one of {DISTRIBUTIONS}.")
    items = list(shapes.items()) if isinstance(shapes, dict) else list(shapes)
    if not items:
        raise ValueError("layer_densities needs at least one layer shape.")
    for name, shape in items:
        if len(shape) == 0 or min(int(d) for d in shape) <= 0:
            raise ValueError(f"Layer {name!r} has kernel shape {tuple(shape)}; every dimension must be positive.")
    density = 1.0 - sparsity
    if distribution == "uniform":
        return {name: density for name, _ in items}

    sizes = {name: float(np.prod(shape)) for name, shape in items}
    raw = {name: _raw_probability(shape, distribution, erk_power_scale) for name, shape in items}
    dense_layers = set()
    while True:
        budget = 0.0  # active weights left for the layers still sparse
        divisor = 0.0
        for name, _ in items:
            if name in dense_layers:
                budget -= sizes[name] * sparsity
            else:
                budget += sizes[name] * density
                divisor += raw[name] * sizes[name]
        if divisor == 0.0:  # every layer dense: only possible at sparsity 0
            break
        eps = budget / divisor
        sparse_raw = [raw[name] for name, _ in items if name not in dense_layers]
        largest = max(sparse_raw)
        if eps * largest <= 1.0:
            break
        dense_layers.update(name for name, _ in items if name not in dense_layers and raw[name] == largest)
    return {name: 1.0 if name in dense_layers else eps * raw[name] for name, _ in items}


def active_count(size, density):
    """Number of active weights a layer of `size` weights keeps at `density`.

    RigL's mask constructor zeroes floor(sparsity * size) entries; rounding the
    product first makes densities such as 0.3 * 100 land on 30, not 29.
    """
    zeros = math.floor(round((1.0 - density) * size, 6))
    return int(size - zeros)
