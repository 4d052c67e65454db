"""DST ensemble (FreeTickets): M=3 independent RigL runs at 80% sparsity on Fashion-MNIST.

python -m tf_freetickets.train --config=configs/fashion_mnist_dst.py --workdir=out/dst
Each member trains as long as the EDST config's whole run (7 epochs) would take 1/M of; here 3 epochs each.
"""

from tf_freetickets.experiments.config import fashion_mnist_defaults


def get_config():
    config = fashion_mnist_defaults()
    config.width = 0.5
    config.sparse.sparsity = 0.8
    config.ensemble.kind = "independent"
    config.ensemble.num_members = 3
    return config
