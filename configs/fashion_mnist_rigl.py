"""One RigL model at 90% sparsity (ERK) on Fashion-MNIST, small CNN: about 3 minutes on 2 cores.

python -m tf_freetickets.train --config=configs/fashion_mnist_rigl.py --workdir=out/rigl
"""

from tf_freetickets.experiments.config import fashion_mnist_defaults


def get_config():
    return fashion_mnist_defaults()
