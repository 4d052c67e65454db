"""One Chase model at 90% sparsity (ERK) on Fashion-MNIST, small CNN: about 3 minutes on 2 cores.

python -m tf_freetickets.train --config=configs/fashion_mnist_chase.py --workdir=out/chase

Chase (Yin et al., NeurIPS 2023): RigL's schedule and growth, and the output channels of smallest
unmasked mean magnitude removed gradually (cubic ramp) to chase_channel_sparsity of every layer
that may lose channels, their weight budget regrown in the layer's other channels
(docs/METHODS.md, "Chase"). The ramp ends at the earlier of chase_end_fraction (the code's
130 / 160 epochs) and end_fraction (the last mask update). `tft.compact` of the trained
member removes the channels.
"""

from tf_freetickets.experiments.config import fashion_mnist_defaults


def get_config():
    config = fashion_mnist_defaults()
    config.sparse.method = "chase"
    config.sparse.chase_channel_sparsity = 0.5  # the code's CIFAR scripts (--start_layer_rate 0.5)
    config.sparse.chase_begin_fraction = 0.0
    config.sparse.chase_end_fraction = 0.8125
    return config
