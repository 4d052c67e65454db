"""CigL on CIFAR10: WRN-22-2 at 90% sparsity (paper hyper-parameters; see tf_freetickets/experiments/paper_configs.py).

python -m tf_freetickets.train --config=configs/cifar10_wrn22_2_cigl.py --workdir=out/cifar10_cigl
The RigL baseline: --config.sparse.method=rigl --config.weight_averaging.enabled=False.
"""

from tf_freetickets.experiments.paper_configs import cigl


def get_config():
    return cigl(dataset="cifar10", sparsity=0.9)
