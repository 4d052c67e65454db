"""CigL: RigL's deterministic mask plus a random mask, for calibrated sparse models.

"Calibrating the Rigged Lottery: Making All Tickets Reliable" (Lei et al., ICLR
2023) and the authors' code (StevenBoys/CigL, `main.py`,
`sparselearning/core.py`), which this module follows by default:

- Deterministic mask: RigL's update (drop by |w|, grow by |gradient|, every ΔT
  steps, cosine-decayed drop fraction, ERK densities).
- Random mask: every training step a fresh Bernoulli mask drops each weight
  with probability `random_drop_rate` (the code's 1/dpnum; `Masking.dpnum` is
  100 and `main.py` never passes the configured DPNUM, so 0.01 on every
  dataset). How the code applies it (`Masking.apply_w_raw`, `apply_dropout`,
  `step`) and the switch for each choice:
  - the kept weights are not rescaled (`random_mask_rescale=False`; True
    scales them by 1/(1 - rate), DropConnect's convention);
  - the mask is written into the parameter tensor, so `weight.grad` is dense:
    a dropped weight's momentum takes its gradient, but its value does not
    take the update: `step()` zeroes the weights of the next step's mask
    before `optimizer.step()` and writes them back from `w_raw_dict` at the
    following step (`random_mask_restore_dropped=True`; False: DropConnect,
    a zero gradient and the weight moves with its momentum);
  - growth reads that dense `weight.grad` of the update step's batch
    (`random_mask_growth_gradient="dense"`; "masked": zero where the step's
    random mask dropped, times the rescale);
  - the magnitude drop sorts |weight.data|, in which the weights dropped by the
    update step's random mask are ~0, so those are pruned first
    (`random_mask_prune_dropped=True`).
  Only the forward pass of training sees the mask: the stored kernel keeps
  every active weight's value, and evaluation uses the deterministic mask.
- Evaluation: one model whose weights average end-of-epoch snapshots of the
  last part of training, with BatchNorm statistics recomputed
  (`tf_freetickets.ensembles.WeightAveraging`; the code averages epochs
  200-250 of 250). Its snapshots are the code's parameter tensors, which hold
  the random mask of the next step (`averaging_snapshot`).

The random mask of layer i at optimizer step t is a pure function of (seed, i,
t) (a stateless RNG), so it is the same on every replica under tf.distribute,
reproducible from the seed, and continues exactly after a checkpoint restore;
the restore of dropped weights reads the variables within the step and keeps
no state. Growth uses, by default, the dense gradient of the deterministic
sparse network on an extra batch; `growth_gradient="step_batch_skip_update"` is
what the authors' `main.py` does: the update step's own batch, with that step's
random mask applied, and no optimizer update on that step.
"""

import functools

import tensorflow as tf
from keras import ops

from tf_freetickets.sparse import train_hooks
from tf_freetickets.sparse.drop_grow import drop_and_grow_indices
from tf_freetickets.sparse.masked_set import MaskedLayerSet
from tf_freetickets.sparse.methods.common import dst_updater_kwargs, gradient_growth_costs
from tf_freetickets.sparse.methods.rigl import GROWTH_GRADIENT_FIELD, RigL
from tf_freetickets.sparse.registry import ConfigField, register_method
from tf_freetickets.sparse.stateless_random import stateless_uniform
from tf_freetickets.sparse.updater import masks_from_indices

RANDOM_MASK_GROWTH_GRADIENTS = ("dense", "masked")


def random_keep_mask(shape, seed, layer_index, step, drop_rate, rescale=False):
    """The CigL random mask of a layer at an optimizer step: 0 where dropped, 1 (or 1/(1-drop_rate)) where kept.

    Args:
      shape: kernel shape.
      seed: int, the run's seed.
      layer_index: int, the masked layer's position in the model.
      step: int scalar tensor, the optimizer step (a new mask every step).
      drop_rate: probability of dropping each weight, in [0, 1).
      rescale: scale the kept entries by 1/(1 - drop_rate) (DropConnect's
        convention; CigL's code keeps them at 1).

    Returns:
      float32 tensor of `shape`.
    """
    # Stream offset 1 << 16 keeps the random mask apart from SET-style growth draws.
    keep = tf.cast(stateless_uniform(shape, seed, (1 << 16) + layer_index, step) >= drop_rate, tf.float32)
    return keep / (1.0 - drop_rate) if rescale else keep


def _apply_random_mask(updater, layer_index, step_variable, layer, kernel):
    """The training kernel under the random mask of step `step_variable`.

    Value: kernel * keep (times 1/(1 - rate) with `random_mask_rescale`).
    Gradient with respect to `kernel`: DropConnect's chain rule, or (with
    `random_mask_restore_dropped`) the gradient with respect to the masked
    kernel passed unchanged to the dropped entries, as the code's dense
    `weight.grad`: kernel + (kernel - stop_gradient(kernel)) * (1 - keep)
    adds 0 in value and the identity in gradient there.
    """
    shape = tf.shape(kernel)
    rate = updater.random_drop_rate
    keep = ops.cast(random_keep_mask(shape, updater.seed, layer_index, step_variable, rate), kernel.dtype)
    scale = 1.0 / (1.0 - rate) if updater.random_mask_rescale else 1.0
    masked = kernel * keep * scale
    if updater.random_mask_restore_dropped:
        masked = masked + (kernel - tf.stop_gradient(kernel)) * (1.0 - keep)
    return masked


class CigL(RigL):
    """CigL updater: RigL deterministic mask + a per-step random mask, as CigL's code applies it.

    Use it with `MaskUpdate` like RigL (it needs `gradient_data` unless growth
    reads the step's batch); pair it with `WeightAveraging(start_fraction=0.8,
    kernel_snapshot=updater.averaging_snapshot)` for the paper's evaluation model.

    Args:
      random_drop_rate: fraction of weights the random mask drops each
        training step (1/dpnum in the authors' code; 0.01 by default, the
        value its runs use on every dataset).
      random_mask_rescale: False (the code): kept weights enter the forward
        pass unscaled. True: scaled by 1/(1 - random_drop_rate).
      random_mask_restore_dropped: True (the code): a dropped weight receives
        the gradient with respect to the masked kernel (its momentum follows
        it) but keeps its value through the optimizer update before the step
        whose mask drops it (the code zeroes the next step's dropped weights
        before `optimizer.step()` and restores them from `w_raw_dict`). False:
        DropConnect: a zero gradient, and the weight moves with its momentum.
      random_mask_growth_gradient: with a step-batch `growth_gradient`:
        "dense" (the code: the gradient with respect to the randomly masked
        kernel, nonzero where the mask dropped) or "masked" (that gradient
        times the step's random mask, and its rescale).
      random_mask_prune_dropped: True (the code): at a mask update, the
        weights dropped by the update step's random mask are pruned before
        any other (smallest magnitude first among them); False: the drop
        ranks every active weight by its stored magnitude.
      seed: seeds the random masks (and nothing else; RigL growth is
        deterministic). None draws one.
      *args, **kwargs: RigL's schedule arguments (update_every=100,
        drop_fraction=0.3, end_fraction=0.75, decay="cosine" as in the code).
    """

    def __init__(
        self, *args, random_drop_rate=0.01, random_mask_rescale=False, random_mask_restore_dropped=True,
        random_mask_growth_gradient="dense", random_mask_prune_dropped=True, **kwargs,
    ):  # fmt: skip
        super().__init__(*args, **kwargs)
        if not 0.0 <= random_drop_rate < 1.0:
            raise ValueError(f"random_drop_rate must be in [0, 1), got {random_drop_rate!r}.")
        if random_mask_growth_gradient not in RANDOM_MASK_GROWTH_GRADIENTS:
            raise ValueError(
                f"random_mask_growth_gradient must be one of {RANDOM_MASK_GROWTH_GRADIENTS}, "
                f"got {random_mask_growth_gradient!r}."
            )
        self.random_drop_rate = random_drop_rate
        self.random_mask_rescale = bool(random_mask_rescale)
        self.random_mask_restore_dropped = bool(random_mask_restore_dropped)
        self.random_mask_growth_gradient = random_mask_growth_gradient
        self.random_mask_prune_dropped = bool(random_mask_prune_dropped)
        self._step_variable = None

    @property
    def _has_random_mask(self):
        return self.random_drop_rate > 0.0

    def keep_mask(self, shape, layer_index, step):
        """0/1 random mask of masked layer `layer_index` at optimizer step `step` (float32)."""
        return random_keep_mask(shape, self.seed, layer_index, step, self.random_drop_rate)

    def transforms_before_tap(self, model, layer_index):
        """The random mask, before the step-gradient tap: growth reads the gradient at the masked kernel."""
        if not self._has_random_mask:
            return []
        step = model.optimizer.iterations
        return [functools.partial(_apply_random_mask, self, layer_index, step)]

    def attach(self, model, layers=None):
        """RigL's hooks, then (with `random_mask_restore_dropped`) the restore of dropped weights after each update."""
        layers = MaskedLayerSet(model) if layers is None else layers
        changed = super().attach(model, layers)
        self._step_variable = model.optimizer.iterations
        if self._has_random_mask and self.random_mask_restore_dropped:
            kernels = layers.kernels

            def keep_update(index, step):
                # The code's `step()` draws the next step's mask before `optimizer.step()`: the weights it drops
                # are the ones that do not take this update.
                return self.keep_mask(tuple(kernels[index].shape), index, step + 1)

            changed = train_hooks.keep_values_through_update(model.optimizer, kernels, keep_update) or changed
        return changed

    def grow_scores(self, weight, gradient, layer_index, step):
        """|gradient|; with "masked" and a step-batch gradient, times the update step's random mask (and rescale)."""
        scores = ops.abs(gradient)
        if self._has_random_mask and self.random_mask_growth_gradient == "masked" and self.growth_gradient != "extra_batch":
            keep = self.keep_mask(tf.shape(weight), layer_index, step - 1)
            scale = 1.0 / (1.0 - self.random_drop_rate) if self.random_mask_rescale else 1.0
            scores = scores * ops.cast(keep * scale, scores.dtype)
        return scores

    def new_mask(self, layer_index, old_mask, weights, scores, step, drop_fraction):
        """RigL's drop and grow; with `random_mask_prune_dropped`, the update step's randomly dropped weights go first."""
        if not (self._has_random_mask and self.random_mask_prune_dropped):
            return super().new_mask(layer_index, old_mask, weights, scores, step, drop_fraction)
        # The update at `step` follows the training step whose forward pass used the mask of step - 1.
        keep = ops.cast(self.keep_mask(tf.shape(weights), layer_index, step - 1), weights.dtype)
        magnitude = ops.abs(weights)
        # Kept weights rank by |w| >= 0; dropped ones below all of them, the smaller |w| first.
        drop_scores = ops.where(keep > 0, magnitude, -1.0 / (1.0 + magnitude))
        num_drop = ops.floor(drop_fraction * ops.sum(old_mask))
        dropped, grown_at = drop_and_grow_indices(
            old_mask, drop_scores, self.grow_scores(weights, scores, layer_index, step), num_drop
        )
        return masks_from_indices(old_mask, dropped, grown_at, self.reinit_when_same)

    def averaging_snapshot(self, layer_index, kernel):
        """The kernel the code's parameter tensor holds between steps: `kernel` times the next step's random mask.

        For `WeightAveraging(kernel_snapshot=...)`: CigL's `main.py` averages
        `param.data` after the epoch's last `step()`, which has zeroed the
        weights the next step's mask drops.

        Args:
          layer_index: the masked layer's index (`MaskedLayerSet` order).
          kernel: its stored kernel (array or tensor).
        """
        if not self._has_random_mask or self._step_variable is None:
            return kernel
        keep = self.keep_mask(tuple(kernel.shape), layer_index, self._step_variable)
        return kernel * ops.convert_to_numpy(keep).astype(kernel.dtype)


def check_random_drop_rate(value, sparse):
    """Config check of `sparse.random_drop_rate`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"config.sparse.random_drop_rate={value!r} must be in [0, 1).")


def _check_bool(name):
    def check(value, sparse):
        if not isinstance(value, bool):
            raise ValueError(f"config.sparse.{name}={value!r} must be True or False.")

    return check


def check_random_mask_growth_gradient(value, sparse):
    """Config check of `sparse.random_mask_growth_gradient`."""
    if value not in RANDOM_MASK_GROWTH_GRADIENTS:
        raise ValueError(
            f"config.sparse.random_mask_growth_gradient={value!r} is unknown; use one of {RANDOM_MASK_GROWTH_GRADIENTS}."
        )


def _make_cigl(sparse, seed):
    return CigL(
        random_drop_rate=float(sparse.random_drop_rate),
        random_mask_rescale=bool(sparse.get("random_mask_rescale", False)),
        random_mask_restore_dropped=bool(sparse.get("random_mask_restore_dropped", True)),
        random_mask_growth_gradient=sparse.get("random_mask_growth_gradient", "dense"),
        random_mask_prune_dropped=bool(sparse.get("random_mask_prune_dropped", True)),
        growth_gradient=sparse.get("growth_gradient", "extra_batch"),
        **dst_updater_kwargs(sparse, seed),
    )


register_method(
    "cigl",
    summary="CigL (Lei et al. 2023): RigL's deterministic mask plus a per-step random mask, as its code applies it.",
    make_updater=_make_cigl,
    cost_facts=gradient_growth_costs,
    config_fields=(
        GROWTH_GRADIENT_FIELD,
        ConfigField(
            "random_drop_rate", 0.01, "cigl: rate of the random mask (1/dpnum; the code runs 0.01)", check_random_drop_rate
        ),
        ConfigField(
            "random_mask_rescale", False, "cigl: True scales kept weights by 1/(1 - rate); the code does not",
            _check_bool("random_mask_rescale"),
        ),
        ConfigField(
            "random_mask_restore_dropped", True,
            "cigl: dropped weights get their gradient but keep their value (the code); False: DropConnect",
            _check_bool("random_mask_restore_dropped"),
        ),
        ConfigField(
            "random_mask_growth_gradient", "dense",
            "cigl, step-batch growth: dense (the code) | masked (zero where the step's random mask dropped)",
            check_random_mask_growth_gradient,
        ),
        ConfigField(
            "random_mask_prune_dropped", True,
            "cigl: the update step's randomly dropped weights are pruned first (the code); False: by |w| only",
            _check_bool("random_mask_prune_dropped"),
        ),
    ),
    updater_class=CigL,
    dynamic=True,
)
