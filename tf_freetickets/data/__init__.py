"""Input pipelines: offline Fashion-MNIST, locally prepared tfds datasets, tf.data streams,
and the project-made OoD sets (`data.ood`) and CIFAR-10-C-style corruptions (`data.corruptions`)."""

from tf_freetickets.data.fashion_mnist import DEFAULT_DIR, DatasetError, MissingDatasetError, load_fashion_mnist
from tf_freetickets.data.pipelines import eval_dataset, steps_per_epoch, train_dataset
from tf_freetickets.data.tfds_data import load_split

__all__ = [
    "DEFAULT_DIR",
    "DatasetError",
    "MissingDatasetError",
    "eval_dataset",
    "load_fashion_mnist",
    "load_split",
    "steps_per_epoch",
    "train_dataset",
]
