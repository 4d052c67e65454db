"""`MaskUpdate`: the Keras callback that drives dynamic sparse training in `fit`."""

import warnings

import keras
import numpy as np

from tf_freetickets.sparse import layers as masking
from tf_freetickets.sparse import report
from tf_freetickets.sparse.mask_engine import MaskEngine
from tf_freetickets.sparse.masked_set import MaskedLayerSet
from tf_freetickets.sparse.pruning_schedules import PruningSteps
from tf_freetickets.sparse.updater import MaskUpdater


class MaskUpdate(keras.callbacks.Callback):
    """Updates the masks of a sparsified model during `model.fit`.

    After every optimizer step that the updater's schedule names (every ΔT
    steps until `end_step`), the engine drops and regrows weights in one
    compiled step. The step count is the optimizer's `iterations` variable,
    read at every epoch start (after every callback's `on_train_begin`, so a
    `BackupAndRestore` anywhere in the list has restored it), so a restored
    checkpoint resumes the schedule where it stopped.

    A schedule given by `end_fraction` is resolved against the run `fit` is
    told about (`epochs * steps`); a `fit` that starts on an optimizer that has
    already stepped must say where the run stands (`initial_epoch`), or the
    schedule needs an absolute `end_step`, else training stops with an error
    saying what to pass. With `steps_per_execution` > 1 the callback sees the
    step count once per execution: an update due inside it runs at its end, and
    a warning says how many due updates that merges or delays. An optimizer
    with `gradient_accumulation_steps` is refused: it steps once every n
    batches, and the schedule counts batches.

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
        if isinstance(updater, type):
            raise TypeError(
                f"MaskUpdate needs an updater instance, got the class {updater.__name__}; "
                f"call it: MaskUpdate(tft.{updater.__name__}(update_every=100, ...))."
            )
        if not isinstance(updater, MaskUpdater):
            raise TypeError(f"MaskUpdate needs a MaskUpdater (tft.RigL(), tft.SET(), ...), got {type(updater).__name__}.")
        self.updater = updater
        self._requested_schedule = updater.schedule
        self._resolved_schedule = None
        self.gradient_data = gradient_data
        self.gradient_batch_size = gradient_batch_size
        self.verbose = verbose
        self.engine = None
        self.history = []  # (step, drop_fraction, changed per layer)

    def on_train_begin(self, logs=None):
        self._refuse_gradient_accumulation()
        params = self.params or {}
        steps, epochs = params.get("steps"), params.get("epochs")
        total = steps * epochs if steps and epochs else None
        # Resolved from what the user asked for, each fit: an end_step resolved
        # by an earlier fit is not an explicit one. A schedule set on the
        # updater since then is a new request.
        if self.updater.schedule is not self._resolved_schedule:
            self._requested_schedule = self.updater.schedule
        self._resolved_schedule = self.updater.schedule = self._requested_schedule.resolved(total)
        self._refuse_uninitialised_masks()
        self._warn_unreachable_target(total)
        self.engine = None  # made at the first epoch start, once the step is valid
        self.layers = MaskedLayerSet(self.model)  # one list and one index per layer for the whole run
        if self.updater.attach(self.model, self.layers):
            # `fit` has built its train function already; retrace it with the change.
            self.model.make_train_function(force=True)
        self._epoch_changes = 0

    def _refuse_gradient_accumulation(self):
        # Keras applies accumulated gradients every n-th batch and counts `iterations` in those
        # applications; the schedule counts batches, so updates would repeat steps. Refused
        # rather than rescheduled: the step-gradient tap and the resume counts read single batches.
        accumulation = getattr(self.model.optimizer, "gradient_accumulation_steps", None)
        if accumulation:
            raise ValueError(
                f"MaskUpdate: the optimizer has gradient_accumulation_steps={accumulation}, which mask schedules do not "
                "support (they count every batch as an optimizer step); compile without it, with a "
                f"{accumulation}x larger batch_size instead."
            )

    def _refuse_uninitialised_masks(self):
        """A model whose masked layers were built but never given masks (no `init_masks`) would train dense."""
        layers = masking.masked_layers(self.model)
        if isinstance(self.updater.schedule, PruningSteps) or not layers:
            return  # gradual pruning starts from dense masks by design
        if any(layer.target_density is not None for layer in layers):
            return  # sparsify / init_masks / a loaded config set the masks
        if all(np.all(np.asarray(layer.kernel_mask.numpy()) == 1) for layer in layers):
            raise ValueError(
                f"MaskUpdate: the masks of model {self.model.name!r} were never initialised (all ones), so it would "
                "train dense; call tft.init_masks(model, sparsity) once the model is built, before fit."
            )

    def _warn_unreachable_target(self, total):
        """Warns when the run's `total` steps (None: unknown) end before the schedule reaches its target."""
        schedule = self.updater.schedule
        if total is None or not self.updater.updates_masks:
            return
        if isinstance(schedule, PruningSteps):
            pruning = schedule.pruning_schedule
            last = schedule.last_update_step(total)
            reached = None if last is None else schedule.sparsity_after(last)
            if reached is None or reached < pruning.final_sparsity - 1e-9:
                outcome = "it never prunes" if reached is None else f"it ends at sparsity {reached:.4g}"
                warnings.warn(
                    f"MaskUpdate: the pruning schedule runs from step {pruning.begin_step} to {pruning.end_step} but "
                    f"the run has {total} steps: {outcome}, below its final sparsity {pruning.final_sparsity:.4g}; "
                    "end the schedule within the run.",
                    stacklevel=3,
                )
        elif schedule.updates_through(total) == 0:
            last = min(total, schedule.end_step)
            if last <= schedule.begin_step:
                advice = "end the updates later (end_fraction, end_step) or begin them earlier (begin_step)"
            else:
                advice = f"use update_every <= {last - schedule.begin_step}"
            warnings.warn(
                f"MaskUpdate: no mask update falls within the run's {total} steps (update_every="
                f"{schedule.update_every}, updates from step {schedule.begin_step} to {schedule.end_step}), so the "
                f"masks stay as they start; {advice}.",
                stacklevel=3,
            )

    def _start(self, epoch):
        """First epoch of a fit: read the optimizer step, check it against fit's epoch, build the engine."""
        steps = (self.params or {}).get("steps")
        if self._requested_schedule.end_step is None and steps and self._step != epoch * steps:
            raise ValueError(
                f"MaskUpdate: the optimizer has taken {self._step} steps, but fit starts at epoch {epoch} "
                f"({epoch * steps} steps at {steps} per epoch), so the mask schedule resolved from the run length "
                f"(last update at step {self.updater.schedule.end_step}) would not match the run. "
                f"To continue the run pass fit(initial_epoch={self._step // steps}, epochs=<final epoch>); or give the "
                "updater an absolute end_step=<optimizer step>; or compile with a fresh optimizer to start over."
            )
        self._check_steps_per_execution()
        used = self.updater.score_source.batches_per_update * self.updates_before(self._step)
        self.engine = MaskEngine(
            self.model, self.updater, self.gradient_data, self.gradient_batch_size, used, layers=self.layers
        )

    def _check_steps_per_execution(self):
        per_call = int(getattr(self.model, "steps_per_execution", 1) or 1)
        every = self.updater.schedule.update_every
        if per_call <= 1 or every % per_call == 0 or not self.updater.updates_masks or getattr(self, "_warned", False):
            return
        self._warned = True
        if per_call > every:
            effect = f"at most one update runs per execution, so about {per_call // every} due updates are merged into one"
        else:
            effect = f"an update due inside an execution runs at its end, up to {per_call - 1} steps late"
        warnings.warn(
            f"MaskUpdate: steps_per_execution={per_call} does not divide update_every={every}: {effect}. "
            f"Use a steps_per_execution that divides {every} for the exact schedule.",
            stacklevel=2,
        )

    def updates_before(self, step):
        """Mask updates a run has made by optimizer step `step` (for resuming mid-run)."""
        return self.updater.schedule.updates_through(step) if self.updater.updates_masks else 0

    def on_epoch_begin(self, epoch, logs=None):
        # One host read per epoch; batches are counted without device syncs.
        self._step = int(self.model.optimizer.iterations.numpy())
        if self.engine is None:
            self._start(epoch)
        self._epoch_start_step = self._step
        self._epoch_changes = 0

    def on_train_batch_end(self, batch, logs=None):
        previous, self._step = self._step, self._epoch_start_step + batch + 1
        if not self.updater.updates_masks:
            return
        # With steps_per_execution > 1 several steps pass per call: update once
        # (the warning of `_check_steps_per_execution` says so).
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
