"""Weight averaging of end-of-epoch snapshots (CigL's evaluation model, SWA-style).

CigL (Lei et al., ICLR 2023; authors' `main.py` and `utils_ens.py`) evaluates
one model whose weights are the equal-weight running mean of the snapshots
taken at the end of every epoch from epoch 200 of 250 on, with BatchNorm
statistics recomputed on the training data after averaging. The deterministic
mask is fixed by then (RigL updates end at 75% of training), so the average
keeps the model's exact sparsity; any entry outside the final mask is zeroed
all the same. CigL's parameter tensors also hold its random mask between
steps, so its snapshots do too (`kernel_snapshot`).
"""

import math

import keras
import numpy as np

from tf_freetickets import keras_compat
from tf_freetickets.sparse import layers as masking


def recompute_batchnorm_statistics(model, data, num_batches=None):
    """Sets every BatchNormalization layer's moving mean/variance to its average over `data`.

    Each batch's statistics get equal weight (a cumulative average, by setting
    the layers' momentum to (k-1)/k on batch k), as SWA's `bn_update` does.
    Training-time kernel transforms (CigL's random mask) are off meanwhile.

    Args:
      model: a Keras model.
      data: iterable of (x, y) or x batches (e.g. the training tf.data.Dataset).
      num_batches: stop after this many batches (None: all of `data`).

    Returns:
      The number of batches used (0 when the model has no BatchNormalization).
    """
    layers = keras_compat.child_layers(model, recursive=True)
    norms = [layer for layer in layers if isinstance(layer, keras.layers.BatchNormalization)]
    if not norms:
        return 0
    transforms = {id(layer): layer.training_kernel_transform for layer in masking.masked_layers(model)}
    momenta = [layer.momentum for layer in norms]
    for layer in masking.masked_layers(model):
        layer.training_kernel_transform = None
    used = 0
    try:
        for batch in data:
            if num_batches is not None and used >= num_batches:
                break
            x = batch[0] if isinstance(batch, (tuple, list)) else batch
            for layer in norms:
                layer.momentum = used / (used + 1.0)
            model(x, training=True)  # eager: each call reads the momentum just set
            used += 1
    finally:
        for layer, momentum in zip(norms, momenta):
            layer.momentum = momentum
        for layer in masking.masked_layers(model):
            layer.training_kernel_transform = transforms[id(layer)]
    return used


class WeightAveraging(keras.callbacks.Callback):
    """Replaces the weights by the mean of end-of-epoch snapshots when training ends.

    A snapshot of a masked kernel is its stored value, which is exact zeros
    outside the deterministic mask, so averaging W and averaging W * mask are
    the same (masks are fixed over CigL's window: updates end at 75% of
    training, averaging starts at 80%); the result is multiplied by the final
    masks all the same.

    Args:
      start_fraction: averaging starts at the end of epoch
        ceil(start_fraction * epochs) (CigL: 200 of 250 -> 0.8).
      batchnorm_data: batches to recompute BatchNorm statistics on after
        averaging (the training set); None keeps the last statistics.
      batchnorm_batches: cap on those batches.
      kernel_snapshot: optional fn(layer_index, kernel array) -> array: what
        a snapshot holds for the updatable masked layer `layer_index`
        (`masked_layers` order without frozen layers, as `MaskedLayerSet`),
        e.g. `CigL.averaging_snapshot`, the kernel times the next step's random
        mask, as CigL's code averages its parameter tensors. None: the
        stored kernel.

    Attributes:
      num_averaged: snapshots averaged so far.
      final_weights: the model's own last weights (`restore_final` puts them back).
    """

    def __init__(self, start_fraction=0.8, batchnorm_data=None, batchnorm_batches=None, kernel_snapshot=None):
        super().__init__()
        if not 0.0 <= start_fraction < 1.0:
            raise ValueError(f"start_fraction must be in [0, 1), got {start_fraction!r}.")
        self.start_fraction = start_fraction
        self.batchnorm_data = batchnorm_data
        self.batchnorm_batches = batchnorm_batches
        self.kernel_snapshot = kernel_snapshot
        self.num_averaged = 0
        self.final_weights = None
        self._average = None
        self._restored = False

    def on_train_begin(self, logs=None):
        epochs = (self.params or {}).get("epochs") or 1
        self.start_epoch = max(math.ceil(self.start_fraction * epochs) - 1, 0)
        if not self._restored:
            self.num_averaged = 0
            self._average = None
        self._restored = False

    def get_state(self):
        """The running mean so far, as arrays (for `experiments.checkpointing.EpochCheckpoint`)."""
        state = {"count": np.asarray(self.num_averaged)}
        for index, value in enumerate(self._average or []):
            state[f"average/{index}"] = value
        return state

    def set_state(self, state):
        """Continues a running mean saved before a checkpoint."""
        self.num_averaged = int(state["count"])
        self._average = [state[f"average/{i}"] for i in range(len(state) - 1)] or None
        self._restored = True

    def on_epoch_end(self, epoch, logs=None):
        if epoch < self.start_epoch:
            return
        snapshot = [np.asarray(value, np.float64) for value in self._snapshot_values()]
        self.num_averaged += 1
        if self._average is None:
            self._average = snapshot
        else:
            self._average = [a + (s - a) / self.num_averaged for a, s in zip(self._average, snapshot)]
        if logs is not None:
            logs["averaged_snapshots"] = self.num_averaged

    def _snapshot_values(self):
        values = [v.numpy() for v in self.model.trainable_variables]
        if self.kernel_snapshot is None:
            return values
        index_of = {id(layer.kernel_variable): i for i, layer in enumerate(masking.updatable_masked_layers(self.model))}
        for position, variable in enumerate(self.model.trainable_variables):
            index = index_of.get(id(variable))
            if index is not None:
                values[position] = np.asarray(self.kernel_snapshot(index, values[position]))
        return values

    def on_train_end(self, logs=None):
        if not self._average:
            return
        self.final_weights = [v.numpy() for v in self.model.trainable_variables]
        for variable, value in zip(self.model.trainable_variables, self._average):
            variable.assign(value.astype(variable.dtype))
        for layer in masking.masked_layers(self.model):
            kernel = layer.kernel_variable
            kernel.assign(kernel.numpy() * layer.kernel_mask.numpy())
        if self.batchnorm_data is not None:
            recompute_batchnorm_statistics(self.model, self.batchnorm_data, self.batchnorm_batches)

    def restore_final(self):
        """Puts back the weights the model had before averaging (BN statistics stay recomputed)."""
        if self.final_weights is None:
            raise ValueError("No averaged weights were applied; nothing to restore.")
        for variable, value in zip(self.model.trainable_variables, self.final_weights):
            variable.assign(value)
