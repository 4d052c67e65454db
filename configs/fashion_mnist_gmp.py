"""Gradual magnitude pruning to 90% sparsity on Fashion-MNIST, small CNN: the dense-to-sparse baseline.

Zhu & Gupta (2017) as RigL and FreeTickets compare with it: the model starts dense and every
`sparse.update_every` steps drops its smallest-magnitude weights along tfmot's cubic PolynomialDecay,
from `sparse.gmp.initial_sparsity` at `sparse.gmp.begin_fraction` of training to `sparse.sparsity` at
`sparse.end_fraction`; layer-wise targets by `sparse.distribution` (ERK here, as the RigL config;
"uniform" is tfmot's choice).

python -m tf_freetickets.train --config=configs/fashion_mnist_gmp.py --workdir=out/gmp
"""

from tf_freetickets.experiments.config import fashion_mnist_defaults


def get_config():
    config = fashion_mnist_defaults()
    config.sparse.method = "gmp"
    return config
