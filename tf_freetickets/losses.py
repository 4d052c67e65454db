"""Losses the training runs use beyond Keras' own."""

import keras


@keras.saving.register_keras_serializable(package="tf_freetickets")
class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of logits against integer labels with label smoothing.

    Keras' `SparseCategoricalCrossentropy` has no label smoothing; this one-hot
    encodes the labels and uses `categorical_crossentropy`, so the target of
    the true class is 1 - s + s / C and of every other class s / C (FreeTickets'
    ImageNet runs use s = 0.1, as the ResNet-50 recipe they follow).

    Args:
      num_classes: C.
      label_smoothing: s in [0, 1).
      name, reduction: as for `keras.losses.Loss`.
    """

    def __init__(self, num_classes, label_smoothing=0.1, name="smoothed_sparse_crossentropy", reduction="sum_over_batch_size"):
        super().__init__(name=name, reduction=reduction)
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing!r}.")
        self.num_classes = int(num_classes)
        self.label_smoothing = float(label_smoothing)

    def call(self, y_true, y_pred):
        """Per-example smoothed cross-entropy.

        Args:
          y_true: (N,) or (N, 1) integer labels in [0, C).
          y_pred: (N, C) logits.

        Returns:
          (N,) losses (reduced by the `reduction` given to the constructor).
        """
        labels = keras.ops.reshape(keras.ops.cast(y_true, "int32"), (-1,))
        targets = keras.ops.one_hot(labels, self.num_classes)
        return keras.losses.categorical_crossentropy(targets, y_pred, from_logits=True, label_smoothing=self.label_smoothing)

    def get_config(self):
        """The constructor's arguments, for `from_config` and `.keras` files."""
        return {**super().get_config(), "num_classes": self.num_classes, "label_smoothing": self.label_smoothing}
