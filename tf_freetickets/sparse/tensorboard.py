"""Per-layer sparsity curves for TensorBoard."""

import keras
import numpy as np
import tensorflow as tf

from tf_freetickets.sparse import layers as masking


class LayerSparsityLogger(keras.callbacks.Callback):
    """Writes each masked layer's density and mask turnover to TensorBoard every epoch.

    Scalars `density/<i>_<layer>` (active fraction) and `mask_turnover/<i>_<layer>`
    (fraction of the layer's active weights that were not active at the end of
    the previous epoch), next to Keras' own `keras.callbacks.TensorBoard` logs
    of loss, accuracy, `sparsity` and `mask_changes`. Layers are numbered
    because members of one ensemble model share layer names.

    Args:
      log_dir: summary folder (e.g. the TensorBoard callback's log_dir + "/sparsity").
    """

    def __init__(self, log_dir):
        super().__init__()
        self.log_dir = log_dir
        self._writer = None
        self._previous = None

    def on_train_begin(self, logs=None):
        self._writer = tf.summary.create_file_writer(self.log_dir)
        self._previous = [layer.kernel_mask.numpy() > 0 for layer in masking.masked_layers(self.model)]

    def on_epoch_end(self, epoch, logs=None):
        current = [layer.kernel_mask.numpy() > 0 for layer in masking.masked_layers(self.model)]
        with self._writer.as_default(step=epoch):
            for index, (layer, mask, before) in enumerate(zip(masking.masked_layers(self.model), current, self._previous)):
                tag = f"{index}_{layer.name}"
                active = max(int(mask.sum()), 1)
                tf.summary.scalar(f"density/{tag}", float(mask.mean()))
                tf.summary.scalar(f"mask_turnover/{tag}", float(np.sum(mask & ~before)) / active)
        self._writer.flush()
        self._previous = current

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
