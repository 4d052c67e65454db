"""CIFAR ResNets of depth 6n + 2 (He et al. 2016, Sec. 4.2): ResNet-20/32/56/110, width multiplier."""

import keras

from tf_freetickets.models.layer_options import builder_arguments


def _block(x, filters, stride, decay, bn_decay, name):
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False, **decay, name=f"{name}_shortcut")(x)
        shortcut = keras.layers.BatchNormalization(**bn_decay, name=f"{name}_shortcut_bn")(shortcut)
    y = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, **decay, name=f"{name}_conv1")(x)
    y = keras.layers.ReLU(name=f"{name}_relu1")(keras.layers.BatchNormalization(**bn_decay, name=f"{name}_bn1")(y))
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, **decay, name=f"{name}_conv2")(y)
    y = keras.layers.BatchNormalization(**bn_decay, name=f"{name}_bn2")(y)
    return keras.layers.ReLU(name=f"{name}_relu2")(keras.layers.Add(name=f"{name}_add")([shortcut, y]))


def cifar_resnet(
    depth=110, width=1.0, num_classes=10, input_shape=(32, 32, 3), weight_decay=0.0, name=None,
    weight_decay_scope="kernels", layer_options=None,
):
    """ResNet-depth for CIFAR: three stages of (depth-2)/6 basic blocks with 16w, 32w, 64w channels.

    Args:
      depth: 6n + 2 (20, 32, 44, 56, 110).
      width: channel multiplier (Divide-and-Co-training uses 1/sqrt(S)).
      num_classes: logits.
      input_shape: (H, W, C).
      weight_decay: decay coefficient: the regularization adds `weight_decay * w`
        to the gradient (`WeightDecay`, PyTorch SGD's weight_decay).
      weight_decay_scope: "kernels" (conv and dense kernels), or "all" to
        decay biases and BatchNorm gamma/beta too (FreeTickets' CIFAR code).
      layer_options: `LayerOptions` (initialisers, BatchNorm momentum/epsilon,
        input mean/std); None keeps Keras' defaults.

    Returns:
      Functional `keras.Model` returning logits. Stage changes use a 1x1
      projection shortcut (He et al.'s option B).
    """
    if (depth - 2) % 6:
        raise ValueError(f"CIFAR ResNet depth must be 6n + 2, got {depth!r}.")
    if width <= 0:
        raise ValueError(f"width must be positive, got {width!r}.")
    blocks = (depth - 2) // 6
    options, head, decay, bn_decay = builder_arguments(weight_decay, weight_decay_scope, layer_options)
    inputs = keras.Input(input_shape)
    stem_filters = max(1, int(round(16 * width)))
    x = options.normalize_inputs(inputs)
    x = keras.layers.Conv2D(stem_filters, 3, padding="same", use_bias=False, **decay, name="stem")(x)
    x = keras.layers.ReLU(name="stem_relu")(keras.layers.BatchNormalization(**bn_decay, name="stem_bn")(x))
    for stage, base in enumerate((16, 32, 64)):
        filters = max(1, int(round(base * width)))
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            x = _block(x, filters, stride, decay, bn_decay, f"stage{stage + 1}_block{block + 1}")
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, **head, name="logits")(x)
    return keras.Model(inputs, outputs, name=name or f"resnet{depth}")
