"""RigL at 90% sparsity (ERK) on Fashion-MNIST with the small CNN: a few minutes on 2 CPU cores.

python -m tf_freetickets.train --config=configs/fashion_mnist_rigl.py --workdir=out/rigl
Override any field from the shell, e.g. --config.sparse.sparsity=0.8 --config.epochs=5.
"""

import ml_collections


def get_config():
    config = ml_collections.ConfigDict()
    config.seed = 0
    config.dataset = "fashion_mnist"
    config.data_dir = ""  # empty: $TFT_FASHION_MNIST_DIR or Debian's /usr/share/datasets/fashion-mnist
    config.train_examples = 0  # 0 = the whole training split; smaller for smoke runs
    config.model = "small_cnn"
    config.width = 1.0
    config.epochs = 3
    config.batch_size = 128
    config.verbose = 2  # Keras fit verbosity: 1 progress bar, 2 one line per epoch

    config.optimizer = ml_collections.ConfigDict()
    config.optimizer.learning_rate = 0.05
    config.optimizer.momentum = 0.9
    config.optimizer.weight_decay = 5e-4  # L2 on kernels
    config.optimizer.schedule = "cosine"  # or "constant"

    config.sparse = ml_collections.ConfigDict()
    config.sparse.method = "rigl"  # dense | static | set | rigl | snfs
    config.sparse.sparsity = 0.9
    config.sparse.distribution = "erk"
    config.sparse.update_every = 100
    config.sparse.drop_fraction = 0.3
    config.sparse.end_fraction = 0.75
    config.sparse.decay = "cosine"
    return config
