"""BatchNorm statistics of EDST tickets: how stale they are when a ticket is saved, and the recompute switch's checks.

FreeTickets' official code (`main_EDST.py`) saves each ticket with the running
statistics training left and never recomputes them; with PyTorch's momentum
0.1 they follow the weights within tens of steps. Keras' BatchNormalization
uses momentum 0.99, so a short phase leaves most of the statistics from before
it (the initial 0/1, or the weights before a global exploration).
"""

import math

import keras
import tensorflow as tf

from tf_freetickets import keras_compat


def stale_batchnorm_share(model, steps):
    """(momentum, share): the largest share of a trainable BatchNorm layer's moving statistics older than `steps` steps.

    Keras updates them as m <- momentum * m + (1 - momentum) * batch, so after
    n steps momentum**n of their weight still comes from before. Returns
    (None, 0.0) for a model without trainable BatchNormalization layers.
    """
    norms = [
        layer
        for layer in keras_compat.child_layers(model, recursive=True)
        if isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
    ]
    if not norms:
        return None, 0.0
    momentum = max(float(layer.momentum) for layer in norms)
    return momentum, momentum ** max(int(steps), 0)


def stale_statistics_warning(model, index, step, phase_start, shortest_phase):
    """The one-line warning for ticket `index` saved at `step`, or None when its BatchNorm statistics are fresh.

    Fresh: at most 10% of their weight predates `phase_start` (the start of
    training for ticket 0, else the global exploration before it). The
    suggested momentum is the largest that leaves under 10% after
    `shortest_phase` steps.
    """
    momentum, stale = stale_batchnorm_share(model, step - phase_start)
    if stale <= 0.1:
        return None
    since = f"its global exploration (step {phase_start})" if index else "the start of training"
    enough = math.floor(100 * 0.1 ** (1 / max(shortest_phase, 1))) / 100
    return (
        f"EDST: ticket_{index} is saved {step - phase_start} steps after {since}; its BatchNorm moving statistics "
        f"(momentum {momentum}) still hold {stale:.0%} of older values, so it can score near chance in inference mode. "
        "Pass EDST(batchnorm_data=<training batches>, batchnorm_batches=N) to recompute them before each ticket is "
        f"saved, train longer, or set the BatchNorm momentum to {enough} or less (train binary: "
        "--config.ensemble.batchnorm_batches=N, or --config.batchnorm_momentum)."
    )


def check_batchnorm_data(data, num_batches):
    """Returns (data, num_batches) for `EDST(batchnorm_data=, batchnorm_batches=)`, refusing values that cannot work.

    Raises:
      ValueError: `num_batches` is not a positive int or None, or `data` is an
        endless tf.data.Dataset and no `num_batches` bounds the pass.
    """
    if num_batches is not None and (isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 1):
        raise ValueError(f"batchnorm_batches must be a positive int or None, got {num_batches!r}.")
    if callable(data) and num_batches is None:
        raise ValueError("batchnorm_data is a function of the ticket index; pass batchnorm_batches=N as well.")
    if data is not None and num_batches is None and hasattr(data, "cardinality"):
        if int(data.cardinality()) == int(tf.data.INFINITE_CARDINALITY):
            raise ValueError("batchnorm_data is an endless dataset; pass batchnorm_batches=N (e.g. one epoch's steps).")
    return data, num_batches
