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

import functools
import itertools
import math

import numpy as np
import tensorflow as tf
from keras import ops

from tf_freetickets.sparse import block, optimizer_slots, score_sources, structured
from tf_freetickets.sparse.drop_grow import top_k_mask
from tf_freetickets.sparse.layer_targets import layer_sparsities
from tf_freetickets.sparse.masked_set import MaskedLayerSet
from tf_freetickets.sparse.methods.common import BLOCK_FIELDS, N_M_FIELD, block_of, n_m_of
from tf_freetickets.sparse.pruning_schedules import PolynomialDecay, PruningSteps, zero_count
from tf_freetickets.sparse.registry import ConfigField, CostFacts, register_method
from tf_freetickets.sparse.updater import MaskUpdater

LAYER_DISTRIBUTIONS = ("uniform", "erk", "er", "global")


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
      step_convention: "tfmot" (default): schedule step s prunes before the
        s-th batch's update, on the weights after s - 1 optimizer steps, and
        step 0 never prunes (tfmot 0.8's `pruning_step`); "after_step":
        step s prunes after optimizer step s and step 0 before the first
        batch (the `method="gmp"` configs; `PruningSteps`).
      n_m: None, or (N, M): N:M structured sparsity (tfmot's
        `sparsity_m_by_n=(M - N, M)`; `structured`): at every pruning each
        group of M consecutive input weights keeps M - floor(s(t) M) of its
        largest |w|, so it ends with exactly N. Needs final_sparsity = 1 - N/M,
        uniform targets and Dense/ConvND layers whose input dim M divides.
      block_size: None or (1, 1) (unstructured), or (r, c): block sparsity
        (tfmot's `block_size`; `block`): whole blocks of r inputs x c outputs
        of a rank-2 (Dense) kernel are pruned, floor(s_l(t) B) of a layer's B
        blocks at every pruning, smallest pooled |w| first; partial blocks at
        the kernel's edges are blocks of their own. Not with n_m or "global".
      block_pooling: how a block's |w| is pooled into its score: "avg"
        (tfmot's default "AVG") or "max".

    Selection: the `active - target` active weights of smallest |w| are
    dropped, exact counts, ties to the lower index (tfmot keeps every weight
    at or above a threshold, so ties can leave it a few weights over; it
    rounds, this library floors the pruned count as RigL does).
    """

    score_source = score_sources.MAGNITUDE
    accepts_drop_fraction = False  # the schedule alone sets how much is pruned

    def __init__(
        self,
        schedule,
        distribution="uniform",
        layer_sparsity=None,
        erk_power_scale=1.0,
        prune_at_end_step=True,
        step_convention="tfmot",
        n_m=None,
        block_size=None,
        block_pooling="avg",
    ):
        if distribution not in LAYER_DISTRIBUTIONS:
            raise ValueError(f"Unknown layer-wise distribution {distribution!r}; use one of {LAYER_DISTRIBUTIONS}.")
        if distribution == "global" and layer_sparsity is not None:
            raise ValueError('distribution="global" has no per-layer targets, so layer_sparsity cannot apply.')
        self.schedule = PruningSteps(schedule, prune_at_end_step, step_convention)
        if self.schedule.is_resolved:
            self._check_monotone(self.schedule.pruning_schedule)
        self.distribution = distribution
        self.n_m = None if n_m is None else structured.check_n_m(n_m)
        if self.n_m is not None and (distribution != "uniform" or layer_sparsity is not None):
            raise ValueError("n_m (N:M sparsity) keeps N of M in every layer: use distribution='uniform' and no layer_sparsity.")
        self.block_size = None if block_size is None else block.check_block_size(block_size)
        self.block_size = None if self.block_size == (1, 1) else self.block_size
        self.block_pooling = block.check_pooling(block_pooling)
        if self.block_size is not None and (self.n_m is not None or distribution == "global"):
            what = "n_m (N:M sparsity)" if self.n_m is not None else 'distribution="global"'
            raise ValueError(f"block_size={self.block_size} cannot be combined with {what}; use one structure.")
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
        """The resolved `PruningSchedule` (tfmot-style) this updater prunes along."""
        return self.schedule.pruning_schedule

    def new_mask(self, layer_index, old_mask, weights, scores, step, drop_fraction):
        """The hook: prune to the scheduled count (`pruned_mask`), grow nothing."""
        return self.pruned_mask(old_mask, weights, layer_index, step), None

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
        if self.n_m is not None:
            structured.check_n_m_sparsity(self.n_m, final, "the schedule's final_sparsity")
            for layer in layers:
                structured.check_layer(layer, self.n_m)
        for layer in layers if self.block_size is not None else ():
            block.check_layer(layer, self.block_size)
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
        if self.n_m is not None:
            m = self.n_m[1]
            return [size // m * (m - zero_count(sparsity, m)) for size in self._sizes]
        if self.block_size is not None:
            raise ValueError("With block_size, the schedule sets block counts (see target_zero_blocks), not weight counts.")
        return [size - zero_count(scale * sparsity, size) for scale, size in zip(self._scales, self._sizes)]

    def target_zero_blocks(self, step):
        """Zero blocks per masked layer that the schedule asks for at integer `step` (block_size set)."""
        self._require_bound()
        sparsity = self.pruning_schedule.sparsity(step)
        return [zero_count(scale * sparsity, math.prod(block.block_grid(tuple(layer.kernel_mask.shape), self.block_size)))
                for scale, layer in zip(self._scales, self._layers)]  # fmt: skip

    def pruned_mask(self, old_mask, weights, layer_index, step):
        """The mask after pruning layer `layer_index` at step `step` (int tensor), in `keras.ops`."""
        self._require_bound()
        if self.is_global:
            if layer_index == 0:  # one selection over every layer, read before any layer is assigned
                self._global_masks = self._global_pruned_masks(old_mask, weights, step)
            return self._global_masks[layer_index]
        size = self._sizes[layer_index]
        sparsity = self.pruning_schedule.sparsity_tensor(self.schedule.schedule_step(step)) * self._scales[layer_index]
        if self.n_m is not None:
            m = self.n_m[1]
            return structured.magnitude_mask(old_mask, weights, structured.keep_per_group(sparsity, m), m)
        if self.block_size is not None:
            return block.magnitude_mask(old_mask, weights, sparsity, self.block_size, self.block_pooling)
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
        sparsity = self.pruning_schedule.sparsity_tensor(self.schedule.schedule_step(step))
        zeros = ops.floor(ops.round(sparsity * total * 1e6) / 1e6)
        num_drop = ops.maximum(ops.sum(ops.cast(flat_mask, "float64")) - (total - zeros), 0.0)
        prune_scores = ops.where(flat_mask > 0, -ops.abs(flat_weights), ops.cast(float("-inf"), dtype))
        kept = flat_mask - top_k_mask(prune_scores, ops.cast(num_drop, "int32"))
        bounds = list(itertools.accumulate(self._sizes))[:-1]
        pieces = ops.split(kept, bounds) if bounds else [kept]
        return [ops.reshape(piece, ops.shape(mask)) for piece, mask in zip(pieces, masks)]

    # -- training hooks ------------------------------------------------------
    def attach(self, model, layers=None):
        """Binds the targets to `model`, checks its masks can follow the schedule, prunes at step 0.

        Raises:
          ValueError: a layer already has fewer active weights than the
            schedule asks for now (masks cannot grow): start from
            `sparsify(model, sparsity=0)` or at the schedule's initial sparsity
            with the same distribution.
        """
        layers = MaskedLayerSet(model) if layers is None else layers  # the engine's layers: frozen ones keep their masks
        self.bind(layers)
        step = int(model.optimizer.iterations.numpy())
        now = self.schedule.schedule_step(step)  # the schedule step the next pruning would use
        if self.is_global:
            active = sum(int(ops.sum(layer.kernel_mask)) for layer in layers)
            if active < self.target_total_active(now):
                raise ValueError(
                    f"The masked layers have {active} active weights but the pruning schedule asks for "
                    f"{self.target_total_active(now)} at step {now}; masks cannot grow."
                )
        if self.block_size is not None:
            self._check_blocks(layers, now)
        for layer, target in zip(layers, [] if self.is_global or self.block_size else self.target_active_counts(now)):
            active = int(ops.sum(layer.kernel_mask))
            if active < target:
                raise ValueError(
                    f"Layer {layer.name!r} has {active} active weights but the pruning schedule asks for {target} at step "
                    f"{now}; masks cannot grow. Sparsify at 0 (dense start) or at the schedule's initial sparsity."
                )
        if step == 0 and self.schedule.prunes_before_first_batch():
            self._prune_now(model, layers)
        return False

    def _check_blocks(self, layers, now):
        """Refuses masks with partly active blocks or fewer active blocks than the schedule asks for now."""
        for layer, zeros in zip(layers, self.target_zero_blocks(now)):
            block.check_aligned(layer, self.block_size)
            active = int(np.sum(block.block_counts(layer.kernel_mask.numpy(), self.block_size) > 0))
            total = math.prod(block.block_grid(tuple(layer.kernel_mask.shape), self.block_size))
            if active < total - zeros:
                raise ValueError(
                    f"Layer {layer.name!r} has {active} active blocks but the pruning schedule asks for {total - zeros} "
                    f"at step {now}; masks cannot grow."
                )

    def _prune_now(self, model, layers):
        """The pruning before the first batch (schedule step 0, or 1 under tfmot's convention)."""
        step = tf.constant(0, tf.int64)
        for index, layer in enumerate(layers):
            kernel, mask = layer.kernel_variable, layer.kernel_mask
            new_mask = self.pruned_mask(tf.identity(mask.value), tf.identity(kernel.value), index, step)
            kernel.assign(kernel.value * ops.cast(new_mask, kernel.dtype))
            for slot in optimizer_slots.slots_for(model.optimizer, kernel):
                slot.assign(slot.value * ops.cast(new_mask, slot.dtype))
            mask.assign(new_mask)


def gmp_schedule(sparse, total_steps):
    """The `PolynomialDecay` of a method="gmp" config for a run of `total_steps` optimizer steps."""
    begin = int(sparse.gmp.begin_fraction * total_steps)
    end = max(int(sparse.end_fraction * total_steps), begin)
    return PolynomialDecay(
        float(sparse.gmp.initial_sparsity), float(sparse.sparsity), begin, end,
        power=sparse.gmp.power, frequency=int(sparse.update_every),
    )  # fmt: skip


def _check_initial_sparsity(value, sparse):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= sparse.sparsity:
        raise ValueError(f"config.sparse.gmp.initial_sparsity={value!r} must be in [0, sparse.sparsity={sparse.sparsity}].")


def _check_begin_fraction(value, sparse):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= sparse.end_fraction:
        raise ValueError(f"config.sparse.gmp.begin_fraction={value!r} must be in [0, sparse.end_fraction={sparse.end_fraction}].")


def _check_power(value, sparse):
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError(f"config.sparse.gmp.power={value!r} must be a positive number.")


def _make_gmp(sparse, seed):
    # "after_step": the configs' step convention since the method was added (studies stay bit-identical).
    return GradualMagnitudePruning(
        functools.partial(gmp_schedule, sparse),
        distribution=sparse.distribution,
        step_convention="after_step",
        n_m=n_m_of(sparse),
        **block_of(sparse),
    )


def _gmp_costs(updater, gradient_batches):
    return CostFacts(density_follows_schedule=True)


# Gradual magnitude pruning (Zhu & Gupta 2017): dense start, then every sparse.update_every steps prune
# by magnitude along tfmot's PolynomialDecay from gmp.initial_sparsity to sparse.sparsity between
# gmp.begin_fraction and sparse.end_fraction of training; layer-wise targets by sparse.distribution.
register_method(
    "gmp",
    summary="Gradual magnitude pruning (Zhu & Gupta 2017): dense start, prune along tfmot's polynomial schedule.",
    make_updater=_make_gmp,
    cost_facts=_gmp_costs,
    config_fields=(
        ConfigField("gmp.initial_sparsity", 0.0, "gmp: sparsity when pruning begins (0: a dense start)", _check_initial_sparsity),
        ConfigField("gmp.begin_fraction", 0.1, "gmp: fraction of training at which pruning begins", _check_begin_fraction),
        ConfigField("gmp.power", 3.0, "gmp: exponent of the polynomial schedule (Zhu & Gupta: 3)", _check_power),
        N_M_FIELD,
        *BLOCK_FIELDS,
    ),
    updater_class=GradualMagnitudePruning,
    initial_sparsity=lambda sparse: 0.0,
)
