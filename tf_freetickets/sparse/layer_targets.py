"""Per-layer control: which layers are masked and each one's target sparsity.

A global distribution (uniform, ER, ERK: `densities.layer_densities`) gives
every masked layer a density. Per-layer overrides sit on top of it, as RigL's
`custom_sparsity_map` does (google-research/rigl, `sparse_utils.get_sparsities`):
an overridden layer gets exactly its own sparsity, and the distribution is
solved over the other layers alone, so those keep `sparsity` of their own
weights together. Used by `sparsify` (initial masks) and by
`GradualMagnitudePruning` (the targets it prunes to).
"""

from tf_freetickets.sparse import densities as densities_lib


def restrict_to(selected, include, maskable):
    """The layers of `selected` named in `include` (all of `selected` when None).

    Args:
      selected: layer names chosen so far (after `exclude` etc.), in model order.
      include: opt-in list of layer names, or None.
      maskable: every maskable layer name of the model (to tell unknown names
        from excluded ones).

    Raises:
      ValueError: `include` names a layer that is not maskable, one that is
        excluded, or nothing.
    """
    if include is None:
        return list(selected)
    if isinstance(include, str):
        raise ValueError(f"include must be a list of layer names, got the string {include!r}.")
    include = list(include)
    unknown = sorted(set(include) - set(maskable))
    if unknown:
        raise ValueError(f"include names layers {unknown} that are not maskable layers of the model; maskable: {list(maskable)}.")
    excluded = sorted(set(include) - set(selected))
    if excluded:
        raise ValueError(f"include names layers {excluded} that exclude (or dense_first_last) keeps dense.")
    chosen = [name for name in selected if name in set(include)]
    if not chosen:
        raise ValueError("include is empty; nothing would be sparse.")
    return chosen


def _overrides(items, layer_sparsity):
    if layer_sparsity is None:
        return {}
    names = [name for name, _ in items]
    if callable(layer_sparsity):
        found = {}
        for name, shape in items:
            value = layer_sparsity(name, tuple(shape))
            if value is not None:
                found[name] = densities_lib.check_sparsity(value, f"layer_sparsity({name!r}, {tuple(shape)})")
        return found
    if not isinstance(layer_sparsity, dict):
        raise ValueError(
            f"layer_sparsity must be a dict {{layer name: sparsity}} or a callable (name, shape) -> sparsity or None, "
            f"got {type(layer_sparsity).__name__}."
        )
    unknown = sorted(set(layer_sparsity) - set(names))
    if unknown:
        raise ValueError(f"layer_sparsity names layers {unknown} that are not masked; masked layers: {names}.")
    return {name: densities_lib.check_sparsity(value, f"layer_sparsity[{name!r}]") for name, value in layer_sparsity.items()}


def layer_sparsities(shapes, sparsity, distribution="erk", erk_power_scale=1.0, layer_sparsity=None):
    """Target sparsity of every masked layer: a distribution plus per-layer overrides.

    Args:
      shapes: list of (layer name, kernel shape) pairs or a dict, in model order.
      sparsity: global sparsity of the layers without an override, in [0, 1).
      distribution: "uniform", "er" or "erk" (see `densities.layer_densities`).
      erk_power_scale: exponent on the ER/ERK raw densities.
      layer_sparsity: None; a dict {layer name: sparsity in [0, 1)}; or a
        callable `(name, shape) -> sparsity or None` (None: leave the layer to
        the distribution).

    Returns:
      dict layer name -> sparsity in [0, 1), in the order of `shapes`.

    Raises:
      ValueError: an override names an unknown layer or is outside [0, 1), or
        a bad sparsity / distribution.
    """
    items = list(shapes.items()) if isinstance(shapes, dict) else list(shapes)
    sparsity = densities_lib.check_sparsity(sparsity)
    fixed = _overrides(items, layer_sparsity)
    rest = [(name, shape) for name, shape in items if name not in fixed]
    solved = {}
    if rest:
        densities = densities_lib.layer_densities(rest, sparsity, distribution, erk_power_scale)
        # Uniform layers get `sparsity` itself, not 1 - (1 - sparsity), which may differ in the last bit.
        solved = {name: sparsity if distribution == "uniform" else 1.0 - d for name, d in densities.items()}
    else:
        densities_lib.layer_densities(items, sparsity, distribution, erk_power_scale)  # validates the arguments
    return {name: fixed[name] if name in fixed else solved[name] for name, _ in items}


def layer_densities(shapes, sparsity, distribution="erk", erk_power_scale=1.0, layer_sparsity=None):
    """`layer_sparsities` as densities (1 - sparsity): what `sparsify` builds masks from."""
    if layer_sparsity is None:
        return densities_lib.layer_densities(shapes, sparsity, distribution, erk_power_scale)
    return {
        name: 1.0 - value
        for name, value in layer_sparsities(shapes, sparsity, distribution, erk_power_scale, layer_sparsity).items()
    }
