"""Gradual magnitude pruning (Zhu & Gupta 2017) as a `MaskUpdater`.

The network starts dense (`sparsify(model, sparsity=0)`) or at the schedule's
initial sparsity, and at every pruning step of a `PruningSchedule` each masked
layer drops its smallest-magnitude active weights down to the scheduled count.
Nothing is grown, so masks only shrink. It runs on the same core as RigL/SET:
`MaskUpdate` calls it at its steps, `MaskEngine` applies it in one compiled,
cross-replica step (pruned weights and their optimizer slots set to exactly 0,
the same mask on every replica), and the state that decides the future is the
masks and the optimizer's `iterations`, so a restored checkpoint continues
exactly.

Layer targets: every masked layer l gets a final sparsity S_l from a
layer-wise distribution at the schedule's final sparsity S ("uniform" as in
tfmot: S_l = S; or "erk"/"er" as RigL) plus per-layer overrides
(`layer_targets.layer_sparsities`). Along the schedule, layer l is pruned to
s_l(t) = S_l * s(t) / S, i.e. size - floor(s_l(t) * size) active weights. The
global sparsity then follows s(t) (up to rounding), every layer reaches S_l at
the end, and no layer is ever asked to grow. For uniform targets and a dense
start this is tfmot's per-layer schedule; with initial_sparsity = 0 it is also
RigL's per-layer PolynomialDecay with final sparsity S_l.
"""

import itertools
import math

import tensorflow as tf
from keras import ops

from tf_freetickets.sparse import layers as masking
from tf_freetickets.sparse import optimizer_slots
from tf_freetickets.sparse.drop_grow import top_k_mask
from tf_freetickets.sparse.layer_targets import layer_sparsities
from tf_freetickets.sparse.pruning_schedules import PruningSchedule, zero_count
from tf_freetickets.sparse.updaters import MaskUpdater

LAYER_DISTRIBUTIONS = ("uniform", "erk", "er", "global")


class PruningSteps:
    """The update schedule `MaskUpdate` and `MaskEngine` read, for a `PruningSchedule`.

    Masks are pruned after the optimizer steps where the schedule says so
    (tfmot's rule), and also at `end_step` when it is off the frequency grid
    and `prune_at_end_step` is True, so the final sparsity is always reached
    (tfmot would stop at the last grid step before it). Step 0 is pruned by
    `GradualMagnitudePruning.attach` before the first batch.

    Args:
      schedule: a `PruningSchedule`, or a function total_steps ->
        `PruningSchedule` resolved when training starts (fraction-based
        configs).
      prune_at_end_step: see above.
    """

    def __init__(self, schedule, prune_at_end_step=True):
        if not (isinstance(schedule, PruningSchedule) or callable(schedule)):
            raise ValueError(
                "schedule must be a PruningSchedule (tft.PolynomialDecay, tft.ConstantSparsity) or a function "
                f"total_steps -> PruningSchedule, got {type(schedule).__name__}."
            )
        self._schedule = schedule
        self.prune_at_end_step = bool(prune_at_end_step)

    @property
    def is_resolved(self):
        return isinstance(self._schedule, PruningSchedule)

    @property
    def end_step(self):
        """The schedule's absolute end step; None while it is a function of the run length.

        `MaskUpdate` checks a second `fit` against the optimizer's step only
        for schedules resolved from the run length (None here).
        """
        return self._schedule.end_step if self.is_resolved else None

    @property
    def update_every(self):
        """Steps between prunings (the schedule's `frequency`), as `UpdateSchedule.update_every`."""
        return self.pruning_schedule.frequency

    @property
    def pruning_schedule(self):
        """The resolved `PruningSchedule`."""
        if not self.is_resolved:
            raise ValueError("The pruning schedule is given by a function of the run length; call resolved(total_steps).")
        return self._schedule

    def resolved(self, total_steps):
        """Itself once resolved; otherwise the schedule built for `total_steps`."""
        if self.is_resolved:
            return self
        if total_steps is None:
            raise ValueError("The number of training steps is unknown; give GradualMagnitudePruning a schedule with steps.")
        schedule = self._schedule(int(total_steps))
        if not isinstance(schedule, PruningSchedule):
            raise ValueError(f"The schedule function returned {type(schedule).__name__}, not a PruningSchedule.")
        return PruningSteps(schedule, self.prune_at_end_step)

    def _extra_end(self, step):
        schedule = self.pruning_schedule
        return self.prune_at_end_step and schedule.end_step != -1 and step == schedule.end_step

    def is_update_step(self, step):
        """True when masks are pruned after optimizer step `step` (>= 1)."""
        return step > 0 and (self.pruning_schedule.should_prune(step) or self._extra_end(step))

    def last_update_step(self, step):
        """The last pruning step <= `step` (0 counts: `attach` prunes there), or None before the first."""
        schedule = self.pruning_schedule
        if step < schedule.begin_step:
            return None
        if self.prune_at_end_step and schedule.end_step != -1 and step >= schedule.end_step:
            return schedule.end_step
        last = step if schedule.end_step == -1 else min(step, schedule.end_step)
        return schedule.begin_step + (last - schedule.begin_step) // schedule.frequency * schedule.frequency

    def drop_fraction_at(self, step):
        """Fraction of the active weights the pruning at `step` removes, by the global schedule."""
        schedule = self.pruning_schedule
        previous = self.last_update_step(step - 1)
        before = 0.0 if previous is None else schedule.sparsity(previous)
        return max(0.0, 1.0 - (1.0 - schedule.sparsity(step)) / (1.0 - before))


class GradualMagnitudePruning(MaskUpdater):
    """Prunes by magnitude along a sparsity schedule; masks only shrink.

    Use it like the other updaters, on a model sparsified at sparsity 0 (dense
    start) or at the schedule's initial sparsity:

        model = tft.sparsify(model, sparsity=0.0, distribution="uniform")
        model.compile(...)
        schedule = tft.PolynomialDecay(0.0, 0.9, begin_step=0, end_step=2000, frequency=100)
        model.fit(..., callbacks=[tft.MaskUpdate(tft.GradualMagnitudePruning(schedule))])

    Args:
      schedule: `PolynomialDecay` / `ConstantSparsity` (tfmot's values), or a
        function total_steps -> such a schedule.
      distribution: layer-wise targets at the final sparsity: "uniform" (tfmot,
        default), "erk" or "er" (RigL); or "global": one magnitude selection
        over all masked layers (exact total count, per-layer counts set by
        the weights; no per-layer FLOPs forecast).
      layer_sparsity: per-layer final sparsity on top of the distribution: a
        dict {layer name: sparsity} or a callable (name, shape) -> sparsity or
        None (see `layer_targets.layer_sparsities`).
      erk_power_scale: exponent on the ER/ERK raw densities.
      prune_at_end_step: also prune at `end_step` when it is not
        begin_step + k * frequency (tfmot does not, and ends short of the
        target then).

    Selection: the `active - target` active weights of smallest |w| are
    dropped, exact counts, ties to the lower index (tfmot keeps every weight
    at or above a threshold, so ties can leave it a few weights over; it
    rounds, this library floors the pruned count as RigL does).
    """

    prunes_only = True
    uses_gradients = False
    gradient_batches = 0

    def __init__(self, schedule, distribution="uniform", layer_sparsity=None, erk_power_scale=1.0, prune_at_end_step=True):
        if distribution not in LAYER_DISTRIBUTIONS:
            raise ValueError(f"Unknown layer-wise distribution {distribution!r}; use one of {LAYER_DISTRIBUTIONS}.")
        if distribution == "global" and layer_sparsity is not None:
            raise ValueError('distribution="global" has no per-layer targets, so layer_sparsity cannot apply.')
        self.schedule = PruningSteps(schedule, prune_at_end_step)
        if self.schedule.is_resolved:
            self._check_monotone(self.schedule.pruning_schedule)
        self.distribution = distribution
        self.layer_sparsity = layer_sparsity
        self.erk_power_scale = erk_power_scale
        self.seed = 0  # nothing random
        self.layer_names = None
        self.layer_final_sparsity = None  # dict name -> S_l, set by attach
        self._scales = None
        self._sizes = None
        self._layers = None
        self._global_masks = None

    @staticmethod
    def _check_monotone(schedule):
        if getattr(schedule, "initial_sparsity", 0.0) > schedule.final_sparsity:
            raise ValueError(
                f"Gradual magnitude pruning only removes weights; initial_sparsity={schedule.initial_sparsity} "
                f"is above final_sparsity={schedule.final_sparsity}."
            )

    @property
    def pruning_schedule(self):
        return self.schedule.pruning_schedule

    def grow_scores(self, weight, gradient, layer_index, step):
        raise TypeError("GradualMagnitudePruning grows nothing; MaskEngine calls pruned_mask instead.")

    # -- targets -----------------------------------------------------------
    def bind(self, layers):
        """Computes each masked layer's final target from `layers` (masked layers, model order)."""
        schedule = self.pruning_schedule
        self._check_monotone(schedule)
        shapes = [(layer.name, tuple(int(d) for d in layer.kernel_mask.shape)) for layer in layers]
        by_name = {}
        for name, shape in shapes:
            if by_name.setdefault(name, shape) != shape:
                raise ValueError(f"Two masked layers are named {name!r} with different shapes; targets need unique names.")
        final = schedule.final_sparsity
        if self.is_global:  # the weights decide each layer's share; only the total is scheduled
            targets = dict.fromkeys(by_name, final)
        else:
            targets = layer_sparsities(list(by_name.items()), final, self.distribution, self.erk_power_scale, self.layer_sparsity)
        if final == 0.0 and any(targets.values()):
            raise ValueError("The schedule's final sparsity is 0; per-layer sparsities cannot be scaled along it.")
        self.layer_names = [name for name, _ in shapes]
        self.layer_final_sparsity = None if self.is_global else targets
        # s_l(t) = scale_l * s(t); scale 1.0 exactly for layers at the global sparsity.
        self._scales = [1.0 if targets[name] == final else (targets[name] / final if final else 0.0) for name, _ in shapes]
        self._sizes = [math.prod(shape) for _, shape in shapes]
        self._layers = list(layers)

    def _require_bound(self):
        if self._scales is None:
            raise ValueError("GradualMagnitudePruning is not attached; use it through MaskUpdate or call attach(model).")

    @property
    def is_global(self):
        """True for global magnitude selection (one count over all masked layers)."""
        return self.distribution == "global"

    def target_total_active(self, step):
        """Active weights over all masked layers that the schedule asks for at integer `step`."""
        self._require_bound()
        total = sum(self._sizes)
        return total - zero_count(self.pruning_schedule.sparsity(step), total)

    def target_active_counts(self, step):
        """Active weights per masked layer that the schedule asks for at integer `step`."""
        self._require_bound()
        if self.is_global:
            raise ValueError('distribution="global" has no per-layer targets: the weights decide them (see target_total_active).')
        sparsity = self.pruning_schedule.sparsity(step)
        return [size - zero_count(scale * sparsity, size) for scale, size in zip(self._scales, self._sizes)]

    def pruned_mask(self, old_mask, weights, layer_index, step):
        """The mask after pruning layer `layer_index` at step `step` (int tensor), in `keras.ops`."""
        self._require_bound()
        if self.is_global:
            if layer_index == 0:  # one selection over every layer, read before any layer is assigned
                self._global_masks = self._global_pruned_masks(old_mask, weights, step)
            return self._global_masks[layer_index]
        size = self._sizes[layer_index]
        sparsity = self.pruning_schedule.sparsity_tensor(step) * self._scales[layer_index]
        # floor(round(s * size, 6)), as `zero_count` on the host.
        zeros = ops.floor(ops.round(sparsity * size * 1e6) / 1e6)
        flat_mask = ops.reshape(old_mask, (-1,))
        active = ops.sum(ops.cast(flat_mask, "float64"))
        num_drop = ops.maximum(active - (size - zeros), 0.0)
        lowest = ops.cast(float("-inf"), flat_mask.dtype)
        prune_scores = ops.where(flat_mask > 0, -ops.abs(ops.cast(ops.reshape(weights, (-1,)), flat_mask.dtype)), lowest)
        dropped = top_k_mask(prune_scores, ops.cast(num_drop, "int32"))
        return ops.reshape(flat_mask - dropped, ops.shape(old_mask))

    def _global_pruned_masks(self, first_mask, first_weights, step):
        """Masks of every layer after one global magnitude selection (Zhu & Gupta's variant across layers)."""
        masks = [first_mask] + [tf.identity(layer.kernel_mask.value) for layer in self._layers[1:]]
        weights = [first_weights] + [tf.identity(layer.kernel_variable.value) for layer in self._layers[1:]]
        dtype = first_mask.dtype
        flat_mask = ops.concatenate([ops.reshape(m, (-1,)) for m in masks])
        flat_weights = ops.concatenate([ops.reshape(ops.cast(w, dtype), (-1,)) for w in weights])
        total = sum(self._sizes)
        zeros = ops.floor(ops.round(self.pruning_schedule.sparsity_tensor(step) * total * 1e6) / 1e6)
        num_drop = ops.maximum(ops.sum(ops.cast(flat_mask, "float64")) - (total - zeros), 0.0)
        prune_scores = ops.where(flat_mask > 0, -ops.abs(flat_weights), ops.cast(float("-inf"), dtype))
        kept = flat_mask - top_k_mask(prune_scores, ops.cast(num_drop, "int32"))
        bounds = list(itertools.accumulate(self._sizes))[:-1]
        pieces = ops.split(kept, bounds) if bounds else [kept]
        return [ops.reshape(piece, ops.shape(mask)) for piece, mask in zip(pieces, masks)]

    # -- training hooks ------------------------------------------------------
    def attach(self, model):
        """Binds the targets to `model`, checks its masks can follow the schedule, prunes at step 0.

        Raises:
          ValueError: a layer already has fewer active weights than the
            schedule asks for now (masks cannot grow): start from
            `sparsify(model, sparsity=0)` or at the schedule's initial sparsity
            with the same distribution.
        """
        layers = masking.updatable_masked_layers(model)  # the engine's layers: frozen ones keep their masks
        self.bind(layers)
        step = int(model.optimizer.iterations.numpy())
        if self.is_global:
            active = sum(int(ops.sum(layer.kernel_mask)) for layer in layers)
            if active < self.target_total_active(step):
                raise ValueError(
                    f"The masked layers have {active} active weights but the pruning schedule asks for "
                    f"{self.target_total_active(step)} at step {step}; masks cannot grow."
                )
        for layer, target in zip(layers, [] if self.is_global else self.target_active_counts(step)):
            active = int(ops.sum(layer.kernel_mask))
            if active < target:
                raise ValueError(
                    f"Layer {layer.name!r} has {active} active weights but the pruning schedule asks for {target} at step "
                    f"{step}; masks cannot grow. Sparsify at 0 (dense start) or at the schedule's initial sparsity."
                )
        if step == 0 and self.pruning_schedule.should_prune(0):
            self._prune_now(model, layers)
        return False

    def _prune_now(self, model, layers):
        """The step-0 pruning (tfmot prunes before the first batch when begin_step is 0)."""
        step = tf.constant(0, tf.int64)
        for index, layer in enumerate(layers):
            kernel, mask = layer.kernel_variable, layer.kernel_mask
            new_mask = self.pruned_mask(tf.identity(mask.value), tf.identity(kernel.value), index, step)
            kernel.assign(kernel.value * ops.cast(new_mask, kernel.dtype))
            for slot in optimizer_slots.slots_for(model.optimizer, kernel):
                slot.assign(slot.value * ops.cast(new_mask, slot.dtype))
            mask.assign(new_mask)
