"""`sparsify(model, ...)`: turn a built Keras model into a masked sparse one."""

import keras
import numpy as np

from tf_freetickets.sparse import densities as densities_lib
from tf_freetickets.sparse import layer_targets
from tf_freetickets.sparse import layers as masking


def _maskable(layer):
    """Layers with a `kernel` weight can be masked (models themselves cannot)."""
    if isinstance(layer, keras.Model) or not layer.built:
        return False
    try:
        return getattr(layer, "kernel", None) is not None
    except AttributeError:
        return False


def maskable_layer_names(model):
    """Names of the layers of `model` (nested ones included) that have a kernel."""
    return [layer.name for layer in model._flatten_layers(include_self=False) if _maskable(layer)]


def _check_model(model):
    if not isinstance(model, keras.Model):
        raise TypeError(f"sparsify expects a keras.Model, got {type(model).__name__}.")
    if not model.built:
        raise ValueError(f"Model {model.name!r} is not built; call it on data or build it with an input shape before sparsify.")
    if not isinstance(model, (keras.Sequential, keras.src.models.Functional)):
        raise TypeError(
            f"sparsify supports Functional and Sequential models; {type(model).__name__} is a subclassed model. "
            "Build its layers with tf_freetickets.sparse.masked_class_for(...) instead."
        )
    if masking.masked_layers(model):
        raise ValueError(f"Model {model.name!r} already has masked layers; sparsify it only once.")


def _select_layers(model, exclude, dense_first_last):
    names = maskable_layer_names(model)
    if not names:
        raise ValueError(f"Model {model.name!r} has no layer with a kernel to sparsify.")
    exclude = set(exclude or ())
    unknown = sorted(exclude - set(names))
    if unknown:
        raise ValueError(f"exclude names layers {unknown} that are not maskable layers of the model; maskable: {names}.")
    if dense_first_last:
        exclude.update({names[0], names[-1]})
    selected = [name for name in names if name not in exclude]
    if not selected:
        raise ValueError("Every maskable layer is excluded; nothing would be sparse.")
    return selected


def _random_mask(shape, density, rng):
    size = int(np.prod(shape))
    active = densities_lib.active_count(size, density)
    flat = np.zeros(size, dtype="float32")
    flat[rng.permutation(size)[:active]] = 1.0
    return flat.reshape(shape)


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
    masked twin (`masked_class_for`) with the original weights; biases,
    normalisation and other layers stay dense. The initial masks are random with
    exactly `active_count(size, density)` ones per layer (RigL / SET start), and
    the stored kernels are zeroed outside them.

    Args:
      model: a built Functional or Sequential `keras.Model` (nested ones too).
      sparsity: fraction of zeros over all masked kernels, in [0, 1).
      distribution: layer-wise densities: "erk" (default, RigL), "er", "uniform".
      exclude: names of kernel layers to keep dense and unmasked.
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
      models, an already sparse model, unknown `exclude` names, a bad sparsity
      or distribution.
    """
    sparsity = densities_lib.check_sparsity(sparsity)
    _check_model(model)
    selected = _select_layers(model, exclude, dense_first_last)
    selected = layer_targets.restrict_to(selected, include, maskable_layer_names(model))
    by_name = {layer.name: layer for layer in model._flatten_layers(include_self=False)}
    shapes = [(name, tuple(by_name[name].kernel.shape)) for name in selected]
    densities = layer_targets.layer_densities(shapes, sparsity, distribution, erk_power_scale, layer_sparsity)

    def clone_layer(layer):
        cls = masking.masked_class_for(type(layer)) if layer.name in densities else type(layer)
        return cls.from_config(layer.get_config())

    clone = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    rng = np.random.default_rng(seed)
    old_layers = list(model._flatten_layers(include_self=False))
    new_layers = list(clone._flatten_layers(include_self=False))
    for old, new in zip(old_layers, new_layers, strict=True):
        if isinstance(old, keras.Model):
            continue
        if not masking.is_masked(new):
            new.set_weights(old.get_weights())
            continue
        targets = [w for w in new.weights if w is not new.kernel_mask]
        for target, source in zip(targets, old.weights, strict=True):
            target.assign(source)
        mask = _random_mask(tuple(new.kernel_mask.shape), densities[new.name], rng)
        new.kernel_mask.assign(mask)
        new.kernel_variable.assign(new.kernel_variable.numpy() * mask)
    return clone
