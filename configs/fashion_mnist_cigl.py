"""CigL at 90% sparsity (ERK) on Fashion-MNIST, small CNN: RigL's deterministic mask, a random mask on the
weights every step applied as CigL's code applies it (rate 0.01, no rescale, dropped weights keep their value
through the update, randomly dropped weights pruned first), and evaluation on the weight average of the last 20% of
epochs with BatchNorm statistics recomputed (Lei et al., ICLR 2023).

python -m tf_freetickets.train --config=configs/fashion_mnist_cigl.py --workdir=out/cigl

Growth gradient: the update step's own batch (`growth_gradient="step_batch"`), the signal CigL's code grows by
(`weight.grad` of that batch, taken through that step's random mask), not an extra batch of the deterministic
network. The code also skips that step's optimizer update (`"step_batch_skip_update"`); this config keeps it,
because the skip removes one optimizer step in every update interval: 1% at the code's 100 steps, but 10% at the
10-step interval of a short run such as the long study's (docs/METHODS.md, CigL). Grown weights restart at 0
(`reinit_when_same`), as the code's growth zeroes them. `adjust_prune_rate` is left off: no layer of the small CNN
qualifies at 80-95% sparsity, so it would change nothing.

Like-for-like RigL (the CigL paper's baseline runs the same deterministic update): configs/fashion_mnist_rigl.py
with --config.sparse.growth_gradient=step_batch --config.sparse.reinit_when_same=True.
"""

from tf_freetickets.experiments.config import fashion_mnist_defaults


def get_config():
    config = fashion_mnist_defaults()
    config.sparse.method = "cigl"
    config.sparse.random_drop_rate = 0.01
    config.sparse.growth_gradient = "step_batch"
    config.sparse.reinit_when_same = True
    config.weight_averaging.enabled = True
    config.weight_averaging.start_fraction = 0.8
    return config
