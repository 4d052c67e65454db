"""`MaskUpdate`: the Keras callback that drives dynamic sparse training in `fit`."""

import keras

from tf_freetickets.sparse import report
from tf_freetickets.sparse.mask_engine import MaskEngine


class MaskUpdate(keras.callbacks.Callback):
    """Updates the masks of a sparsified model during `model.fit`.

    After every optimizer step that the updater's schedule names (every ΔT
    steps until `end_step`), the engine drops and regrows weights in one
    compiled step. The step count is the optimizer's `iterations` variable, so
    a restored checkpoint resumes the schedule where it stopped.

    Logs (History, TensorBoard, progress bar): at every batch end after an
    update, `drop_fraction` and `mask_changes` (weights newly activated by that
    update); at epoch end, `sparsity` over all masked kernels and
    `mask_changes` summed over the epoch.

    Args:
      updater: a `MaskUpdater` (Static, SET, RigL, SNFS, ...).
      gradient_data: batches for dense gradients, needed by RigL and SNFS: a
        `tf.data.Dataset` of (x, y[, sample_weight]) (usually the training
        set; it is repeated) or an (x, y) tuple of arrays.
      gradient_batch_size: batch size when `gradient_data` is arrays.
      verbose: 1 prints one line per mask update.

    Example:
      model.fit(train_ds, epochs=10, callbacks=[
          tft.MaskUpdate(tft.RigL(update_every=100, drop_fraction=0.3), gradient_data=train_ds)])
    """

    def __init__(self, updater, gradient_data=None, gradient_batch_size=128, verbose=0):
        super().__init__()
        self.updater = updater
        self.gradient_data = gradient_data
        self.gradient_batch_size = gradient_batch_size
        self.verbose = verbose
        self.engine = None
        self.history = []  # (step, drop_fraction, changed per layer)

    def on_train_begin(self, logs=None):
        params = self.params or {}
        steps, epochs = params.get("steps"), params.get("epochs")
        total = steps * epochs if steps and epochs else None
        self.updater.schedule = self.updater.schedule.resolved(total)
        # One host read here; later steps are counted without device syncs.
        self._step = int(self.model.optimizer.iterations.numpy())
        used = self.updater.gradient_batches * self.updates_before(self._step) if self.updater.uses_gradients else 0
        self.engine = MaskEngine(self.model, self.updater, self.gradient_data, self.gradient_batch_size, used)
        if self.updater.attach(self.model):
            # `fit` has built its train function already; retrace it with the change.
            self.model.make_train_function(force=True)
        self._epoch_changes = 0

    def updates_before(self, step):
        """Mask updates a run has made by optimizer step `step` (for resuming mid-run)."""
        if not self.updater.updates_masks:
            return 0
        schedule = self.updater.schedule
        last = min(step, schedule.end_step)
        return sum(1 for s in range(schedule.begin_step, last + 1, schedule.update_every) if s > 0)

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch_start_step = self._step
        self._epoch_changes = 0

    def on_train_batch_end(self, batch, logs=None):
        previous, self._step = self._step, self._epoch_start_step + batch + 1
        if not self.updater.updates_masks:
            return
        # With steps_per_execution > 1 several steps pass per call: update once.
        due = [s for s in range(previous + 1, self._step + 1) if self.updater.schedule.is_update_step(s)]
        if not due:
            return
        result = self.engine.update(due[-1])
        changed = sum(result["changed"])
        self._epoch_changes += changed
        self.history.append((due[-1], result["drop_fraction"], result["changed"]))
        if logs is not None:
            logs["drop_fraction"] = result["drop_fraction"]
            logs["mask_changes"] = changed
        if self.verbose:
            print(f"\nMask update at step {due[-1]}: drop fraction {result['drop_fraction']:.4f}, {changed} weights regrown")

    def on_train_end(self, logs=None):
        if self.updater.detach(self.model):
            self.model.train_function = None  # the next fit retraces without it

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["sparsity"] = report.global_sparsity(self.model)
            logs["mask_changes"] = self._epoch_changes
