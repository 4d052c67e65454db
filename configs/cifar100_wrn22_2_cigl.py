"""CigL on CIFAR100: WRN-22-2 at 90% sparsity (paper hyper-parameters; see tf_freetickets/experiments/paper_configs.py).

python -m tf_freetickets.train --config=configs/cifar100_wrn22_2_cigl.py --workdir=out/cifar100_cigl
The RigL baseline: --config.sparse.method=rigl --config.weight_averaging.enabled=False.
Random-mask rate: 0.01, what the released code runs on CIFAR-100 too (Masking's dpnum=100; main.py does not pass
the configured DPNUM); the paper's and README's CIFAR-100 rate: --config.sparse.random_drop_rate=0.1.
"""

from tf_freetickets.experiments.paper_configs import cigl


def get_config():
    return cigl(dataset="cifar100", sparsity=0.9)
