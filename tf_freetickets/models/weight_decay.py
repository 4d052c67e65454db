"""Weight decay as the papers' code applies it: a gradient of `wd * w`.

PyTorch's `SGD(weight_decay=wd)` (FreeTickets, CigL and Divide-and-Co-training
code) adds `wd * w` to each parameter's gradient, and RigL's TF code adds
`wd * sum(w^2) / 2` to the loss, which has the same gradient. Keras'
`L2(wd)` adds `wd * sum(w^2)`, whose gradient is `2 * wd * w`: passing the
papers' value to it would decay at twice their rate. Every builder in
`tf_freetickets.models` therefore uses `WeightDecay`, whose loss is
`wd * sum(w^2) / 2`.

Decay acts through the loss, so it is coupled to the gradient (it goes through
momentum, as in PyTorch's SGD), not the decoupled decay of Keras optimizers'
own `weight_decay` argument.
"""

import keras
from keras import ops

#: Which parameters the decay acts on:
#: - "kernels": conv/dense kernels only (CigL's code skips every 1-D parameter);
#: - "all": every trainable parameter (kernels, biases, BatchNorm gamma and beta),
#:   as PyTorch's `SGD(model.parameters(), weight_decay=wd)` in FreeTickets' CIFAR code;
#: - "all_but_biases": kernels and BatchNorm gamma, not biases nor BatchNorm beta
#:   (Divide-and-Co-training's code skips parameters named "bias" or "norm", and
#:   its WRN names BatchNorm "bn", so gamma is decayed).
WEIGHT_DECAY_SCOPES = ("kernels", "all", "all_but_biases")


@keras.saving.register_keras_serializable(package="tf_freetickets")
class WeightDecay(keras.regularizers.Regularizer):
    """Regularization loss `weight_decay * sum(w^2) / 2`: its gradient is `weight_decay * w`.

    Args:
      weight_decay: the coefficient as the papers state it (e.g. 5e-4), >= 0.
    """

    def __init__(self, weight_decay):
        weight_decay = float(weight_decay)
        if not weight_decay >= 0.0:
            raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}.")
        self.weight_decay = weight_decay

    def __call__(self, x):
        return 0.5 * self.weight_decay * ops.sum(ops.square(x))

    def get_config(self):
        return {"weight_decay": self.weight_decay}


def decay_arguments(weight_decay, scope="kernels"):
    """Regularizer keyword arguments for the layers of a model builder.

    Args:
      weight_decay: coefficient of the `wd * w` gradient; 0 gives no regularizers.
      scope: "kernels" (conv and dense kernels), "all" (also biases and
        BatchNorm gamma/beta) or "all_but_biases" (kernels and BatchNorm gamma).

    Returns:
      (weights, batchnorm): keyword dicts for Conv/Dense layers
      (`kernel_regularizer`, and `bias_regularizer` under "all") and for
      BatchNormalization (`gamma_regularizer` under "all" and
      "all_but_biases", `beta_regularizer` under "all"; empty otherwise).

    Raises:
      ValueError: an unknown scope (the allowed ones are named).
    """
    if scope not in WEIGHT_DECAY_SCOPES:
        raise ValueError(f"Unknown weight decay scope {scope!r}; use one of {WEIGHT_DECAY_SCOPES}.")
    if not weight_decay:
        return {}, {}
    regularizer = WeightDecay(weight_decay)
    if scope == "kernels":
        return {"kernel_regularizer": regularizer}, {}
    if scope == "all_but_biases":
        return {"kernel_regularizer": regularizer}, {"gamma_regularizer": regularizer}
    return (
        {"kernel_regularizer": regularizer, "bias_regularizer": regularizer},
        {"gamma_regularizer": regularizer, "beta_regularizer": regularizer},
    )
