"""Epoch checkpoints that let a killed run resume and finish as if never stopped.

What decides the rest of a run is saved or derivable (design invariant 6):
- `tf.train.Checkpoint` of the model (weights, masks, BatchNorm statistics,
  dropout RNG state) and the optimizer (slots and `iterations`, the step that
  drives every mask schedule and the counter-based SET/CigL randomness);
- the state of stateful callbacks (EDST's saved tickets, WeightAveraging's
  running mean), through their `get_state()` / `set_state()`, in an .npz file
  written next to each checkpoint;
- the data order: `data.train_dataset` is indexed by epoch, so the stream is
  rebuilt from the resume epoch; MaskUpdate re-positions its dense-gradient
  batches from the step.
"""

import glob
import os
import re

import keras
import numpy as np
import tensorflow as tf

_STATE_PATTERN = "callback_state-{}.npz"


def _checkpoint(model):
    if model.optimizer is None:
        raise ValueError(f"Model {model.name!r} must be compiled before it is checkpointed.")
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    return tf.train.Checkpoint(model=model, optimizer=model.optimizer)


def _pack(callbacks):
    packed = {}
    for index, callback in enumerate(callbacks):
        for key, value in callback.get_state().items():
            packed[f"{index}/{key}"] = np.asarray(value)
    return packed


def _unpack(callbacks, packed):
    for index, callback in enumerate(callbacks):
        prefix = f"{index}/"
        callback.set_state({key[len(prefix) :]: packed[key] for key in packed.files if key.startswith(prefix)})


class EpochCheckpoint(keras.callbacks.Callback):
    """Writes a checkpoint at the end of every epoch (keeps the newest `max_to_keep`).

    Args:
      directory: checkpoint folder (created).
      stateful_callbacks: callbacks with get_state()/set_state() to save too.
      max_to_keep: checkpoints kept.
    """

    def __init__(self, directory, stateful_callbacks=(), max_to_keep=2):
        super().__init__()
        self.directory = directory
        self.stateful_callbacks = list(stateful_callbacks)
        self.max_to_keep = max_to_keep
        self._manager = None

    def on_train_begin(self, logs=None):
        os.makedirs(self.directory, exist_ok=True)
        self._manager = tf.train.CheckpointManager(_checkpoint(self.model), self.directory, self.max_to_keep)

    def on_epoch_end(self, epoch, logs=None):
        number = epoch + 1
        # The state file first: a checkpoint that exists always has its state.
        np.savez(os.path.join(self.directory, _STATE_PATTERN.format(number)), **_pack(self.stateful_callbacks))
        self._manager.save(checkpoint_number=number)
        kept = {int(re.search(r"ckpt-(\d+)$", p).group(1)) for p in self._manager.checkpoints}
        for path in glob.glob(os.path.join(self.directory, _STATE_PATTERN.format("*"))):
            if int(re.search(r"callback_state-(\d+)\.npz$", path).group(1)) not in kept:
                os.remove(path)


def restore_latest(model, directory, stateful_callbacks=()):
    """Restores the newest checkpoint in `directory` into a compiled `model`.

    Args:
      model: the compiled model, built exactly as the run that wrote the checkpoint.
      directory: the `EpochCheckpoint` folder (absent or empty: nothing restored).
      stateful_callbacks: the same callbacks, in the same order, as when saving.

    Returns:
      The number of completed epochs (0 when there is no checkpoint): pass it
      as `initial_epoch` to `fit` and as `start_epoch` to `data.train_dataset`.
    """
    latest = tf.train.latest_checkpoint(directory) if os.path.isdir(directory) else None
    if latest is None:
        return 0
    _checkpoint(model).restore(latest).assert_existing_objects_matched()
    number = int(re.search(r"ckpt-(\d+)$", latest).group(1))
    state_file = os.path.join(directory, _STATE_PATTERN.format(number))
    if stateful_callbacks:
        with np.load(state_file) as packed:
            _unpack(stateful_callbacks, packed)
    return number
