"""Build a model by name, as configs name them."""

import keras

from tf_freetickets.models.cifar_resnet import cifar_resnet
from tf_freetickets.models.fused_batch_norm import with_fused_batchnorm
from tf_freetickets.models.small_cnn import small_cnn
from tf_freetickets.models.weight_decay import decay_arguments
from tf_freetickets.models.wide_resnet import wide_resnet

MODELS = ("small_cnn", "wide_resnet", "cifar_resnet", "resnet50")

#: The keyword that carries each model's width (Divide-and-Co-training divides it).
WIDTH_ARGUMENT = {"small_cnn": "width", "wide_resnet": "widen_factor", "cifar_resnet": "width", "resnet50": "width"}


def _resnet50(
    input_shape, num_classes, width=1.0, weight_decay=0.0, dropout=0.0, name="resnet50", weight_decay_scope="kernels",
    layer_options=None,
):  # fmt: skip
    if width != 1.0 or dropout:
        raise ValueError("resnet50 (keras.applications) has no width multiplier or dropout; use width=1, dropout=0.")
    if layer_options is not None and layer_options.input_mean is not None:
        raise ValueError(
            "resnet50 (keras.applications) takes normalised inputs (the ImageNet pipeline normalises); "
            f"got layer_options={layer_options!r} with an input mean/std."
        )
    model = keras.applications.ResNet50(weights=None, input_shape=input_shape, classes=num_classes, classifier_activation=None)
    decay, bn_decay = decay_arguments(weight_decay, weight_decay_scope)
    attributes = _resnet50_layer_attributes(model, layer_options)
    if not decay and not attributes:
        return model
    # keras.applications takes no regularizer or initializer: set them on every layer that has the attribute
    # and rebuild from the config (clone_model builds fresh weights with them).
    for layer in model.layers:
        for attribute, value in {**decay, **bn_decay}.items():
            if hasattr(layer, attribute):
                setattr(layer, attribute, value)
        for attribute, value in attributes.get(layer.name, {}).items():
            setattr(layer, attribute, value)
    return keras.models.clone_model(model)


def _resnet50_layer_attributes(model, layer_options):
    """{layer name: {attribute: value}}: the `LayerOptions` of the convolutions, the classifier and BatchNorm."""
    if layer_options is None or layer_options.is_default:
        return {}
    attributes = {}
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            attributes[layer.name] = layer_options.conv()
        elif isinstance(layer, keras.layers.Dense):
            attributes[layer.name] = layer_options.dense(fan_in=int(layer.kernel.shape[0]))
        elif isinstance(layer, keras.layers.BatchNormalization):
            attributes[layer.name] = layer_options.batchnorm()
    return attributes


def build_model(
    architecture, input_shape, num_classes, width=1.0, depth=None, dropout=0.0, weight_decay=0.0, name=None,
    weight_decay_scope="kernels", layer_options=None, fused_batchnorm=True,
):  # fmt: skip
    """A Functional model returning logits.

    Args:
      architecture: one of MODELS (small_cnn, wide_resnet WRN-depth-width, cifar_resnet
        ResNet-depth with a width multiplier, resnet50 from keras.applications).
      input_shape: (H, W, C).
      num_classes: logits.
      width: width multiplier (widen factor k for wide_resnet).
      depth: network depth for wide_resnet (6n+4) and cifar_resnet (6n+2).
      dropout: dropout rate (small_cnn, wide_resnet).
      weight_decay: decay coefficient as the papers state it: the regularization
        adds `weight_decay * w` to the gradient (`WeightDecay`), as PyTorch
        SGD's `weight_decay` in the papers' code, not Keras' `L2` (`2 * wd * w`).
      weight_decay_scope: "kernels" (conv and dense kernels), "all" (also
        biases and BatchNorm gamma/beta, as FreeTickets' CIFAR code) or
        "all_but_biases" (kernels and BatchNorm gamma, as Divide-and-Co-training's code).
      layer_options: `LayerOptions` (initialisers, BatchNorm momentum/epsilon,
        input mean/std); None keeps Keras' defaults. resnet50 takes the
        initialisers and BatchNorm settings (set on keras.applications' layers
        before a rebuild), not an input mean/std.
      fused_batchnorm: BatchNorm layers run TensorFlow's fused kernel
        (`FusedBatchNormalization`: Keras' numbers up to float rounding, a
        ~20% faster training step on the TensorFlow backend; docs/BENCHMARKS.md
        1c). On by default; False builds Keras' own layer, which the committed
        short study and the pilot ran.
      name: the Keras model's name.

    Raises:
      ValueError: unknown architecture (the known ones are listed).
    """
    kwargs = {
        "input_shape": tuple(input_shape), "num_classes": num_classes,
        "weight_decay": weight_decay, "weight_decay_scope": weight_decay_scope, "layer_options": layer_options,
    }  # fmt: skip
    if name:
        kwargs["name"] = name
    model = _build(architecture, width, depth, dropout, kwargs)
    return with_fused_batchnorm(model) if fused_batchnorm else model


def _build(architecture, width, depth, dropout, kwargs):
    if architecture == "small_cnn":
        return small_cnn(width=width, dropout=dropout, **kwargs)
    if architecture == "wide_resnet":
        return wide_resnet(depth or 28, widen_factor=width, dropout=dropout, **kwargs)
    if architecture == "cifar_resnet":
        if dropout:
            raise ValueError("cifar_resnet has no dropout; use dropout=0.")
        return cifar_resnet(depth or 110, width=width, **kwargs)
    if architecture == "resnet50":
        return _resnet50(width=width, dropout=dropout, **kwargs)
    raise ValueError(f"Unknown model {architecture!r}; use one of {MODELS}.")
