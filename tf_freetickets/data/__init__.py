"""Input pipelines: offline Fashion-MNIST and tf.data batching."""

from tf_freetickets.data.fashion_mnist import DEFAULT_DIR, MissingDatasetError, load_fashion_mnist
from tf_freetickets.data.pipelines import eval_dataset, steps_per_epoch, train_dataset

__all__ = ["DEFAULT_DIR", "MissingDatasetError", "eval_dataset", "load_fashion_mnist", "steps_per_epoch", "train_dataset"]
