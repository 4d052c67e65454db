"""Wide ResNet for 32x32 images (Zagoruyko & Komodakis 2016), pre-activation blocks."""

import keras

from tf_freetickets.models.layer_options import builder_arguments


def _block(x, filters, stride, dropout, decay, bn_decay, name):
    preact = keras.layers.ReLU(name=f"{name}_relu1")(keras.layers.BatchNormalization(**bn_decay, name=f"{name}_bn1")(x))
    shortcut = x
    if stride != 1 or x.shape[-1] != filters:
        shortcut = keras.layers.Conv2D(filters, 1, strides=stride, use_bias=False, **decay, name=f"{name}_shortcut")(preact)
    y = keras.layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False, **decay, name=f"{name}_conv1")(preact)
    y = keras.layers.ReLU(name=f"{name}_relu2")(keras.layers.BatchNormalization(**bn_decay, name=f"{name}_bn2")(y))
    if dropout:
        y = keras.layers.Dropout(dropout, name=f"{name}_dropout")(y)
    y = keras.layers.Conv2D(filters, 3, padding="same", use_bias=False, **decay, name=f"{name}_conv2")(y)
    return keras.layers.Add(name=f"{name}_add")([shortcut, y])


def wide_resnet(
    depth=28, widen_factor=10, num_classes=10, input_shape=(32, 32, 3), dropout=0.0, weight_decay=0.0, name=None,
    weight_decay_scope="kernels", layer_options=None,
):
    """WRN-depth-k: a 16-channel stem and three groups of (depth-4)/6 blocks of 16k, 32k, 64k channels.

    Args:
      depth: 6n + 4 (28 gives n = 4 blocks per group).
      widen_factor: k; may be any positive number (Divide-and-Co-training uses
        k / sqrt(S), rounded as `divided_widen_factor` does).
      num_classes: logits.
      input_shape: (H, W, C).
      dropout: rate between the two convs of each block (WRN's 0.3 for CIFAR).
      weight_decay: decay coefficient: the regularization adds `weight_decay * w`
        to the gradient (`WeightDecay`, PyTorch SGD's weight_decay).
      weight_decay_scope: "kernels" (conv and dense kernels), or "all" to
        decay biases and BatchNorm gamma/beta too (FreeTickets' CIFAR code).
      layer_options: `LayerOptions` (initialisers, BatchNorm momentum/epsilon,
        input mean/std); None keeps Keras' defaults.

    Returns:
      Functional `keras.Model` returning logits. WRN-28-10 for 10 classes has
      36.48M parameters.
    """
    if (depth - 4) % 6:
        raise ValueError(f"Wide ResNet depth must be 6n + 4, got {depth!r}.")
    if widen_factor <= 0:
        raise ValueError(f"widen_factor must be positive, got {widen_factor!r}.")
    blocks = (depth - 4) // 6
    options, head, decay, bn_decay = builder_arguments(weight_decay, weight_decay_scope, layer_options)
    inputs = keras.Input(input_shape)
    x = keras.layers.Conv2D(16, 3, padding="same", use_bias=False, **decay, name="stem")(options.normalize_inputs(inputs))
    for group, base in enumerate((16, 32, 64)):
        filters = max(1, int(round(base * widen_factor)))
        for block in range(blocks):
            stride = 2 if group > 0 and block == 0 else 1
            x = _block(x, filters, stride, dropout, decay, bn_decay, f"group{group + 1}_block{block + 1}")
    x = keras.layers.ReLU(name="final_relu")(keras.layers.BatchNormalization(**bn_decay, name="final_bn")(x))
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = keras.layers.Dense(num_classes, **head, name="logits")(x)
    return keras.Model(inputs, outputs, name=name or f"wrn_{depth}_{widen_factor:g}")
