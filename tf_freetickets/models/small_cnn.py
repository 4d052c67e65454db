"""A small CNN for 28x28 images, sized for CPU runs."""

import keras

from tf_freetickets.models.layer_options import builder_arguments


def small_cnn(
    input_shape=(28, 28, 1), num_classes=10, width=1.0,
    dropout=0.0, weight_decay=0.0, name="small_cnn", weight_decay_scope="kernels", layer_options=None,
):
    """Two conv blocks and a classifier head: conv32-conv32-pool-conv64-conv64-pool-fc128-fc.

    Args:
      input_shape: (H, W, C) of the images.
      num_classes: output logits.
      width: multiplier on every hidden width (channels and fc units), rounded,
        at least 1; Divide-and-Co-training shrinks it by about 1/sqrt(S).
      dropout: dropout rate before the classifier.
      weight_decay: decay coefficient: the regularization adds `weight_decay * w` to
        the gradient (`WeightDecay`), as PyTorch SGD's weight_decay does.
      weight_decay_scope: "kernels", or "all" to decay biases and BatchNorm too.
      layer_options: `LayerOptions` (initialisers, BatchNorm momentum/epsilon,
        input mean/std); None keeps Keras' defaults.

    Returns:
      A Functional `keras.Model` returning logits (apply softmax for probabilities).
    """
    if width <= 0:
        raise ValueError(f"width must be positive, got {width!r}.")

    def w(channels):
        return max(1, int(round(channels * width)))

    options, head, decay, bn_decay = builder_arguments(weight_decay, weight_decay_scope, layer_options)
    inputs = keras.Input(input_shape)
    x = options.normalize_inputs(inputs)
    for block, channels in enumerate((32, 64)):
        for conv in range(2):
            x = keras.layers.Conv2D(
                w(channels),
                3,
                padding="same",
                use_bias=False,
                **decay,
                name=f"conv{block + 1}_{conv + 1}",
            )(x)
            x = keras.layers.BatchNormalization(name=f"bn{block + 1}_{conv + 1}", **bn_decay)(x)
            x = keras.layers.ReLU()(x)
        x = keras.layers.MaxPooling2D()(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(w(128), activation="relu", **head, name="fc")(x)
    if dropout:
        x = keras.layers.Dropout(dropout)(x)
    outputs = keras.layers.Dense(num_classes, **head, name="logits")(x)
    return keras.Model(inputs, outputs, name=name)
