"""BatchNormalization through TensorFlow's fused kernel: Keras 3's numbers, a faster training step.

Keras 3's `BatchNormalization` computes the batch moments and the normalisation
as separate element-wise ops on every backend; on TensorFlow that costs about
0.6x the convolutions' time in a small CNN's training step, where tf_keras'
fused path (`FusedBatchNormV3`) costs about 0.15x (docs/BENCHMARKS.md, section
5). `FusedBatchNormalization` is a drop-in subclass that runs the fused kernel
when it can and Keras' own code otherwise, with the same variables, the same
config and the same results up to float rounding:

- the normalisation uses the biased batch variance, as Keras does;
- the moving statistics follow Keras' rule `m <- m * momentum + stat * (1 -
  momentum)` with the *biased* variance (the fused kernel reports the
  Bessel-corrected one, n / (n - 1) larger, which tf_keras used; it is undone
  here so the moving variance equals Keras 3's);
- epsilon is passed as given (tf.nn's wrapper raises it to 1.001e-5, which
  would change PyTorch's 1e-5).

The fused kernel applies to 4-D channels-last float inputs on the TensorFlow
backend without a mask, renorm or synchronized (cross-replica) statistics;
anything else takes Keras' path, so the layer is never wrong, only sometimes
not faster. `with_fused_batchnorm(model)` swaps every BatchNormalization of a
Functional or Sequential model, weights included.
"""

import keras

_FUSED_DTYPES = ("float16", "bfloat16", "float32")


@keras.saving.register_keras_serializable(package="tf_freetickets")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization` computed by TensorFlow's `FusedBatchNormV3` where it applies.

    Takes exactly `keras.layers.BatchNormalization`'s arguments; see the
    module docstring for when the fused kernel runs and how its statistics are
    made equal to Keras'.
    """

    def fuses(self, inputs, mask=None):
        """True when `call` on `inputs` (and `mask`) runs the fused kernel rather than Keras' path."""
        return (
            keras.backend.backend() == "tensorflow"
            and mask is None
            and len(inputs.shape) == 4
            and self.axis % 4 == 3
            and not self.renorm
            and not getattr(self, "synchronized", False)
            and keras.backend.standardize_dtype(inputs.dtype) in _FUSED_DTYPES
        )

    def call(self, inputs, training=None, mask=None):
        """Normalizes `inputs` as `keras.layers.BatchNormalization` does, by the fused kernel when `fuses` says so.

        Args:
          inputs: a tensor of any rank; the fused kernel takes (N, H, W, C).
          training: batch statistics (and moving-statistics updates) when
            true and the layer is trainable, the moving statistics otherwise.
          mask: optional mask, as in Keras (then Keras' path runs).

        Returns:
          A tensor of the input's shape and dtype.
        """
        if not self.fuses(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = inputs.shape[-1]
        gamma = tf.cast(self.gamma, "float32") if self.scale else tf.ones([channels], "float32")
        beta = tf.cast(self.beta, "float32") if self.center else tf.zeros([channels], "float32")
        if training and self.trainable:
            outputs, mean, bessel_variance, *_ = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=gamma, offset=beta, mean=tf.zeros([0]), variance=tf.zeros([0]),
                epsilon=self.epsilon, exponential_avg_factor=1.0, data_format="NHWC", is_training=True,
            )  # fmt: skip
            count = tf.cast(tf.reduce_prod(tf.shape(inputs)[:-1]), "float32")
            variance = bessel_variance * ((count - 1.0) / tf.maximum(count, 1.0))  # Keras keeps the biased variance
            self.moving_mean.assign(self.moving_mean * self.momentum + mean * (1.0 - self.momentum))
            self.moving_variance.assign(self.moving_variance * self.momentum + variance * (1.0 - self.momentum))
        else:
            outputs, *_ = tf.raw_ops.FusedBatchNormV3(
                x=inputs, scale=gamma, offset=beta, mean=tf.cast(self.moving_mean, "float32"),
                variance=tf.cast(self.moving_variance, "float32"), epsilon=self.epsilon, exponential_avg_factor=1.0,
                data_format="NHWC", is_training=False,
            )  # fmt: skip
        return tf.cast(outputs, self.compute_dtype)


def with_fused_batchnorm(model):
    """A copy of `model` whose BatchNormalization layers are `FusedBatchNormalization`, weights copied.

    Args:
      model: a built Functional or Sequential Keras model (subclassed models
        cannot be cloned by Keras and raise Keras' error).

    Returns:
      a new model with the same layers, names, configs and weights; every
      `keras.layers.BatchNormalization` (not already fused) becomes a
      `FusedBatchNormalization` of the same config. `model` is unchanged.
    """

    def clone(layer):
        if isinstance(layer, keras.layers.BatchNormalization) and not isinstance(layer, FusedBatchNormalization):
            return FusedBatchNormalization.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    fused = keras.models.clone_model(model, clone_function=clone)
    fused.set_weights(model.get_weights())
    return fused
