"""`strip_masks`: a masked model back to plain Keras layers (tfmot's `strip_pruning`)."""

import keras

from tf_freetickets.sparse import layers as masking


def _plain_class(layer):
    """The Keras class a masked layer was made from (`masked_class_for`'s base)."""
    for klass in type(layer).__mro__[1:]:
        if issubclass(klass, keras.layers.Layer) and not issubclass(klass, masking.MaskedKernelMixin):
            return klass
    raise TypeError(f"Cannot find the plain layer class of {type(layer).__name__}.")


def strip_masks(model):
    """Returns a copy of `model` with plain layers whose kernels hold kernel * mask.

    The copy has no mask variables and no `tf_freetickets` layer classes, so
    it saves and loads (`.keras`, SavedModel, TFLite) without this library;
    pruned weights are exact zeros in its kernels. Use it after training, as
    tfmot's `strip_pruning`: the copy cannot be trained sparsely any more
    (nothing keeps the zeros at zero).

    Args:
      model: a built Functional or Sequential model with masked layers
        (nested models too).

    Returns:
      A new, uncompiled `keras.Model` that computes the same outputs.

    Raises:
      TypeError: `model` is not a Functional or Sequential keras.Model.
    """
    if not isinstance(model, (keras.Sequential, keras.src.models.Functional)):
        raise TypeError(f"strip_masks supports Functional and Sequential models, got {type(model).__name__}.")

    def clone_layer(layer):
        cls = _plain_class(layer) if masking.is_masked(layer) else type(layer)
        return cls.from_config(layer.get_config())

    clone = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    old_layers = list(model._flatten_layers(include_self=False))
    new_layers = list(clone._flatten_layers(include_self=False))
    for old, new in zip(old_layers, new_layers, strict=True):
        if isinstance(old, keras.Model):
            continue
        if not masking.is_masked(old):
            new.set_weights(old.get_weights())
            continue
        kernel, mask = old.kernel_variable, old.kernel_mask
        sources = [w for w in old.weights if w is not mask]
        for target, source in zip(new.weights, sources, strict=True):
            value = source.numpy() * mask.numpy() if source is kernel else source.numpy()
            target.assign(value)
    return clone
