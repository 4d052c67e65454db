"""Dense single small CNN on Fashion-MNIST (the baseline every sparse run is compared with).

python -m tf_freetickets.train --config=configs/fashion_mnist_dense.py --workdir=out/dense
For a dense deep ensemble add --config.ensemble.kind=independent --config.ensemble.num_members=3.
"""

from tf_freetickets.experiments.config import fashion_mnist_defaults


def get_config():
    config = fashion_mnist_defaults()
    config.width = 0.5
    config.sparse.method = "dense"
    return config
