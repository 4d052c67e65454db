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

A damaged newest checkpoint (truncated, emptied or flipped bytes in its
files, or in its callback state) is set aside with a warning line and the
next newest intact one is restored; `ckpt-N_temp/` folders that a kill left
mid-write are removed.
"""

import glob
import os
import re
import shutil
import sys

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


class CheckpointError(RuntimeError):
    """No checkpoint of a run can be restored; the message says what to do."""


def checkpoint_numbers(directory):
    """Numbers N of the `ckpt-N` checkpoints with an index file in `directory`, newest first."""
    if not os.path.isdir(directory):
        return []
    found = (re.search(r"ckpt-(\d+)\.index$", p) for p in glob.glob(os.path.join(directory, "ckpt-*.index")))
    return sorted((int(m.group(1)) for m in found if m), reverse=True)


def _remove_unfinished_writes(directory):
    for path in glob.glob(os.path.join(directory, "ckpt-*_temp")):
        shutil.rmtree(path, ignore_errors=True)


def _set_aside(directory, number):
    """Moves a damaged checkpoint's files into `damaged/` (kept for inspection, out of the way)."""
    aside = os.path.join(directory, "damaged")
    os.makedirs(aside, exist_ok=True)
    for path in glob.glob(os.path.join(directory, f"ckpt-{number}.*")) + [os.path.join(directory, _STATE_PATTERN.format(number))]:
        if os.path.exists(path):
            os.replace(path, os.path.join(aside, os.path.basename(path)))
    _rewrite_state_file(directory)


def _rewrite_state_file(directory):
    """Rewrites CheckpointManager's `checkpoint` state file from the checkpoints left in `directory`.

    Names relative to `directory`, as the manager writes them (absolute paths
    would make a copied workdir's manager track the original's files), with
    their times, so that its max_to_keep sweep still removes the old ones.
    """
    numbers = sorted(checkpoint_numbers(directory))
    state = os.path.join(directory, "checkpoint")
    if os.path.exists(state):
        os.remove(state)
    if numbers:
        names = [f"ckpt-{n}" for n in numbers]
        times = [os.path.getmtime(os.path.join(directory, f"{name}.index")) for name in names]
        tf.compat.v1.train.update_checkpoint_state(
            directory, names[-1], all_model_checkpoint_paths=names, all_model_checkpoint_timestamps=times,
            last_preserved_timestamp=min(times) - 1.0,
        )  # fmt: skip


def _restore(model, directory, number, stateful_callbacks):
    _checkpoint(model).restore(os.path.join(directory, f"ckpt-{number}")).assert_existing_objects_matched()
    if stateful_callbacks:
        with np.load(os.path.join(directory, _STATE_PATTERN.format(number))) as packed:
            _unpack(stateful_callbacks, packed)


def restore_latest(model, directory, stateful_callbacks=()):
    """Restores the newest intact checkpoint in `directory` into a compiled `model`.

    A checkpoint whose files (or callback state) cannot be read is moved to
    `directory/damaged/` with a warning line on stderr, and the next newest
    is tried; unfinished `ckpt-N_temp/` writes are removed first.

    Args:
      model: the compiled model, built exactly as the run that wrote the checkpoint.
      directory: the `EpochCheckpoint` folder (absent or empty: nothing restored).
      stateful_callbacks: the same callbacks, in the same order, as when saving.

    Returns:
      The number of completed epochs (0 when there is no checkpoint): pass it
      as `initial_epoch` to `fit` and as `start_epoch` to `data.train_dataset`.

    Raises:
      CheckpointError: checkpoints exist but none of them can be restored.
    """
    if not os.path.isdir(directory):
        return 0
    _remove_unfinished_writes(directory)
    numbers = checkpoint_numbers(directory)
    try:
        tf.train.get_checkpoint_state(directory)
    except Exception:  # a damaged `checkpoint` state file: rebuild it from the index files
        _rewrite_state_file(directory)
    for number in numbers:
        try:
            _restore(model, directory, number, stateful_callbacks)
            return number
        except Exception as error:  # TF reports damage as OpError, IndexError, ValueError...; the reason is printed
            reason = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
            print(
                f"warning: checkpoint ckpt-{number} in {directory} is damaged ({reason}); moved it to "
                f"{os.path.join(directory, 'damaged')} and trying an older one",
                file=sys.stderr,
                flush=True,
            )
            _set_aside(directory, number)
    if numbers:
        raise CheckpointError(
            f"No intact checkpoint left in {directory} (damaged ones are in {os.path.join(directory, 'damaged')}); "
            "delete the workdir to start fresh."
        )
    return 0
