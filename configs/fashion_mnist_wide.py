"""The undivided baseline of fashion_mnist_dnc.py: one dense small CNN of width 1, same epochs and optimizer.

python -m tf_freetickets.train --config=configs/fashion_mnist_wide.py --workdir=out/wide
"""

from tf_freetickets.experiments.config import fashion_mnist_defaults


def get_config():
    config = fashion_mnist_defaults()
    config.width = 1.0
    config.sparse.method = "dense"
    return config
