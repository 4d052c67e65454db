"""The updater contract: one base class every mask-update method implements.

A method says three things, and `MaskEngine` (the compiled update, optimizer
slots, `tf.distribute`) does the rest without knowing which method it runs:

1. *When* masks change: `schedule`, a `schedules.MaskSchedule`.
2. *What* the update reads besides the weights: `score_source`, a declared
   `score_sources.ScoreSource` (nothing, random draws, the dense gradient of
   extra batches, gradient momentum, the step's own gradient, ...).
3. *How* a layer's new mask follows: the one hook `new_mask`, called per
   layer inside the compiled update with the weights, the gathered scores and
   the schedule's state (step, drop fraction). The default hook is the
   prune-and-regrow step of every DST method (drop the smallest `drop_scores`,
   grow the largest `grow_scores` among the positions not kept, exact counts);
   a method that prunes only (gradual pruning) or scores the drop differently
   overrides the hook or the score functions.

A new method is one module: a subclass plus its `registry.register_method`
entry (see docs/CONTRIBUTING.md).
"""

import numpy as np
import tensorflow as tf
from keras import ops

from tf_freetickets.sparse import layers as masking
from tf_freetickets.sparse import score_sources, structured, train_hooks
from tf_freetickets.sparse.drop_grow import drop_and_grow_indices
from tf_freetickets.sparse.masked_set import MaskedLayerSet
from tf_freetickets.sparse.schedules import UpdateSchedule
from tf_freetickets.sparse.stateless_random import fresh_seed


def masks_from_indices(old_mask, dropped, grown_at, need_grown):
    """(new_mask, grown) of a drop-and-grow from its index lists, with one full-size pass.

    The new mask is the old one with -1 at every dropped and +1 at every grown
    position (a position dropped and regrown stays 1); `grown` (the 0/1 mask of
    the grown positions) is only built when `need_grown`, else None.

    Args:
      old_mask: the layer's mask before the update (any shape).
      dropped: int32 flat indices of the dropped positions.
      grown_at: int32 flat indices of the grown positions.
      need_grown: whether to build `grown`.
    """
    shape = ops.shape(old_mask)
    flat_old = ops.reshape(old_mask, (-1,))
    ones = ops.ones_like(grown_at, dtype=flat_old.dtype)
    positions = ops.expand_dims(ops.concatenate([dropped, grown_at], 0), 1)
    new_mask = tf.tensor_scatter_nd_add(flat_old, positions, ops.concatenate([-ones, ones], 0))
    grown = ops.reshape(ops.scatter(ops.expand_dims(grown_at, 1), ones, ops.shape(flat_old)), shape) if need_grown else None
    return ops.reshape(new_mask, shape), grown


class MaskUpdater:
    """Base class: the contract, with magnitude drop and subclass-defined growth by default.

    Args:
      update_every: ΔT, optimizer steps between mask updates.
      drop_fraction: fraction of each layer's active weights replaced at the
        first update.
      end_fraction: fraction of training after which masks stay fixed.
      end_step: absolute last update step (overrides `end_fraction`).
      begin_step: first step an update may happen.
      decay: drop-fraction decay, "cosine" (RigL) or "constant".
      min_drop_fraction: where the cosine decay ends (RigL: 0; FreeTickets'
        code: 0.005).
      seed: int seed for random growth (and CigL's random mask); None draws one.
      reinit_when_same: what a weight dropped and grown again in the same
        update keeps. False (RigL's `reinit_when_same=False`, the default): its
        value and optimizer slots, as if never dropped. True: it restarts at 0
        like every other grown weight (FreeTickets' `sparselearning/core.py`,
        whose `truncate_weights` zeroes dropped weights before growing); its
        slots are zeroed too unless `dense_gradient_momentum` keeps them.
      dense_gradient_momentum: False (default, RigL): pruned weights get a zero
        gradient, so they and their optimizer slots are exactly 0, and a grown
        weight starts with zeroed slots. True (FreeTickets' `core.py`: dense
        `weight.grad`, momentum never masked): during training the kernel
        variable receives the dense gradient at every position, the optimizer
        re-applies the mask after each update (pruned weights stay 0 at every
        step boundary), and mask updates never touch the slots. So the slots
        of pruned weights hold the momentum (Adam moments) of their dense
        gradient, and a grown weight starts at 0 with that momentum. This
        gives up the library's rule that slots of pruned weights are 0; the
        weights themselves, per-layer counts and replica-equal masks are kept.
      adjust_prune_rate: False (default, RigL): every layer drops the same
        fraction. True: `adjust_prune_rate` of CigL's `sparselearning/core.py`
        (and FreeTickets' `ImageNet/core.py`): a layer with sparsity s < 0.2
        whose active weights outnumber the mean layer's drops min(s, f)
        instead of f (`layer_drop_fractions`).
      n_m: None, or (N, M): N:M structured sparsity (tfmot's
        `sparsity_m_by_n`; `structured`): every group of M consecutive input
        weights keeps exactly N. The initial masks are redrawn to N:M at the
        first `fit` (step 0), and every update drops by magnitude over the
        layer and grows in each group as many as it lost. Needs every masked
        layer at density N/M (`sparsify(model, 1 - N/M, distribution="uniform")`)
        and the default `new_mask` hook (RigL, SET, SNFS).

    Subclasses set `score_source` (a class attribute or a property) and
    implement `grow_scores`, or override `new_mask`.
    """

    #: What an update reads besides the weights (`score_sources`).
    score_source = score_sources.RANDOM
    #: Whether `MaskEngine.update(step, drop_fraction=q)` may override the
    #: schedule's drop fraction (EDST's global exploration).
    accepts_drop_fraction = True
    #: FreeTickets' update switches (set per instance by `__init__`); updaters
    #: that build their own schedule (gradual pruning) keep RigL's choices.
    reinit_when_same = False
    dense_gradient_momentum = False
    adjust_prune_rate = False

    def __init__(
        self,
        update_every=100,
        drop_fraction=0.3,
        end_fraction=0.75,
        end_step=None,
        begin_step=0,
        decay="cosine",
        seed=None,
        min_drop_fraction=0.0,
        reinit_when_same=False,
        dense_gradient_momentum=False,
        adjust_prune_rate=False,
        n_m=None,
    ):
        self.schedule = UpdateSchedule(
            update_every=update_every,
            drop_fraction=drop_fraction,
            end_fraction=end_fraction,
            end_step=end_step,
            begin_step=begin_step,
            decay=decay,
            min_drop_fraction=min_drop_fraction,
        )
        self.seed = fresh_seed() if seed is None else int(seed)
        self.reinit_when_same = bool(reinit_when_same)
        self.dense_gradient_momentum = bool(dense_gradient_momentum)
        self.adjust_prune_rate = bool(adjust_prune_rate)
        self.n_m = None if n_m is None else structured.check_n_m(n_m)

    # -- declared facts ----------------------------------------------------
    @property
    def updates_masks(self):
        """Whether the schedule's updates change masks (False for fixed masks)."""
        return True

    @property
    def uses_gradients(self):
        """Whether an update reads a dense gradient (its score source's)."""
        return self.score_source.reads_gradients

    @property
    def needs_gradient_data(self):
        """Whether `MaskUpdate` needs `gradient_data` (extra dense-gradient batches)."""
        return self.score_source.needs_gradient_data

    # -- training-time hooks -----------------------------------------------
    def kernel_transforms(self, model, layer_index):
        """Training-only transforms of masked layer `layer_index`'s kernel, applied in order."""
        return [train_hooks.dense_gradient_passthrough] if self.dense_gradient_momentum else []

    def attach(self, model, layers=None):
        """Called when training starts; returns True if it changed the train step.

        Installs the training-time hooks the updater's options need (dense
        gradients to pruned weights, CigL's random mask, the step-gradient
        tap); `MaskUpdate` then rebuilds the train function.

        Args:
          model: the model being trained.
          layers: its `MaskedLayerSet` (built here when None).
        """
        layers = MaskedLayerSet(model) if layers is None else layers
        if self.n_m is not None:
            self._attach_n_m(model, layers)
        changed = train_hooks.set_kernel_transforms(layers, [self.kernel_transforms(model, i) for i in range(len(layers))])
        if self.dense_gradient_momentum and self.updates_masks:
            train_hooks.remask_after_each_step(layers)
            changed = True
        return changed

    def _attach_n_m(self, model, layers):
        """Checks every layer can hold N:M at its density, and at step 0 redraws the masks to N:M."""
        if type(self).new_mask is not MaskUpdater.new_mask:
            raise ValueError(f"n_m (N:M sparsity) needs the default drop-and-grow update; {type(self).__name__} replaces it.")
        n, m = self.n_m
        for layer in layers:
            structured.check_layer(layer, self.n_m)
            size = int(np.prod(layer.kernel_mask.shape))
            active = int(ops.sum(layer.kernel_mask))
            if active != size // m * n:
                raise ValueError(
                    f"N:M sparsity {n}:{m} keeps {n}/{m} of every layer, but layer {layer.name!r} has {active} of {size} "
                    f"weights active; sparsify with sparsity={1 - n / m:g} and distribution='uniform'."
                )
        if int(model.optimizer.iterations.numpy()) != 0:
            return  # a resumed run: its masks are N:M already
        rng = np.random.default_rng([self.seed, 0x4E4D])
        for layer in layers:
            mask = layer.kernel_mask.numpy()
            new = structured.initial_mask(mask, n, m, rng)
            kernel = layer.kernel_variable
            kernel.assign(kernel.numpy() * new)  # newly active weights start at 0, as RigL's grown ones
            layer.kernel_mask.assign(new)

    def detach(self, model):
        """Called when training ends; undoes `attach`. Returns True if it did anything."""
        return train_hooks.clear(masking.masked_layers(model))

    # -- the hook ------------------------------------------------------------
    def layer_drop_fractions(self, drop_fraction, masks):
        """The drop fraction of each layer at an update (called by `MaskEngine` before `new_mask`).

        Every layer gets `drop_fraction` unless `adjust_prune_rate`: then, as
        CigL's `Masking.adjust_prune_rate`, a layer with sparsity s < 0.2 whose
        share of the active weights exceeds 1/L (L layers; the code's
        "variance" share of its `nonzero` redistribution statistic, which with
        exact masks is the active count) drops min(s, drop_fraction).

        Args:
          drop_fraction: float32 scalar tensor, the schedule's (or EDST's) fraction.
          masks: the layers' masks before the update, in index order.

        Returns:
          list of float32 scalar tensors, one per layer.
        """
        if not self.adjust_prune_rate:
            return [drop_fraction] * len(masks)
        active = [ops.sum(ops.cast(mask, "float32")) for mask in masks]
        mean_active = ops.sum(ops.stack(active)) / len(masks)
        fractions = []
        for mask, count in zip(masks, active):
            sparsity = 1.0 - count / float(np.prod(mask.shape))
            capped = ops.logical_and(sparsity < 0.2, count > mean_active)
            fractions.append(ops.where(capped, ops.minimum(sparsity, drop_fraction), drop_fraction))
        return fractions

    def new_mask(self, layer_index, old_mask, weights, scores, step, drop_fraction):
        """The layer's mask after the update at `step`: the one hook a method decides.

        Runs inside the compiled update (keras.ops / TF ops on tensors).

        Args:
          layer_index: the layer's position in the run's `MaskedLayerSet`.
          old_mask: the mask before the update (0/1, the kernel's shape).
          weights: the kernel before the update.
          scores: this layer's entry of `score_source.gather` (None when the
            source reads nothing).
          step: int64 scalar tensor, the optimizer step the update follows.
          drop_fraction: float32 scalar tensor, the schedule's (or EDST's)
            fraction of active weights to replace.

        Returns:
          (new_mask, grown): the new 0/1 mask, and the 0/1 mask of the grown
          positions where `reinit_when_same` needs it (else None).
        """
        num_drop = ops.floor(drop_fraction * ops.sum(old_mask))
        if self.n_m is not None:
            return structured.drop_and_grow(
                old_mask, self.drop_scores(weights), self.grow_scores(weights, scores, layer_index, step), num_drop, self.n_m[1]
            )
        dropped, grown_at = drop_and_grow_indices(
            old_mask, self.drop_scores(weights), self.grow_scores(weights, scores, layer_index, step), num_drop
        )
        return masks_from_indices(old_mask, dropped, grown_at, self.reinit_when_same)

    def drop_scores(self, weight):
        """Higher = kept: the weight magnitude (every drop-and-grow method here)."""
        return ops.abs(weight)

    def grow_scores(self, weight, gradient, layer_index, step):
        """Higher = grown first.

        Args:
          weight: the layer's kernel.
          gradient: its gathered scores (None when the source reads nothing).
          layer_index: the layer's position among the masked layers.
          step: int scalar tensor, the optimizer step of the update.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement grow_scores or new_mask.")
