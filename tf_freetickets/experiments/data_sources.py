"""Where a run's data comes from: in-memory arrays (Fashion-MNIST, CIFAR, SVHN) or the ImageNet stream.

`experiments.run` trains and evaluates through this interface, so the same
trainers (single model, independent ensembles, EDST, Divide-and-Co-training)
run on a dataset that fits in memory and on ImageNet, which is streamed from
its prepared tfds TFRecords.
"""

import glob
import hashlib
import os

import numpy as np

from tf_freetickets import data
from tf_freetickets.data import fashion_mnist, tfds_data

# Dense-gradient batches for mask updates come from their own stream, apart from the training order.
GRADIENT_SEED_OFFSET = 7919
#: Classes of the in-memory datasets: the model's output size never depends on the labels seen.
NUM_CLASSES = {"fashion_mnist": 10, "cifar10": 10, "cifar100": 100, "svhn_cropped": 10}


class ArrayData:
    """A dataset held as uint8 arrays; streams are epoch-indexed (`data.train_dataset`).

    Args:
      x_train, y_train: uint8 images (N, H, W, C) and int labels (N,).
      x_test, y_test: the same for the test split.
      x_val, y_val: held-out training examples for `validation_data` (None: no validation split).
      crop_padding: border of the training pad-and-crop ("constant" or "reflect").
      num_classes: classes of the dataset; None reads it from the largest
        label (only for arrays whose labels are known to be complete).

    Raises:
      DatasetError: a label outside [0, num_classes).
    """

    def __init__(
        self, x_train, y_train, x_test, y_test, x_val=None, y_val=None, crop_padding="constant", num_classes=None
    ):
        self.x_train, self.y_train, self.x_test, self.y_test = x_train, y_train, x_test, y_test
        self.x_val, self.y_val = x_val, y_val
        self.crop_padding = crop_padding
        self._num_classes = num_classes
        if num_classes is not None:
            for split, labels in (("train", y_train), ("test", y_test)):
                if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
                    raise data.DatasetError(
                        f"The {split} labels span [{labels.min()}, {labels.max()}], outside the dataset's "
                        f"[0, {num_classes}) classes (damaged label files)."
                    )

    @property
    def input_shape(self):
        """Shape of one input example, e.g. (28, 28, 1)."""
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self):
        """Number of classes."""
        if self._num_classes is not None:
            return self._num_classes
        return int(max(self.y_train.max(), self.y_test.max())) + 1

    @property
    def num_train_examples(self):
        """Training examples a run uses (after train_examples and the validation hold-out)."""
        return len(self.x_train)

    @property
    def test_labels(self):
        """The test labels, int array of shape (N,)."""
        return self.y_test

    def train_stream(self, batch_size, seed, start_epoch=0, num_epochs=None, augment=True):
        """Training batches from `start_epoch`; identical whether resumed there or run through."""
        return data.train_dataset(
            self.x_train, self.y_train, batch_size, seed=seed, augment=augment, start_epoch=start_epoch,
            num_epochs=num_epochs, crop_padding=self.crop_padding,
        )  # fmt: skip

    def gradient_stream(self, batch_size, seed):
        """Batches for the dense gradients of mask updates (an independent order)."""
        return data.train_dataset(
            self.x_train, self.y_train, batch_size, seed=seed + GRADIENT_SEED_OFFSET, crop_padding=self.crop_padding
        )

    def validation_data(self):
        """Batches of (images, labels) of the held-out examples, in order, unaugmented.

        Raises:
          ValueError: the source has no validation split.
        """
        if self.x_val is None:
            raise ValueError("This data source has no validation split (config.validation_examples=0).")
        return data.eval_dataset(self.x_val, self.y_val)

    def test_inputs(self):
        """Test images (batched, no labels), in the order of `test_labels`."""
        return data.eval_dataset(self.x_test, self.y_test).map(lambda x, y: x)

    def content_sha256(self):
        """SHA-256 of every array a run reads (training, validation and test images and labels, with shapes).

        The arrays, not the files: the same idx data gzipped or not gives the
        same digest, and any changed example or label a run uses changes it.
        """
        digest = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test):
            if array is None:
                digest.update(b"none;")
                continue
            array = np.ascontiguousarray(array)
            digest.update(f"{array.dtype.str}{array.shape};".encode())
            digest.update(memoryview(array).cast("B"))
        return digest.hexdigest()


class ImageNetData:
    """ImageNet-1k streamed from the prepared tfds `imagenet2012` (`tfds_data.imagenet_stream`).

    Training uses random-resized crops and flips; testing the 50,000
    validation images centre-cropped. A resumed run continues with a stream
    seeded by (seed, start epoch): deterministic, but not the batch order an
    uninterrupted run would have seen (a shuffle buffer over a repeated file
    stream cannot be fast-forwarded cheaply).

    Args:
      data_dir: tfds data folder ("" or None: $TFDS_DATA_DIR, ~/tensorflow_datasets).
      image_size: side of the square training and test images (224 in the papers).
      num_train_examples: examples that make one epoch (0: the whole training
        split); the stream still draws from every training example.
    """

    num_classes = 1000

    def __init__(self, data_dir=None, image_size=224, num_train_examples=0):
        self.data_dir = data_dir or None
        self.image_size = int(image_size)
        sizes = tfds_data.imagenet_split_sizes(self.data_dir)
        self._num_train = min(num_train_examples, sizes["train"]) if num_train_examples else sizes["train"]
        self._labels = None

    @property
    def input_shape(self):
        """Shape of one input example, e.g. (28, 28, 1)."""
        return (self.image_size, self.image_size, 3)

    @property
    def num_train_examples(self):
        """Training examples a run uses (after train_examples and the validation hold-out)."""
        return self._num_train

    @property
    def test_labels(self):
        """The test labels, int array of shape (N,)."""
        if self._labels is None:
            self._labels = np.asarray(tfds_data.imagenet_labels("validation", self.data_dir))
        return self._labels

    def _stream(self, split, batch_size, seed, training):
        return tfds_data.imagenet_stream(
            split, data_dir=self.data_dir, image_size=self.image_size, batch_size=batch_size, training=training, seed=seed
        )

    def train_stream(self, batch_size, seed, start_epoch=0, num_epochs=None, augment=True):
        """Endless augmented training batches (fit bounds the epochs by steps_per_epoch); `augment` is always on."""
        del num_epochs, augment  # the stream repeats; ImageNet training is always augmented
        return self._stream("train", batch_size, seed * 1_000_003 + start_epoch, training=True)

    def gradient_stream(self, batch_size, seed):
        """Batches of training data for dense-gradient growth (an endless, seeded stream)."""
        return self._stream("train", batch_size, seed + GRADIENT_SEED_OFFSET, training=True)

    def validation_data(self):
        """The held-out (x, y) examples, or None when there are none."""
        raise ValueError("ImageNet runs have no held-out training split here (config.validation_examples=0).")

    def test_inputs(self):
        """The test inputs (an array or a batched tf.data.Dataset)."""
        return self._stream("validation", 256, 0, training=False).map(lambda x, y: x)

    def content_sha256(self):
        """SHA-256 of the prepared dataset's `dataset_info.json` files (shard names, lengths, checksums).

        Hashing ~150 GB of shards per run would cost minutes; tfds' own
        description of what it prepared changes with any rebuilt split.
        """
        digest = hashlib.sha256()
        folder = os.path.join(tfds_data.tfds_data_dir(self.data_dir), "imagenet2012")
        for path in sorted(glob.glob(os.path.join(folder, "**", "dataset_info.json"), recursive=True)):
            with open(path, "rb") as f:
                digest.update(os.path.relpath(path, folder).encode() + b";" + f.read())
        return digest.hexdigest()


def data_source(config):
    """The `ArrayData` or `ImageNetData` that `config.dataset` names, read offline.

    Raises:
      MissingDatasetError: the dataset is not where the config says.
      DatasetError: a damaged data file (named) or labels outside the classes.
    """
    if config.dataset == "imagenet2012":
        return ImageNetData(config.data_dir or None, config.image_size, config.train_examples)
    x_train, y_train = data.load_split(config.dataset, "train", config.data_dir or None)
    x_test, y_test = data.load_split(config.dataset, "test", config.data_dir or None)
    x_val = y_val = None
    held_out = config.validation_examples
    if held_out:
        # The official scripts hold out the tail of the training split, in file order.
        if held_out >= len(x_train):
            raise ValueError(f"config.validation_examples={held_out} leaves no training examples of {len(x_train)}.")
        x_train, x_val = x_train[:-held_out], x_train[-held_out:]
        y_train, y_val = y_train[:-held_out], y_train[-held_out:]
    if config.train_examples:
        x_train, y_train = x_train[: config.train_examples], y_train[: config.train_examples]
    return ArrayData(
        x_train, y_train, x_test, y_test, x_val, y_val, crop_padding=config.crop_padding,
        num_classes=NUM_CLASSES[config.dataset],
    )  # fmt: skip


def data_identity(config, source):
    """What a run's data is: {"path": the resolved data folder, "sha256": `source.content_sha256()`}.

    Recorded in the workdir's run record so that a resume, or the recompute
    of a finished run, on other data is refused (`workdir.check_data`).

    Args:
      config: the run's config (`dataset`, `data_dir`).
      source: the `ArrayData` or `ImageNetData` that `data_source(config)` returned.
    """
    if config.dataset == "fashion_mnist":
        folder = config.data_dir or os.environ.get(fashion_mnist.ENV_VAR) or fashion_mnist.DEFAULT_DIR
    else:
        folder = tfds_data.tfds_data_dir(config.data_dir or None)
    return {"path": os.path.realpath(os.fspath(folder)), "sha256": source.content_sha256()}
