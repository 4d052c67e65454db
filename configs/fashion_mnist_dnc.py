"""Divide-and-Co-training on Fashion-MNIST: the small CNN of width 1 divided into S=2 members of
width 1/sqrt(2) (equal parameters), co-trained on different views with the JS term (weight 0.5
after a 1-epoch warm-up), weight decay x exp(1/S - 1), ensembled by mean probability.

python -m tf_freetickets.train --config=configs/fashion_mnist_dnc.py --workdir=out/dnc
Compare with configs/fashion_mnist_wide.py (the undivided network, same budget).
Sparse members: --config.sparse.method=rigl --config.sparse.sparsity=0.8.
"""

from tf_freetickets.experiments.config import fashion_mnist_defaults


def get_config():
    config = fashion_mnist_defaults()
    config.width = 1.0
    config.sparse.method = "dense"
    config.ensemble.kind = "dnc"
    config.ensemble.num_members = 2
    config.ensemble.cotraining_weight = 0.5
    config.ensemble.cotraining_warmup_epochs = 1
    return config
