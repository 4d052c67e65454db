"""Stops a diverging run before it can write a corrupt checkpoint, ticket or member.

`FiniteTrainingGuard` goes first in a run's callbacks: it sees every batch
before the mask updates and every epoch end before the tickets and the epoch
checkpoint are written, so the newest checkpoint on disk is always the last
one whose weights were finite and whose masks were exactly 0/1.
"""

import math

import keras
import numpy as np

from tf_freetickets.sparse.report import non_binary_masks


class NonFiniteTrainingError(FloatingPointError):
    """The loss or the weights became NaN/Inf; the message names where."""


def _is_finite(variable):
    value = np.asarray(variable.numpy())
    return value.dtype.kind != "f" or bool(np.all(np.isfinite(value)))


def non_finite_variables(model):
    """Names of the float variables a checkpoint or member file of `model` saves that hold a NaN or Inf.

    Every variable of the model (weights, masks, BatchNorm moving mean and
    variance, other non-trainable state) and of its optimizer when it is
    built (momentum and other slots): a learning rate large enough to blow up
    the BatchNorm statistics can keep the loss finite, so the loss alone
    does not show it.
    """
    variables = list(model.variables)
    optimizer = getattr(model, "optimizer", None)
    if optimizer is not None and getattr(optimizer, "built", False):
        variables += list(optimizer.variables)
    seen, bad = set(), []
    for variable in variables:
        if id(variable) in seen:
            continue
        seen.add(id(variable))
        if not _is_finite(variable):
            bad.append(variable.path)
    return bad


def check_finite(model, name):
    """Raises `NonFiniteTrainingError` when a variable `model` would save holds NaN/Inf (all are named).

    Args:
      model: a Keras model about to be written (checkpoint, ticket or member file).
      name: what it is, for the message (e.g. "member_0").
    """
    bad = non_finite_variables(model)
    if bad:
        raise NonFiniteTrainingError(
            f"{name}: {len(bad)} saved variable(s) hold NaN/Inf ({', '.join(bad)}); nothing non-finite was written"
        )


class FiniteTrainingGuard(keras.callbacks.Callback):
    """Raises `NonFiniteTrainingError` at the first non-finite loss or weight.

    Checks the logged loss after every batch (Keras logs the epoch's running
    mean, which stays non-finite from the first bad batch on, so the first
    failing batch is the one named) and, at every epoch end, that every
    variable a checkpoint saves (weights, BatchNorm statistics, optimizer
    slots) is finite and every mask exactly 0/1. Raising ends
    `fit` before the later callbacks of that batch or epoch run.

    Args:
      name: what is training, for the message (e.g. "member_1").
    """

    def __init__(self, name="model"):
        super().__init__()
        self.name = name
        self.epoch = 0  # the epoch running (0-based), for messages

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is None:
            return
        loss = float(loss)
        if not math.isfinite(loss):
            step = int(self.model.optimizer.iterations.numpy())
            raise NonFiniteTrainingError(
                f"{self.name}: the loss became {loss} in epoch {self.epoch + 1}, batch {batch + 1} "
                f"(optimizer step {step}); training stopped before this epoch's checkpoint and members were written"
            )

    def on_epoch_end(self, epoch, logs=None):
        bad = non_finite_variables(self.model)
        if bad:
            raise NonFiniteTrainingError(
                f"{self.name}: variables became NaN/Inf in epoch {epoch + 1} ({', '.join(bad[:4])}"
                f"{f', ... {len(bad)} in all' if len(bad) > 4 else ''}); training stopped before this epoch's "
                "checkpoint and members were written"
            )
        not_binary = non_binary_masks(self.model)
        if not_binary:
            raise NonFiniteTrainingError(
                f"{self.name}: masks of {', '.join(not_binary)} are no longer 0/1 after epoch {epoch + 1}; "
                "training stopped before this epoch's checkpoint and members were written"
            )
