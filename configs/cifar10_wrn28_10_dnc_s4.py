"""Divide-and-Co-training on CIFAR10: WRN-28-10 divided into S=4 co-trained members (paper hyper-parameters).

python -m tf_freetickets.train --config=configs/cifar10_wrn28_10_dnc_s4.py --workdir=out/cifar10_dnc_s4
The undivided baseline: --config.ensemble.kind=none. Sparse members: --config.sparse.method=rigl.
"""

from tf_freetickets.experiments.paper_configs import divide_and_cotrain


def get_config():
    return divide_and_cotrain(dataset="cifar10", num_splits=4)
