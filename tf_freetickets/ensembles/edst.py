"""EDST ensembles: M sparse tickets harvested from one dynamic-sparse-training run.

FreeTickets (Liu et al., ICLR 2022, Sec. 3.2 and the official `main_EDST.py`):
an exploration phase of `t_ex` epochs at the base learning rate, then M
refinement phases of `t_re` epochs. Each refinement phase trains at lr/10 for
its first half and lr/100 for its second half, and ends by saving a ticket.
Before refinement phases 2..M a *global exploration* step drops a large
fraction q (0.8) of every layer's active weights by magnitude and regrows as
many with the updater's growth rule, pushing the run into a new basin. Normal
DST mask updates go on in every phase (the paper keeps drop fraction 0.5
constant, every 1000 steps at batch 128 on CIFAR).

FreeTickets' ImageNet code (`ImageNet/main.py`, `train_loop`) instead decays
the drop fraction along a cosine (0.5 down to 0.005, updates every 4000 steps
for the whole run): one cosine over the exploration phase and the first
refinement phase, then a fresh cosine from 0.5 over each later refinement
phase, started right after its global exploration.
`restart_schedule_after_exploration=True` does that.

BatchNorm statistics: the official code saves each ticket with the running
statistics training left (PyTorch momentum 0.1) and never recomputes them.
Keras' momentum is 0.99, so a ticket saved a few hundred steps after the start
or after a global exploration keeps mostly stale statistics and can score near
chance in inference mode. `batchnorm_data` recomputes them before each ticket
is saved (off by default, as in the paper's code); without it EDST warns once
when they are stale.
"""

import dataclasses
import os
import warnings

import keras
import numpy as np

from tf_freetickets.ensembles.ticket_batchnorm import check_batchnorm_data, stale_statistics_warning
from tf_freetickets.ensembles.weight_averaging import recompute_batchnorm_statistics
from tf_freetickets.sparse.callback import MaskUpdate
from tf_freetickets.sparse.report import mask_overlap, model_masks


@dataclasses.dataclass(frozen=True)
class EDSTSchedule:
    """Epoch layout of an EDST run.

    Attributes:
      num_tickets: M, tickets (ensemble members) produced.
      exploration_epochs: t_ex, epochs before the first refinement phase.
      refinement_epochs: t_re, epochs per refinement phase (at least one
        epoch per learning-rate step).
      refinement_lr_factors: learning-rate multipliers of the successive steps
        of each refinement phase (CIFAR code: 0.1 then 0.01 of the base rate;
        ImageNet code: 0.1, 0.01, 0.001).
      refinement_lr_epochs: epochs of each of those steps, summing to
        `refinement_epochs` (ImageNet code: 30, 30, 10 of 70); empty splits
        the phase evenly, the last step taking the remainder.
      warmup_epochs: the first epochs of exploration ramp the rate linearly,
        factor (e + 1) / (warmup + 1) in epoch e (ImageNet code: 5).
      restart_schedule_after_exploration: the DST updater's cosine drop
        fraction starts again from its initial value after each global
        exploration and runs to the next one (or the end of training); the
        first cosine spans exploration and the first refinement phase
        (FreeTickets' ImageNet code). False: one schedule for the whole run.
    """

    num_tickets: int = 3
    exploration_epochs: int = 150
    refinement_epochs: int = 100
    refinement_lr_factors: tuple = (0.1, 0.01)
    refinement_lr_epochs: tuple = ()
    warmup_epochs: int = 0
    restart_schedule_after_exploration: bool = False

    def __post_init__(self):
        if self.num_tickets < 1:
            raise ValueError(f"num_tickets must be >= 1, got {self.num_tickets!r}.")
        if self.exploration_epochs < 0:
            raise ValueError(f"exploration_epochs must be >= 0, got {self.exploration_epochs!r}.")
        steps = len(self.refinement_lr_factors)
        if steps < 1:
            raise ValueError("refinement_lr_factors needs at least one learning-rate factor.")
        if self.refinement_epochs < steps:
            raise ValueError(
                f"refinement_epochs must be >= {steps} (one epoch per learning-rate step), got {self.refinement_epochs!r}."
            )
        if self.refinement_lr_epochs and (
            len(self.refinement_lr_epochs) != steps
            or sum(self.refinement_lr_epochs) != self.refinement_epochs
            or min(self.refinement_lr_epochs) < 1
        ):
            raise ValueError(
                f"refinement_lr_epochs={tuple(self.refinement_lr_epochs)!r} must give {steps} positive epoch counts "
                f"(one per factor in {tuple(self.refinement_lr_factors)!r}) summing to "
                f"refinement_epochs={self.refinement_epochs}."
            )
        if not 0 <= self.warmup_epochs <= self.exploration_epochs:
            raise ValueError(
                f"warmup_epochs must be in [0, exploration_epochs={self.exploration_epochs}], got {self.warmup_epochs!r}."
            )

    @property
    def total_epochs(self):
        """Epochs of the whole run: t_ex + M * t_re."""
        return self.exploration_epochs + self.num_tickets * self.refinement_epochs

    def phase(self, epoch):
        """-1 during exploration, else the 0-based refinement phase of `epoch`."""
        if epoch < self.exploration_epochs:
            return -1
        return min((epoch - self.exploration_epochs) // self.refinement_epochs, self.num_tickets - 1)

    def lr_factor(self, epoch):
        """Multiplier on the base learning rate during `epoch` (0-based)."""
        phase = self.phase(epoch)
        if phase < 0:
            return (epoch + 1) / (self.warmup_epochs + 1) if epoch < self.warmup_epochs else 1.0
        within = epoch - self.exploration_epochs - phase * self.refinement_epochs
        for factor, end in zip(self.refinement_lr_factors, np.cumsum(self._step_epochs())):
            if within < end:
                return factor
        return self.refinement_lr_factors[-1]

    def _step_epochs(self):
        if self.refinement_lr_epochs:
            return list(self.refinement_lr_epochs)
        steps = len(self.refinement_lr_factors)
        even = self.refinement_epochs // steps
        return [even] * (steps - 1) + [self.refinement_epochs - even * (steps - 1)]

    @property
    def ticket_epochs(self):
        """0-based epochs at whose end ticket k is saved."""
        return [self.exploration_epochs + (k + 1) * self.refinement_epochs - 1 for k in range(self.num_tickets)]

    @property
    def global_exploration_epochs(self):
        """0-based epochs at whose start a global exploration step runs."""
        return [self.exploration_epochs + k * self.refinement_epochs for k in range(1, self.num_tickets)]

    def restart_steps(self, steps_per_epoch):
        """Optimizer steps after which the DST cosine restarts: the global explorations' steps."""
        return tuple(epoch * steps_per_epoch for epoch in self.global_exploration_epochs)


@dataclasses.dataclass
class Ticket:
    """One saved EDST ticket: where it is and the masks it had."""

    index: int
    epoch: int
    step: int
    keras_path: str | None
    saved_model_path: str | None
    masks: dict  # layer name -> bool array


class EDST(MaskUpdate):
    """Keras callback that trains an EDST ensemble inside one `model.fit`.

    Drives the DST mask updates of `updater` (it is a `MaskUpdate`), sets the
    learning rate of each phase, runs the global exploration steps and saves
    each ticket as `ticket_<k>.keras` and a SavedModel `ticket_<k>/` under
    `export_dir`. Call `fit` with `epochs=schedule.total_epochs`.

    Args:
      updater: the DST updater (FreeTickets: SET or RigL with
        `drop_fraction=0.5, decay="constant", end_fraction=1.0`).
      num_tickets, exploration_epochs, refinement_epochs,
      refinement_lr_factors, refinement_lr_epochs, warmup_epochs,
      restart_schedule_after_exploration: see `EDSTSchedule`. The restart
        needs an updater with `decay="cosine"` whose updates run to the end of
        training (`end_fraction=1.0`); FreeTickets' ImageNet setting is
        `RigL(update_every=4000, drop_fraction=0.5, end_fraction=1.0,
        min_drop_fraction=0.005)`.
      large_drop_fraction: q, fraction of active weights replaced by the global
        exploration step (paper: 0.8).
      export_dir: where tickets are written; None keeps them in memory only
        (`tickets[k].masks`).
      export_saved_model: also write each ticket as a SavedModel.
      export_input_range: what the tickets' SavedModel endpoints accept
        ("auto": [0, 1] for float inputs, none for integer ids; None for
        inputs normalised otherwise, e.g. ImageNet's mean/std).
      manage_learning_rate: set the optimizer's learning rate per phase from
        its value at the start of training (needs a float learning rate, not a
        schedule).
      gradient_data, gradient_batch_size: as for `MaskUpdate`.
      batchnorm_data: training batches ((x, y) or x) on which every
        BatchNormalization layer's moving statistics are recomputed (equal
        weight per batch, SWA's `bn_update`) right before each ticket is
        saved, or a function ticket index -> such batches (a fresh, seeded
        dataset per ticket keeps a resumed run exact: a shuffled tf.data
        dataset reshuffles at every new iterator). None (default, as
        FreeTickets' code): the statistics training left, with a warning
        when over 10% of them predate the ticket's phase.
      batchnorm_batches: how many batches of `batchnorm_data` to use (None:
        all; needed for an endless dataset).
      verbose: 1 prints the phases and the saved tickets, 2 also every DST
        mask update.
    """

    def __init__(
        self,
        updater,
        num_tickets=3,
        exploration_epochs=150,
        refinement_epochs=100,
        large_drop_fraction=0.8,
        refinement_lr_factors=(0.1, 0.01),
        refinement_lr_epochs=(),
        warmup_epochs=0,
        restart_schedule_after_exploration=False,
        export_dir=None,
        export_saved_model=True,
        manage_learning_rate=True,
        gradient_data=None,
        gradient_batch_size=128,
        verbose=1,
        batchnorm_data=None,
        batchnorm_batches=None,
        export_input_range="auto",
    ):
        super().__init__(updater, gradient_data, gradient_batch_size, verbose=max(0, verbose - 1))
        self.phase_verbose = verbose
        self.schedule = EDSTSchedule(
            num_tickets, exploration_epochs, refinement_epochs, tuple(refinement_lr_factors), tuple(refinement_lr_epochs),
            warmup_epochs, bool(restart_schedule_after_exploration),
        )  # fmt: skip
        if restart_schedule_after_exploration and updater.schedule.decay != "cosine":
            raise ValueError(
                "restart_schedule_after_exploration restarts a cosine drop-fraction decay; the updater has "
                f"decay={updater.schedule.decay!r}. Give it decay='cosine' or leave the option off."
            )
        if not 0.0 < large_drop_fraction <= 1.0:
            raise ValueError(f"large_drop_fraction must be in (0, 1], got {large_drop_fraction!r}.")
        self.large_drop_fraction = large_drop_fraction
        self.batchnorm_data, self.batchnorm_batches = check_batchnorm_data(batchnorm_data, batchnorm_batches)
        self._batchnorm_warned = False
        self.export_dir = export_dir
        self.export_saved_model = export_saved_model
        self.export_input_range = export_input_range
        self.manage_learning_rate = manage_learning_rate
        self.tickets = []
        self._base_lr = None
        self._pending_tap_state = None

    def on_train_begin(self, logs=None):
        epochs = (self.params or {}).get("epochs")
        if epochs != self.schedule.total_epochs:
            raise ValueError(
                f"EDST with {self.schedule.num_tickets} tickets, {self.schedule.exploration_epochs} exploration and "
                f"{self.schedule.refinement_epochs} refinement epochs needs fit(epochs={self.schedule.total_epochs}), "
                f"got epochs={epochs}."
            )
        super().on_train_begin(logs)
        if self._pending_tap_state is not None:  # restored by set_state before fit
            self.updater.tap.set_state(self._pending_tap_state)
            self._pending_tap_state = None
        if self.schedule.restart_schedule_after_exploration:
            self._install_restarts()
        if self.manage_learning_rate:
            learning_rate = self.model.optimizer.learning_rate
            if not isinstance(learning_rate, keras.Variable):
                raise ValueError(
                    "EDST sets the learning rate of each phase and needs a float learning rate; the optimizer "
                    "has a schedule. Pass manage_learning_rate=False to keep your schedule."
                )
            if self._base_lr is None:  # restored from a checkpoint otherwise
                self._base_lr = float(learning_rate.numpy())
        if self.export_dir:
            os.makedirs(self.export_dir, exist_ok=True)

    def _install_restarts(self):
        # The restart steps follow from the epoch layout, so a resumed run (a new
        # callback, the optimizer's step restored) computes the same schedule.
        steps_per_epoch = (self.params or {}).get("steps")
        if not steps_per_epoch:
            raise ValueError(
                "restart_schedule_after_exploration needs the number of steps per epoch; pass fit(steps_per_epoch=...)."
            )
        schedule = self.updater.schedule
        total = steps_per_epoch * self.schedule.total_epochs
        if schedule.end_step < total:
            raise ValueError(
                f"restart_schedule_after_exploration keeps DST updates going to the end of training, but the updater "
                f"stops at step {schedule.end_step} of {total}; give it end_fraction=1.0."
            )
        self.updater.schedule = dataclasses.replace(schedule, restart_steps=self.schedule.restart_steps(steps_per_epoch))

    def updates_before(self, step):
        """DST updates plus the global explorations already run by `step` (for resuming)."""
        steps_per_epoch = (self.params or {}).get("steps") or 1
        epoch = step // steps_per_epoch
        explorations = sum(1 for e in self.schedule.global_exploration_epochs if e < epoch)
        return super().updates_before(step) + explorations

    def get_state(self):
        """The saved tickets and the base learning rate, as arrays (for `experiments.checkpointing.EpochCheckpoint`).

        Ticket files are stored by name, not by path: `set_state` finds them in
        the restoring callback's `export_dir`, so a workdir moved or copied
        between a checkpoint and its resume reads its own tickets.
        """
        state = {"count": np.asarray(len(self.tickets)), "base_lr": np.asarray(self._base_lr or np.nan)}
        for k, ticket in enumerate(self.tickets):
            state[f"{k}/meta"] = np.asarray([ticket.index, ticket.epoch, ticket.step])
            # File names only: the tickets lie in export_dir, which a moved or copied run gives anew.
            state[f"{k}/paths"] = np.asarray([os.path.basename(p or "") for p in (ticket.keras_path, ticket.saved_model_path)])
            for name, mask in ticket.masks.items():
                state[f"{k}/mask/{name}"] = mask
        if getattr(self.updater, "tap", None) is not None:
            # Growth by the step's own batch: a global exploration right after a
            # restore needs the last batch's gradient.
            state.update(self.updater.tap.get_state())
        return state

    def set_state(self, state):
        """Restores the tickets (and a step-batch growth gradient) saved before a checkpoint."""
        tap_state = {key: value for key, value in state.items() if key.startswith("step_gradient/")}
        self._pending_tap_state = tap_state or None
        self._base_lr = None if np.isnan(state["base_lr"]) else float(state["base_lr"])
        self.tickets = []
        for k in range(int(state["count"])):
            index, epoch, step = (int(v) for v in state[f"{k}/meta"])
            keras_path, saved_model_path = (self._in_export_dir(str(p)) for p in state[f"{k}/paths"])
            prefix = f"{k}/mask/"
            masks = {key[len(prefix) :]: value.astype(bool) for key, value in state.items() if key.startswith(prefix)}
            self.tickets.append(Ticket(index, epoch, step, keras_path, saved_model_path, masks))

    def _in_export_dir(self, stored):
        """A restored ticket path: its file name (older states hold the path as typed) in this export_dir."""
        if not stored or not self.export_dir:
            return None
        return os.path.join(self.export_dir, os.path.basename(os.path.normpath(stored)))

    def _say(self, message):
        if self.phase_verbose:
            print(f"EDST: {message}", flush=True)

    def on_epoch_begin(self, epoch, logs=None):
        super().on_epoch_begin(epoch, logs)
        if self.manage_learning_rate:
            self.model.optimizer.learning_rate.assign(self._base_lr * self.schedule.lr_factor(epoch))
        if epoch == 0 and self.schedule.exploration_epochs:
            self._say(f"exploration phase, epochs 1-{self.schedule.exploration_epochs}")
        if epoch in self.schedule.global_exploration_epochs:
            result = self.engine.update(self._step, drop_fraction=self.large_drop_fraction)
            self._epoch_changes += sum(result["changed"])
            self._say(
                f"global exploration before ticket_{self.schedule.phase(epoch)}: "
                f"{sum(result['changed'])} weights moved (q={self.large_drop_fraction})"
            )

    def on_epoch_end(self, epoch, logs=None):
        super().on_epoch_end(epoch, logs)
        if logs is not None:
            logs["edst_phase"] = self.schedule.phase(epoch) + 1
        if epoch in self.schedule.ticket_epochs:
            self._save_ticket(self.schedule.ticket_epochs.index(epoch), epoch)

    def _prepare_batchnorm(self, index):
        """Recomputes BatchNorm statistics before ticket `index` is saved, or warns once when they are stale."""
        if self.batchnorm_data is not None:
            data = self.batchnorm_data(index) if callable(self.batchnorm_data) else self.batchnorm_data
            recompute_batchnorm_statistics(self.model, data, self.batchnorm_batches)
            return
        steps_per_epoch = (self.params or {}).get("steps")
        if self._batchnorm_warned or not steps_per_epoch:
            return
        start = self.schedule.global_exploration_epochs[index - 1] * steps_per_epoch if index else 0
        shortest = min(self._step - start, self.schedule.refinement_epochs * steps_per_epoch)
        message = stale_statistics_warning(self.model, index, self._step, start, shortest)
        if message:
            self._batchnorm_warned = True
            warnings.warn(message, stacklevel=2)

    def _save_ticket(self, index, epoch):
        self._prepare_batchnorm(index)
        masks = model_masks(self.model)
        keras_path = saved_model_path = None
        if self.export_dir:
            keras_path = os.path.join(self.export_dir, f"ticket_{index}.keras")
            self.model.save(keras_path)
            if self.export_saved_model:
                from tf_freetickets.deploy.saved_model import export_member

                saved_model_path = export_member(
                    self.model, os.path.join(self.export_dir, f"ticket_{index}"), input_range=self.export_input_range
                )
        self.tickets.append(Ticket(index, epoch, self._step, keras_path, saved_model_path, masks))
        where = f" to {keras_path}" if keras_path else ""
        # Named as its files are (ticket_<k>, k from 0), with its place among the M tickets.
        count = f"{index + 1} of {self.schedule.num_tickets}"
        self._say(f"ticket_{index} ({count}) saved after epoch {epoch + 1} (step {self._step}){where}")

    def ticket_overlaps(self):
        """(M, M) matrix: fraction of ticket i's active weights also active in ticket j."""
        count = len(self.tickets)
        matrix = np.ones((count, count))
        for i in range(count):
            for j in range(count):
                if i != j:
                    matrix[i, j] = mask_overlap(self.tickets[i].masks, self.tickets[j].masks)
        return matrix
