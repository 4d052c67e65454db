"""How a model's layers start and normalise: Keras' defaults, or those of the papers' PyTorch code.

The papers' CIFAR code (FreeTickets `sparselearning/models.py`, CigL
`models/wide_resnet.py`) builds its Wide ResNet with

- convolution kernels drawn from N(0, 2 / (k * k * out_channels)) (He-normal
  on fan-out, not truncated), where Keras starts at Glorot-uniform;
- the classifier at PyTorch's `nn.Linear` default, U(+-1/sqrt(fan_in)), and a
  zero bias;
- BatchNorm with PyTorch's defaults: running statistics updated with weight
  0.1 (Keras momentum 0.9) and epsilon 1e-5, where Keras uses 0.99 and 1e-3;
- inputs normalised per channel with the dataset's mean and std.

FreeTickets' ImageNet ResNet-50 (`ImageNet/resnet.py`, run with `-c fanin`)
draws its convolutions from N(0, 2 / (k * k * in_channels)) (He-normal on
fan-in) and keeps PyTorch's `nn.Linear` default for the classifier, whose bias
is U(+-1/sqrt(fan_in)) too (`"he_normal_fan_in"`).

`LayerOptions()` keeps Keras' defaults (the Fashion-MNIST configs);
`LayerOptions.pytorch(mean, std)` is what the paper configs use. The input
normalisation is a `keras.layers.Normalization` layer inside the model, so
every consumer (evaluation, export, corrupted and OoD test sets) feeds images in
[0, 1] and the model normalises them itself.
"""

import dataclasses

import keras

from tf_freetickets.models.weight_decay import decay_arguments

#: "keras": Glorot-uniform kernels (Keras' default); "he_normal_fan_out": the
#: official WRN's N(0, 2/fan_out) convolutions and PyTorch's Linear default
#: with a zero bias; "he_normal_fan_in": FreeTickets' ImageNet ResNet-50
#: (`-c fanin`), N(0, 2/fan_in) convolutions and PyTorch's Linear default.
KERNEL_INITIALIZERS = ("keras", "he_normal_fan_out", "he_normal_fan_in")


@dataclasses.dataclass(frozen=True)
class LayerOptions:
    """Initialisers, BatchNorm settings and input normalisation of a model builder.

    Args:
      kernel_initializer: one of `KERNEL_INITIALIZERS`.
      batchnorm_momentum: Keras BatchNormalization momentum (PyTorch's
        momentum 0.1 is Keras' 0.9).
      batchnorm_epsilon: BatchNormalization epsilon (PyTorch: 1e-5).
      input_mean, input_std: per-channel statistics of images in [0, 1]; the
        model starts with `(x - mean) / std`. None: no normalisation.

    Raises:
      ValueError: an unknown initializer, a momentum outside [0, 1), a
        non-positive epsilon or std, or only one of mean/std.
    """

    kernel_initializer: str = "keras"
    batchnorm_momentum: float = 0.99
    batchnorm_epsilon: float = 1e-3
    input_mean: tuple | None = None
    input_std: tuple | None = None

    def __post_init__(self):
        if self.kernel_initializer not in KERNEL_INITIALIZERS:
            raise ValueError(f"Unknown kernel_initializer {self.kernel_initializer!r}; use one of {KERNEL_INITIALIZERS}.")
        if not 0.0 <= self.batchnorm_momentum < 1.0:
            raise ValueError(f"batchnorm_momentum={self.batchnorm_momentum!r} must be in [0, 1).")
        if not self.batchnorm_epsilon > 0:
            raise ValueError(f"batchnorm_epsilon={self.batchnorm_epsilon!r} must be positive.")
        if (self.input_mean is None) != (self.input_std is None):
            raise ValueError("input_mean and input_std go together: give both or neither.")
        if self.input_std is not None and min(self.input_std) <= 0:
            raise ValueError(f"input_std={self.input_std!r} must be positive.")

    @classmethod
    def pytorch(cls, input_mean=None, input_std=None):
        """The official PyTorch WRN's choices: He-normal fan-out, BatchNorm 0.9 / 1e-5, mean/std inputs."""
        return cls("he_normal_fan_out", 0.9, 1e-5, input_mean, input_std)

    @property
    def is_default(self):
        """True when every field is Keras' default (nothing to apply)."""
        return self == LayerOptions()

    def conv(self):
        """Keyword arguments for Conv2D layers: He-normal (PyTorch's `kaiming_normal_`) on fan-out or fan-in."""
        if self.kernel_initializer == "keras":
            return {}
        mode = "fan_in" if self.kernel_initializer == "he_normal_fan_in" else "fan_out"
        return {"kernel_initializer": keras.initializers.VarianceScaling(2.0, mode, "untruncated_normal")}

    def dense(self, fan_in=None):
        """Keyword arguments for the classifier: PyTorch's Linear default is U(+-sqrt(1/fan_in)) = VarianceScaling(1/3).

        Args:
          fan_in: the classifier's input size. With "he_normal_fan_in" and a
            known `fan_in` the bias is drawn from U(+-1/sqrt(fan_in)) as
            PyTorch's default; otherwise it starts at zero (the official WRNs
            zero it).
        """
        if self.kernel_initializer == "keras":
            return {}
        uniform = keras.initializers.VarianceScaling(1.0 / 3.0, "fan_in", "uniform")
        bias = "zeros"
        if self.kernel_initializer == "he_normal_fan_in" and fan_in:
            bound = 1.0 / float(fan_in) ** 0.5
            bias = keras.initializers.RandomUniform(-bound, bound)
        return {"kernel_initializer": uniform, "bias_initializer": bias}

    def batchnorm(self):
        """Keyword arguments for BatchNormalization layers."""
        return {"momentum": self.batchnorm_momentum, "epsilon": self.batchnorm_epsilon}

    def normalize_inputs(self, inputs):
        """`inputs` normalised per channel (a Normalization layer), or `inputs` itself when no statistics are set."""
        if self.input_mean is None:
            return inputs
        variance = [s * s for s in self.input_std]
        return keras.layers.Normalization(mean=list(self.input_mean), variance=variance, name="input_normalization")(inputs)


def builder_arguments(weight_decay, weight_decay_scope, layer_options):
    """The keyword arguments a CNN builder passes to its layers: weight decay merged with the layer options.

    Args:
      weight_decay: coefficient of the `wd * w` gradient (0: none).
      weight_decay_scope: see `weight_decay.decay_arguments`.
      layer_options: a `LayerOptions`, or None for Keras' defaults.

    Returns:
      (options, classifier, conv, batchnorm): the `LayerOptions` in use and the
      keyword dicts for the Dense classifier, the convolutions and the
      BatchNormalization layers.
    """
    decay, bn_decay = decay_arguments(weight_decay, weight_decay_scope)
    options = layer_options or LayerOptions()
    return options, {**decay, **options.dense()}, {**decay, **options.conv()}, {**bn_decay, **options.batchnorm()}
