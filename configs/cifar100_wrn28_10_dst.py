"""FreeTickets on CIFAR100: WRN-28-10, dst (paper hyper-parameters; see tf_freetickets/experiments/paper_configs.py).

python -m tf_freetickets.train --config=configs/cifar100_wrn28_10_dst.py --workdir=out/cifar100_dst
Sparsity 0.9 instead of 0.8: --config.sparse.sparsity=0.9. Needs the prepared tfds cifar100 (see README).
"""

from tf_freetickets.experiments.paper_configs import freetickets


def get_config():
    return freetickets(dataset="cifar100", kind="dst", sparsity=0.8)
