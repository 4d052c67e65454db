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
Growth uses the dense gradient of the deterministic sparse network (the
authors' code takes it with that step's random mask applied).
"""

import functools

import tensorflow as tf

from tf_freetickets.sparse import layers as masking
from tf_freetickets.sparse.stateless_random import stateless_uniform
from tf_freetickets.sparse.updaters import RigL


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

    def attach(self, model):
        """Installs the random mask on the masked layers of `model`."""
        if self.random_drop_rate == 0.0:
            return False
        step = model.optimizer.iterations
        for index, layer in enumerate(masking.masked_layers(model)):
            if masking.is_frozen(layer):
                continue  # a frozen layer's forward pass stays deterministic, as its mask stays fixed
            layer.training_kernel_transform = functools.partial(_apply_random_mask, self.seed, index, step, self.random_drop_rate)
        return True

    def detach(self, model):
        """Removes the random mask; evaluation and later training see the deterministic mask."""
        for layer in masking.masked_layers(model):
            layer.training_kernel_transform = None
        return self.random_drop_rate > 0.0
