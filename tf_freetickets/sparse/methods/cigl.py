"""CigL: RigL's deterministic mask plus a random mask, for calibrated sparse models.

"Calibrating the Rigged Lottery: Making All Tickets Reliable" (Lei et al., ICLR
2023) and the authors' code (StevenBoys/CigL):

- Deterministic mask: RigL's update (drop by |w|, grow by |dense gradient|,
  every ΔT steps, cosine-decayed drop fraction, ERK densities).
- Random mask: DropConnect on the active weights. Every training step a fresh
  Bernoulli mask drops each active weight with probability `random_drop_rate`
  (the code's 1/dpnum; dpnum=100, so 0.01, is what its CIFAR runs use) and
  scales the survivors by 1/(1 - rate), so the expected kernel is unchanged.
  Only the forward pass of training sees it: the stored kernel keeps every
  active weight, and evaluation uses the deterministic mask alone.
- Evaluation: one model whose weights average end-of-epoch snapshots of the
  last part of training, with BatchNorm statistics recomputed
  (`tf_freetickets.ensembles.WeightAveraging`; the code averages epochs
  200-250 of 250).

The random mask of layer i at optimizer step t is a pure function of (seed, i,
t) (a stateless RNG), so it is the same on every replica under tf.distribute,
reproducible from the seed, and continues exactly after a checkpoint restore.
Growth uses, by default, the dense gradient of the deterministic sparse
network on an extra batch; `growth_gradient="step_batch_skip_update"` does what
the authors' `main.py` does: the update step's own batch, with that step's
random mask applied, and no optimizer update on that step.
"""

import functools

import tensorflow as tf

from tf_freetickets.sparse.methods.common import dst_updater_kwargs, gradient_growth_costs
from tf_freetickets.sparse.methods.rigl import GROWTH_GRADIENT_FIELD, RigL
from tf_freetickets.sparse.registry import ConfigField, register_method
from tf_freetickets.sparse.stateless_random import stateless_uniform


def random_keep_mask(shape, seed, layer_index, step, drop_rate):
    """The CigL random mask: 1/(1-drop_rate) where kept, 0 where dropped.

    Args:
      shape: kernel shape.
      seed: int, the run's seed.
      layer_index: int, the masked layer's position in the model.
      step: int scalar tensor, the optimizer step (a new mask every step).
      drop_rate: probability of dropping each weight, in [0, 1).

    Returns:
      float32 tensor of `shape`.
    """
    # Stream offset 1 << 16 keeps the random mask apart from SET-style growth draws.
    keep = stateless_uniform(shape, seed, (1 << 16) + layer_index, step) >= drop_rate
    return tf.cast(keep, tf.float32) / (1.0 - drop_rate)


def _apply_random_mask(seed, layer_index, step_variable, drop_rate, layer, kernel):
    keep = random_keep_mask(tf.shape(kernel), seed, layer_index, step_variable, drop_rate)
    return kernel * tf.cast(keep, kernel.dtype)


class CigL(RigL):
    """CigL updater: RigL deterministic mask + per-step random DropConnect mask.

    Use it with `MaskUpdate` like RigL (it needs `gradient_data`); pair it
    with `WeightAveraging(start_fraction=0.8)` for the paper's evaluation model.

    Args:
      random_drop_rate: fraction of active weights the random mask drops each
        training step (1/dpnum in the authors' code; 0.01 by default, the value
        its runs use).
      seed: seeds the random masks (and nothing else; RigL growth is
        deterministic). None draws one.
      *args, **kwargs: RigL's schedule arguments (update_every=100,
        drop_fraction=0.3, end_fraction=0.75, decay="cosine" as in the code).
    """

    def __init__(self, *args, random_drop_rate=0.01, **kwargs):
        super().__init__(*args, **kwargs)
        if not 0.0 <= random_drop_rate < 1.0:
            raise ValueError(f"random_drop_rate must be in [0, 1), got {random_drop_rate!r}.")
        self.random_drop_rate = random_drop_rate

    def kernel_transforms(self, model, layer_index):
        """RigL's transforms, then the random mask (so a step-batch growth gradient flows through it)."""
        transforms = super().kernel_transforms(model, layer_index)
        if self.random_drop_rate > 0.0:
            step = model.optimizer.iterations
            transforms.append(functools.partial(_apply_random_mask, self.seed, layer_index, step, self.random_drop_rate))
        return transforms


def check_random_drop_rate(value, sparse):
    """Config check of `sparse.random_drop_rate`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"config.sparse.random_drop_rate={value!r} must be in [0, 1).")


def _make_cigl(sparse, seed):
    return CigL(
        random_drop_rate=float(sparse.random_drop_rate),
        growth_gradient=sparse.get("growth_gradient", "extra_batch"),
        **dst_updater_kwargs(sparse, seed),
    )


register_method(
    "cigl",
    summary="CigL (Lei et al. 2023): RigL's deterministic mask plus a per-step random DropConnect mask.",
    make_updater=_make_cigl,
    cost_facts=gradient_growth_costs,
    config_fields=(
        GROWTH_GRADIENT_FIELD,
        ConfigField("random_drop_rate", 0.01, "cigl: CigL's random mask (1/dpnum)", check_random_drop_rate),
    ),
    updater_class=CigL,
    dynamic=True,
)
