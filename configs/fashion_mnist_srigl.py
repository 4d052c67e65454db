"""One SRigL model at 90% sparsity (ERK) on Fashion-MNIST, small CNN: about 3 minutes on 2 cores.

python -m tf_freetickets.train --config=configs/fashion_mnist_srigl.py --workdir=out/srigl

SRigL (Lasby et al., ICLR 2024): RigL's schedule and growth with a constant
fan-in per output unit and neuron ablation at the paper's gamma_sal = 0.3
(docs/METHODS.md, "SRigL"). `--config.sparse.srigl_ablation=False` is the
paper's "SRigL w/o ablation".
"""

from tf_freetickets.experiments.config import fashion_mnist_defaults


def get_config():
    config = fashion_mnist_defaults()
    config.sparse.method = "srigl"
    config.sparse.srigl_gamma_sal = 0.3
    config.sparse.srigl_ablation = True
    return config
