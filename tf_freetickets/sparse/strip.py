"""`strip(model)`: a plain Keras model with the masks folded into the kernels, for deployment.

The counterpart of tfmot's `strip_pruning`: the result has no mask variables
and no class of this library, so a `.keras` file of it is the size of the dense
model and loads with Keras alone. Its kernels hold exact zeros where the masks
were zero, so its predictions are those of the sparse model.
"""

import keras

from tf_freetickets import keras_compat
from tf_freetickets.sparse import layers as masking

#: Config keys the masked classes add to their plain class's config.
_MASK_CONFIG_KEYS = ("target_density", "sublayer_densities")


def folded_weights(model):
    """`model.get_weights()` without the masks, each kernel multiplied by its mask.

    For a subclassed model, which `strip` cannot rebuild: build the same model
    with plain layers and `plain.set_weights(folded_weights(sparse))`.
    """
    masked = masking.masked_layers(model)
    masks = {id(layer.kernel_mask) for layer in masked}
    folded = {id(layer.kernel_variable): layer.kernel_variable.numpy() * layer.kernel_mask.numpy() for layer in masked}
    return [folded[id(v)] if id(v) in folded else v.numpy() for v in model.weights if id(v) not in masks]


def _plain_copy(layer):
    cls = getattr(type(layer), "plain_class", type(layer))
    config = layer.get_config()
    if cls is not type(layer):
        for key in _MASK_CONFIG_KEYS:
            config.pop(key, None)
    return cls.from_config(config)


def strip(model):
    """Returns a plain copy of `model` with every mask folded into its kernel.

    Masked layers become their plain Keras classes (MaskedDense -> Dense,
    MaskedMultiHeadAttention -> MultiHeadAttention, a user layer's masked twin
    -> the user layer); every other layer is copied from its config; all
    weights are copied, kernels as `kernel * mask`.

    Args:
      model: a built Functional or Sequential `keras.Model` (nested ones too).

    Returns:
      A new, uncompiled `keras.Model` whose predictions equal `model`'s.

    Raises:
      TypeError: `model` is not a Keras model, or is subclassed (use
        `folded_weights` with a plain twin of it).
    """
    if not isinstance(model, keras.Model):
        raise TypeError(f"strip expects a keras.Model, got {type(model).__name__}.")
    if not keras_compat.is_functional_or_sequential(model):
        raise TypeError(
            f"strip rebuilds Functional and Sequential models only; {type(model).__name__} is subclassed. Build the "
            "same model with plain layers and call plain.set_weights(tft.sparse.folded_weights(model))."
        )
    plain = keras.models.clone_model(model, clone_function=_plain_copy, recursive=True)
    weights = folded_weights(model)
    if len(weights) != len(plain.weights):
        raise RuntimeError(f"strip: {len(weights)} weights without masks, but the plain copy has {len(plain.weights)}.")
    plain.set_weights(weights)
    return plain


#: tfmot-style name (`strip_pruning`); the same function.
strip_masks = strip
