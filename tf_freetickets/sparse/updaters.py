"""Mask-update policies: Static, SET, RigL and SNFS.

An updater says *when* masks change (its `UpdateSchedule`) and *which* weights
move: every method drops the active weights of smallest magnitude and differs in
the score that picks the weights to grow. Applying the update to a model (the
compiled step, optimizer slots, `tf.distribute`) is `MaskEngine`'s job.
"""

from keras import ops

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
    """

    #: Whether growth needs dense gradients (then `MaskUpdate` needs data).
    uses_gradients = False
    #: Batches of dense gradient gathered per update.
    gradient_batches = 0

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

    @property
    def updates_masks(self):
        return True

    def attach(self, model):
        """Called when training starts; returns True if it changed the forward pass.

        Updaters that alter training-time computation (CigL's random mask)
        install it here; `MaskUpdate` then rebuilds the train function.
        """
        return False

    def detach(self, model):
        """Called when training ends; undoes `attach`. Returns True if it did anything."""
        return False

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


class RigL(MaskUpdater):
    """Rigged Lottery (Evci et al. 2020): grow where |dense gradient| is largest.

    The dense gradient is of the training loss with respect to the effective
    (masked) weights, averaged over `gradient_batches` batches (1 in the paper:
    the batch of the update step).
    """

    uses_gradients = True

    def __init__(self, *args, gradient_batches=1, **kwargs):
        super().__init__(*args, **kwargs)
        if gradient_batches < 1:
            raise ValueError(f"gradient_batches must be >= 1, got {gradient_batches!r}.")
        self.gradient_batches = gradient_batches

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
