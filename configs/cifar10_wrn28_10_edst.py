"""FreeTickets on CIFAR10: WRN-28-10, edst (paper hyper-parameters; see tf_freetickets/experiments/paper_configs.py).

python -m tf_freetickets.train --config=configs/cifar10_wrn28_10_edst.py --workdir=out/cifar10_edst
Sparsity 0.9 instead of 0.8: --config.sparse.sparsity=0.9. Needs the prepared tfds cifar10 (see README).
"""

from tf_freetickets.experiments.paper_configs import freetickets


def get_config():
    return freetickets(dataset="cifar10", kind="edst", sparsity=0.8)
