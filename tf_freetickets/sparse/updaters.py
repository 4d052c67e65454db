"""Mask-update policies: Static, SET, RigL and SNFS.

An updater says *when* masks change (its `UpdateSchedule`) and *which* weights
move: every method drops the active weights of smallest magnitude and differs in
the score that picks the weights to grow. Applying the update to a model (the
compiled step, optimizer slots, `tf.distribute`) is `MaskEngine`'s job.
"""

from keras import ops

from tf_freetickets.sparse import layers as masking
from tf_freetickets.sparse import train_hooks
from tf_freetickets.sparse.schedules import UpdateSchedule
from tf_freetickets.sparse.stateless_random import fresh_seed, stateless_uniform


class MaskUpdater:
    """Base class: magnitude drop, subclass-defined growth.

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
    """

    #: Whether growth needs dense gradients (then `MaskUpdate` needs data).
    uses_gradients = False
    #: Batches of dense gradient gathered per update.
    gradient_batches = 0
    #: FreeTickets' update switches (set per instance by `__init__`); prune-only
    #: updaters that build their own schedule keep RigL's choices.
    reinit_when_same = False
    dense_gradient_momentum = False

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

    @property
    def updates_masks(self):
        return True

    @property
    def needs_gradient_data(self):
        """Whether growth needs batches of `gradient_data` (extra dense-gradient passes)."""
        return self.uses_gradients

    def kernel_transforms(self, model, layer_index):
        """Training-only transforms of masked layer `layer_index`'s kernel, applied in order."""
        return [train_hooks.dense_gradient_passthrough] if self.dense_gradient_momentum else []

    def attach(self, model):
        """Called when training starts; returns True if it changed the train step.

        Installs the training-time hooks the updater's options need (dense
        gradients to pruned weights, CigL's random mask, the step-gradient
        tap); `MaskUpdate` then rebuilds the train function.
        """
        layers = masking.updatable_masked_layers(model)  # the engine's layers and indices; frozen ones stay as they are
        changed = train_hooks.set_kernel_transforms(layers, [self.kernel_transforms(model, i) for i in range(len(layers))])
        if self.dense_gradient_momentum and self.updates_masks:
            train_hooks.remask_after_each_step(layers)
            changed = True
        return changed

    def detach(self, model):
        """Called when training ends; undoes `attach`. Returns True if it did anything."""
        return train_hooks.clear(masking.masked_layers(model))

    def drop_scores(self, weight):
        """Higher = kept: the weight magnitude (all methods here)."""
        return ops.abs(weight)

    def grow_scores(self, weight, gradient, layer_index, step):
        """Higher = grown first.

        Args:
          weight: the layer's kernel.
          gradient: its growth signal (None unless `uses_gradients`).
          layer_index: the layer's position among the masked layers.
          step: int scalar tensor, the optimizer step of the update.
        """
        raise NotImplementedError

    def accumulate_gradient(self, accumulated, gradient):
        """Folds one batch's dense gradient into the running growth signal."""
        raise NotImplementedError


class Static(MaskUpdater):
    """Fixed masks: sparse training from a random (ER/ERK) mask, no updates."""

    def __init__(self):
        super().__init__(update_every=1, drop_fraction=0.0)

    def kernel_transforms(self, model, layer_index):
        return []

    @property
    def updates_masks(self):
        return False


class SET(MaskUpdater):
    """Sparse Evolutionary Training (Mocanu et al. 2018): grow at random.

    Drops the smallest magnitudes and grows uniformly at random among the
    positions not kept. The random scores are a pure function of (seed, layer,
    step), so every replica and a resumed run draw the same positions.
    """

    def grow_scores(self, weight, gradient, layer_index, step):
        return stateless_uniform(ops.shape(weight), self.seed, layer_index, step)


GROWTH_GRADIENTS = ("extra_batch", "step_batch", "step_batch_skip_update")


class RigL(MaskUpdater):
    """Rigged Lottery (Evci et al. 2020): grow where |dense gradient| is largest.

    The dense gradient is of the training loss with respect to the effective
    (masked) weights.

    Args:
      gradient_batches: batches of `gradient_data` averaged per update
        (growth_gradient="extra_batch" only).
      growth_gradient: which batch the growth gradient comes from.
        "extra_batch" (default): after the update step's optimizer update,
        `gradient_batches` fresh batches of `gradient_data`, BatchNorm
        statistics restored. "step_batch": the update step's own batch, at
        the weights before that step's optimizer update, which is applied
        (FreeTickets' `core.py`: `weight.grad` read after `optimizer.step`);
        a global exploration at an epoch start uses the previous epoch's last
        batch, as FreeTickets' `main_EDST.py` does. "step_batch_skip_update":
        the update step's own batch, and that step's optimizer update is
        skipped (weights and slots unchanged; `iterations` still counts it)
        so growth sees the weights the gradient was taken at (RigL's
        `SparseRigLOptimizer`, CigL's `main.py`). The step-batch modes need
        `steps_per_execution=1`; they take no `gradient_data`.
      *args, **kwargs: `MaskUpdater`'s arguments.
    """

    uses_gradients = True

    def __init__(self, *args, gradient_batches=1, growth_gradient="extra_batch", **kwargs):
        super().__init__(*args, **kwargs)
        if gradient_batches < 1:
            raise ValueError(f"gradient_batches must be >= 1, got {gradient_batches!r}.")
        if growth_gradient not in GROWTH_GRADIENTS:
            raise ValueError(f"Unknown growth_gradient {growth_gradient!r}; use one of {GROWTH_GRADIENTS}.")
        if growth_gradient != "extra_batch" and gradient_batches != 1:
            raise ValueError(
                f"growth_gradient={growth_gradient!r} takes the update step's own batch; "
                f"gradient_batches={gradient_batches} needs growth_gradient='extra_batch'."
            )
        self.gradient_batches = gradient_batches
        self.growth_gradient = growth_gradient
        self.tap = None
        self._tap_model = None

    @property
    def needs_gradient_data(self):
        return self.growth_gradient == "extra_batch"

    def kernel_transforms(self, model, layer_index):
        transforms = super().kernel_transforms(model, layer_index)
        if self.tap is not None:
            transforms.append(self.tap.transform(layer_index))
        return transforms

    def attach(self, model):
        if self.growth_gradient != "extra_batch":
            if getattr(model, "steps_per_execution", 1) != 1:
                raise ValueError(
                    f"growth_gradient={self.growth_gradient!r} reads the update step's batch right after it; "
                    f"compile the model with steps_per_execution=1, got {model.steps_per_execution}."
                )
            replicas = model.distribute_strategy.num_replicas_in_sync
            if self.growth_gradient == "step_batch_skip_update" and replicas > 1:
                raise NotImplementedError(
                    "growth_gradient='step_batch_skip_update' wraps the optimizer update in a tf.cond, which "
                    f"tf.distribute cannot merge across {replicas} replicas; use 'step_batch' or 'extra_batch'."
                )
            if self.tap is None or self._tap_model is not model:
                self.tap = train_hooks.StepGradientTap(masking.updatable_masked_layers(model), model.distribute_strategy)
                self._tap_model = model
        changed = super().attach(model)
        if self.growth_gradient == "step_batch_skip_update":
            schedule = self.schedule
            if not model.optimizer.built:
                model.optimizer.build(model.trainable_variables)

            def is_update_step(step):
                step = ops.cast(step, "int64")
                since = step - schedule.begin_step
                return ops.logical_and(
                    ops.logical_and(step > 0, since >= 0),
                    ops.logical_and(step <= schedule.end_step, ops.mod(since, schedule.update_every) == 0),
                )

            train_hooks.skip_optimizer_update_on(model.optimizer, is_update_step)
            changed = True
        return changed

    def detach(self, model):
        restored = train_hooks.restore_optimizer(model.optimizer)
        return super().detach(model) or restored

    def step_gradients(self):
        """The growth signal of the step-batch modes: the last training batch's gradients."""
        return self.tap.gradients()

    def grow_scores(self, weight, gradient, layer_index, step):
        return ops.abs(gradient)

    def accumulate_gradient(self, accumulated, gradient):
        scaled = gradient / self.gradient_batches
        return scaled if accumulated is None else accumulated + scaled


class SNFS(MaskUpdater):
    """Sparse momentum (Dettmers & Zettlemoyer 2019): grow by |gradient momentum|.

    The original keeps SGD momentum of the dense gradient every step, which
    costs a dense backward pass per step. Here the momentum is rebuilt at each
    update from the last `gradient_batches` dense gradients,
    m = sum_k momentum^(K-1-k) g_k, so the extra cost is K backward passes per
    ΔT steps. Layer-wise densities stay fixed (no momentum redistribution), so
    per-layer active counts are exact as for RigL.
    """

    uses_gradients = True

    def __init__(self, *args, gradient_batches=5, momentum=0.9, **kwargs):
        super().__init__(*args, **kwargs)
        if gradient_batches < 1:
            raise ValueError(f"gradient_batches must be >= 1, got {gradient_batches!r}.")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}.")
        self.gradient_batches = gradient_batches
        self.momentum = momentum

    def grow_scores(self, weight, gradient, layer_index, step):
        return ops.abs(gradient)

    def accumulate_gradient(self, accumulated, gradient):
        return gradient if accumulated is None else self.momentum * accumulated + gradient


def freetickets_official(updater_class=RigL, **kwargs):
    """An updater that follows the update rules of FreeTickets' CIFAR code (`sparselearning/core.py`).

    Sets the three switches where that code departs from RigL's choices (the
    library's defaults): `reinit_when_same=True` (every grown weight restarts
    at 0), `dense_gradient_momentum=True` (momentum follows the dense gradient
    and is never reset) and, for gradient growth (`RigL` and subclasses),
    `growth_gradient="step_batch"` (the update step's own batch, after its
    optimizer update). FreeTickets' ImageNet code masks the momentum every
    step and grows without zeroing first, so only its `growth_gradient`
    matches this preset.

    Args:
      updater_class: `SET` (random growth) or `RigL` (gradient growth, the
        FreeTickets configs).
      **kwargs: the updater's schedule arguments (they may override a switch).

    Returns:
      An instance of `updater_class`.
    """
    options = {"reinit_when_same": True, "dense_gradient_momentum": True}
    if issubclass(updater_class, RigL):
        options["growth_gradient"] = "step_batch"
    return updater_class(**{**options, **kwargs})
