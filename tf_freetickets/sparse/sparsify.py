"""`sparsify(model, ...)`: turn a built Keras model into a masked sparse one; `init_masks` for any model.

What is masked: every layer with a `kernel` (Dense, Conv*, DepthwiseConv*,
Conv*Transpose, EinsumDense, user layers with a `kernel`) and the four
projections inside MultiHeadAttention. What is not: kernels inside other
layers (LSTM/GRU/SimpleRNN cells, Embedding tables, user layers that hold
sublayers). Those are left out of the sparsity budget, named in a warning, and
listed by `sparsity_table` with the reason, so the sparsity asked for is the
sparsity measured over what is masked.
"""

import warnings

import keras
import numpy as np

from tf_freetickets import keras_compat
from tf_freetickets.sparse import densities as densities_lib
from tf_freetickets.sparse import layer_targets
from tf_freetickets.sparse import layers as masking


def _maskable_units(model):
    """[(qualified name, kernel layer, owner)] for every kernel `sparsify` can mask.

    `owner` is the model-level layer that is rebuilt as a masked class: the
    kernel layer itself, or the MultiHeadAttention holding it.
    """
    names = masking.qualified_names(model)
    units = []

    def walk(container):
        for layer in keras_compat.child_layers(container):
            if isinstance(layer, keras.Model):
                walk(layer)
            elif isinstance(layer, masking.CONTAINER_CLASSES) and layer.built:
                units.extend((names[id(s)], s, layer) for s in keras_compat.own_sublayers(layer) if masking._has_kernel(s))
            elif layer.built and not isinstance(layer, keras.layers.RNN) and masking._has_kernel(layer):
                units.append((names[id(layer)], layer, layer))

    walk(model)
    return units


def maskable_layer_names(model):
    """Qualified names of the kernels of `model` that `sparsify` can mask ("mha/query" inside attention)."""
    return [name for name, _, _ in _maskable_units(model)]


def kernels_without_mask(model):
    """[(variable path, reason)] for the kernels of `model` that carry no mask.

    A kernel is a weight of rank >= 2 other than a mask or a bias. Reasons: "excluded
    (dense)" for a kernel layer kept dense, "recurrent layer (LSTM) not
    maskable", "embedding not masked", or "inside <Layer class> not maskable".
    """
    masked = masking.masked_layers(model)
    skip = {id(layer.kernel_variable) for layer in masked} | {id(layer.kernel_mask) for layer in masked}
    reasons = {}

    def walk(container):
        for layer in keras_compat.child_layers(container):
            if isinstance(layer, keras.Model):
                walk(layer)
                continue
            if isinstance(layer, keras.layers.RNN):
                reason = f"recurrent layer ({type(layer).__name__}) not maskable"
            elif isinstance(layer, keras.layers.Embedding):
                reason = "embedding not masked"
            elif masking._has_kernel(layer) or isinstance(layer, masking.CONTAINER_CLASSES):
                reason = "excluded (dense)"
            else:
                reason = f"inside {type(layer).__name__} not maskable"
            for variable in layer.weights:
                if id(variable) not in skip and len(variable.shape) >= 2 and "bias" not in variable.name:
                    reasons.setdefault(id(variable), (variable.path, reason))

    walk(model)
    return list(reasons.values())


def _warn_unmasked(model, ignore_reason=None):
    left_out = [(path, reason) for path, reason in kernels_without_mask(model) if reason != ignore_reason]
    if left_out:
        listed = ", ".join(f"{path} ({reason})" for path, reason in left_out)
        warnings.warn(
            f"{len(left_out)} kernel(s) of model {model.name!r} carry no mask and are left out of the sparsity "
            f"budget: {listed}. The sparsity asked for holds over the masked kernels; see tft.sparsity_table.",
            stacklevel=3,
        )


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(f"sparsify expects a keras.Model, got {type(model).__name__}.")
    if not model.built:
        raise ValueError(f"Model {model.name!r} is not built; call it on data or build it with an input shape before sparsify.")
    if not keras_compat.is_functional_or_sequential(model):
        raise TypeError(
            f"sparsify rebuilds Functional and Sequential models only; {type(model).__name__} is a subclassed model. "
            "Create its kernel layers with tft.sparse.masked_class_for(keras.layers.Dense)(...) (same arguments), "
            "build the model, then call tft.init_masks(model, sparsity) to set the starting masks."
        )
    if masking.masked_layers(model):
        raise ValueError(f"Model {model.name!r} already has masked layers; sparsify it only once.")


def _select_units(model, exclude, dense_first_last):
    units = _maskable_units(model)
    if not units:
        raise ValueError(f"Model {model.name!r} has no layer with a kernel to sparsify.")
    names = [name for name, _, _ in units]
    owner_names = {owner.name for _, _, owner in units}
    exclude = set(exclude or ())
    unknown = sorted(exclude - set(names) - owner_names)
    if unknown:
        raise ValueError(f"exclude names layers {unknown} that are not maskable layers of the model; maskable: {names}.")
    excluded_owners = {id(owner) for name, layer, owner in units if name in exclude or owner.name in exclude}
    partial = sorted(name for name, layer, owner in units if layer is not owner and name in exclude)
    if partial:
        raise ValueError(
            f"exclude names {partial}, projections inside an attention layer; exclude the whole layer "
            f"({sorted({n.split('/')[0] for n in partial})}) or none of its projections."
        )
    if dense_first_last:
        excluded_owners.update({id(units[0][2]), id(units[-1][2])})
    selected = [(name, layer, owner) for name, layer, owner in units if id(owner) not in excluded_owners]
    if not selected:
        raise ValueError("Every maskable layer is excluded; nothing would be sparse.")
    return selected


def _config_error(layer, problem):
    kind = type(layer).__name__
    return TypeError(
        f"sparsify rebuilds each layer from its config, and layer {layer.name!r} ({kind}) {problem}. Give {kind} a "
        "get_config() that returns its __init__ arguments merged into super().get_config(), and let __init__ pass "
        "**kwargs to super().__init__ (see keras.layers.Layer.get_config)."
    )


def _copy_config(layer, cls):
    try:
        copy = cls.from_config(layer.get_config())
    except (NotImplementedError, TypeError, KeyError, ValueError) as error:
        raise _config_error(layer, f"cannot be rebuilt from get_config(): {type(error).__name__}: {error}") from error
    if copy.name != layer.name:
        raise _config_error(layer, f"comes back from get_config() as {copy.name!r}: its config lost the name")
    return copy


def _assign_masks(masked, densities, seed):
    rng = np.random.default_rng(seed)
    for name, layer in masked:
        masking.assign_random_mask(layer, densities[name], rng)


def _copy_trainable_flags(source, clone):
    """Gives every layer of `clone` the `trainable` flag of its twin in `source`, containers first.

    `clone_model` rebuilds a nested model from its config, which has no
    `trainable`, while each layer's config does: a frozen backbone came back
    reporting `trainable=True` over frozen layers, and TensorFlow's tracking
    skips an assignment of the value an attribute already holds, so
    `backbone.trainable = True` did nothing. Setting containers before their
    layers restores both levels as the user left them.
    """
    clone.trainable = source.trainable
    for source_layer, clone_layer in zip(keras_compat.child_layers(source), keras_compat.child_layers(clone), strict=True):
        if isinstance(source_layer, keras.Model):
            _copy_trainable_flags(source_layer, clone_layer)
        else:
            clone_layer.trainable = source_layer.trainable


def _copy_weights(model, clone):
    """Copies every weight of `model` into its twin in the masked `clone` (masks aside)."""
    masks = {id(layer.kernel_mask) for layer in masking.masked_layers(clone)}
    targets = [v for v in clone.weights if id(v) not in masks]
    if len(targets) != len(model.weights):
        raise RuntimeError(
            f"sparsify: the masked copy of {model.name!r} has {len(targets)} weights, the model {len(model.weights)}."
        )
    for target, source in zip(targets, model.weights, strict=True):
        if tuple(target.shape) != tuple(source.shape):
            raise RuntimeError(
                f"sparsify: weight {target.path} {tuple(target.shape)} does not match {source.path} {tuple(source.shape)}."
            )
        target.assign(source)


def init_masks(model, sparsity, distribution="erk", erk_power_scale=1.0, seed=None):
    """Sets random starting masks on the masked layers of any built model, in place.

    The public way to start sparse training on a model `sparsify` cannot
    rebuild, e.g. a subclassed one: create its kernel layers with
    `masked_class_for(keras.layers.Dense)(...)` (same arguments as the plain
    layer), build the model, then call this. Each masked layer gets exactly
    `active_count(size, density)` active weights at the layer-wise density of
    `distribution` (RigL's ERK by default), its kernel is zeroed outside the
    mask, and the density is kept in the layer's config (`target_density`).

    Args:
      model: a built `keras.Model` with masked layers (nested ones included).
      sparsity: fraction of zeros over all masked kernels, in [0, 1).
      distribution: "erk" (default), "er" or "uniform".
      erk_power_scale: exponent on ER/ERK raw densities (1.0 in the papers).
      seed: int seed for the random masks (None: fresh randomness).

    Returns:
      dict qualified layer name -> density given.

    Raises:
      ValueError: no masked layer, a masked layer not built yet, bad sparsity or
        distribution.
    """
    sparsity = densities_lib.check_sparsity(sparsity)
    if not isinstance(model, keras.Model):
        raise TypeError(f"init_masks expects a keras.Model, got {type(model).__name__}.")
    names = masking.qualified_names(model)
    layers = masking.masked_layers(model)
    if not layers:
        raise ValueError(
            f"Model {model.name!r} has no masked layers: build its kernel layers with "
            "tft.sparse.masked_class_for(<layer class>)(...) or use tft.sparsify on Functional/Sequential models."
        )
    unbuilt = [layer.name for layer in layers if getattr(layer, "kernel_mask", None) is None]
    if unbuilt:
        raise ValueError(f"Masked layers {unbuilt} of model {model.name!r} are not built; call the model on data first.")
    masked = [(names[id(layer)], layer) for layer in layers]
    shapes = [(name, tuple(layer.kernel_mask.shape)) for name, layer in masked]
    densities = densities_lib.layer_densities(shapes, sparsity, distribution, erk_power_scale)
    _assign_masks(masked, densities, seed)
    _warn_unmasked(model)
    return densities


def sparsify(
    model,
    sparsity,
    distribution="erk",
    exclude=None,
    dense_first_last=False,
    erk_power_scale=1.0,
    seed=None,
    include=None,
    layer_sparsity=None,
):
    """Returns a copy of `model` whose kernels are masked at the given sparsity.

    Every layer with a kernel (Dense, Conv1D/2D/3D, DepthwiseConv1D/2D,
    Conv*Transpose, EinsumDense, user layers with a `kernel`) is rebuilt as its
    masked twin (`masked_class_for`) with the original weights, and so is
    MultiHeadAttention (its query/key/value/output projections are masked);
    biases, normalisation and other layers stay dense. Kernels this cannot
    reach (recurrent cells, embeddings, kernels inside user container layers)
    stay dense, out of the budget, and are named in a warning. The initial
    masks are random with exactly `active_count(size, density)` ones per layer
    (RigL / SET start), and the stored kernels are zeroed outside them.
    Every layer and nested model keeps its `trainable` flag, so unfreezing a
    frozen backbone after `sparsify` is the usual
    `model.get_layer("backbone").trainable = True`, then compile.

    Args:
      model: a built Functional or Sequential `keras.Model` (nested ones too).
        For subclassed models see `init_masks`.
      sparsity: fraction of zeros over all masked kernels, in [0, 1).
      distribution: layer-wise densities: "erk" (default, RigL), "er", "uniform".
      exclude: names of kernel layers (or attention layers) to keep dense and
        unmasked.
      dense_first_last: also keep the first and last kernel layers dense, as
        some RigL ImageNet runs do.
      erk_power_scale: exponent on ER/ERK raw densities (1.0 in the papers).
      seed: int seed for the random initial masks (None: fresh randomness).
      include: opt-in list of kernel layer names: only these are masked
        (None: every maskable layer not excluded).
      layer_sparsity: per-layer sparsity on top of `distribution`: a dict
        {layer name: sparsity} or a callable (name, kernel shape) -> sparsity
        or None. Overridden layers get exactly their value; the distribution
        is solved over the others at `sparsity` (RigL's custom_sparsity_map;
        see `layer_targets.layer_sparsities`). `sparsity=0` gives all-ones
        masks: the dense start of `GradualMagnitudePruning`.

    Returns:
      A new, uncompiled `keras.Model`; compile it before training.

    Raises:
      TypeError / ValueError with the offending value for subclassed or unbuilt
      models, an already sparse model, unknown `exclude` names, a layer that
      cannot be rebuilt from its config, a bad sparsity or distribution.
    """
    sparsity = densities_lib.check_sparsity(sparsity)
    _check_model(model)
    selected = _select_units(model, exclude, dense_first_last)
    included = set(layer_targets.restrict_to([name for name, _, _ in selected], include, maskable_layer_names(model)))
    selected = [unit for unit in selected if unit[0] in included]
    shapes = [(name, tuple(layer.kernel.shape)) for name, layer, _ in selected]
    densities = layer_targets.layer_densities(shapes, sparsity, distribution, erk_power_scale, layer_sparsity)
    owners = {id(owner) for _, _, owner in selected}

    def clone_layer(layer):
        return _copy_config(layer, masking.masked_class_for(type(layer)) if id(layer) in owners else type(layer))

    clone = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    _copy_trainable_flags(model, clone)
    _copy_weights(model, clone)
    names = masking.qualified_names(clone)
    _assign_masks([(names[id(layer)], layer) for layer in masking.masked_layers(clone)], densities, seed)
    _warn_unmasked(clone, ignore_reason="excluded (dense)")
    return clone
