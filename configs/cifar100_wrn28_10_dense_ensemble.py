"""FreeTickets on CIFAR100: WRN-28-10, dense ensemble (paper hyper-parameters; see tf_freetickets/experiments/paper_configs.py).

python -m tf_freetickets.train --config=configs/cifar100_wrn28_10_dense_ensemble.py --workdir=out/cifar100_dense_ensemble
Sparsity 0.9 instead of 0.8: --config.sparse.sparsity=0.9. Needs the prepared tfds cifar100 (see README).
"""

from tf_freetickets.experiments.paper_configs import freetickets


def get_config():
    return freetickets(dataset="cifar100", kind="dense_ensemble", sparsity=0.8)
