"""CigL at 90% sparsity (ERK) on Fashion-MNIST, small CNN: RigL's deterministic mask, a random
DropConnect mask on the active weights every step, and evaluation on the weight average of the
last 20% of epochs with BatchNorm statistics recomputed (Lei et al., ICLR 2023).

python -m tf_freetickets.train --config=configs/fashion_mnist_cigl.py --workdir=out/cigl
Compare with configs/fashion_mnist_rigl.py (same everything but the random mask and averaging).
"""

from tf_freetickets.experiments.config import fashion_mnist_defaults


def get_config():
    config = fashion_mnist_defaults()
    config.sparse.method = "cigl"
    config.sparse.random_drop_rate = 0.01
    config.weight_averaging.enabled = True
    config.weight_averaging.start_fraction = 0.8
    return config
