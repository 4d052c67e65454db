"""EDST ensemble (FreeTickets) of M=3 tickets at 80% sparsity on Fashion-MNIST, one run: ~5 minutes on 2 cores.

python -m tf_freetickets.train --config=configs/fashion_mnist_edst.py --workdir=out/edst

Follows the paper's recipe scaled down: SET growth with a constant drop fraction
of 0.5 (main_EDST.py), global exploration q=0.8, exploration at the base
learning rate then refinement phases at lr/10 and lr/100. 1 exploration epoch
+ 3 x 2 refinement epochs; ΔT=200 steps (about 0.4 epoch, as 1000 steps is
about 2.8 CIFAR epochs at batch 128 in the paper, scaled to the short run).
"""

from tf_freetickets.experiments.config import fashion_mnist_defaults


def get_config():
    config = fashion_mnist_defaults()
    config.width = 0.5
    config.optimizer.schedule = "constant"
    config.sparse.method = "set"
    config.sparse.sparsity = 0.8
    config.sparse.update_every = 200
    config.sparse.drop_fraction = 0.5
    config.sparse.decay = "constant"
    config.sparse.end_fraction = 1.0
    config.ensemble.kind = "edst"
    config.ensemble.num_members = 3
    config.ensemble.exploration_epochs = 1
    config.ensemble.refinement_epochs = 2
    config.ensemble.large_drop_fraction = 0.8
    return config
