"""Fashion-MNIST from local idx files (Debian's `dataset-fashion-mnist`), no download."""

import gzip
import os
import zlib

import numpy as np

#: Where Debian's `dataset-fashion-mnist` package installs the idx files.
DEFAULT_DIR = "/usr/share/datasets/fashion-mnist"
ENV_VAR = "TFT_FASHION_MNIST_DIR"

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}


class MissingDatasetError(FileNotFoundError):
    """A dataset's files are not where the loader looks; the message says what to do."""


class DatasetError(ValueError):
    """A dataset file is unreadable or holds values the loader cannot accept; the message names the file."""


#: Fashion-MNIST classes; a label outside [0, NUM_CLASSES) means a damaged label file.
NUM_CLASSES = 10


def _find(directory, stem):
    for name in (stem + ".gz", stem):
        path = os.path.join(directory, name)
        if os.path.exists(path):
            return path
    raise MissingDatasetError(
        f"Fashion-MNIST file {stem}(.gz) not found in {directory}. Install Debian's package "
        f"(apt-get install dataset-fashion-mnist) or put the four idx files there and pass "
        f"data_dir= (or set {ENV_VAR})."
    )


def _read_idx(path, magic):
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as error:
        raise DatasetError(f"{path} cannot be read ({error}); reinstall the dataset.") from None
    found = int.from_bytes(data[:4], "big") if len(data) >= 4 else None
    if found != magic:
        shown = "none, the file is shorter than 4 bytes" if found is None else f"{found:#x}"
        raise DatasetError(f"{path} is not an idx file of the expected kind (magic {shown}, expected {magic:#x}).")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise DatasetError(f"{path} is truncated inside its header.")
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(dims)):
        raise DatasetError(f"{path} is truncated or padded: {array.size} values for shape {dims}.")
    return array.reshape(dims)


def load_fashion_mnist(split="train", data_dir=None):
    """Loads a Fashion-MNIST split as numpy arrays.

    Args:
      split: "train" (60,000 images) or "test" (10,000 images).
      data_dir: folder holding the idx files (gzipped or not); defaults to
        $TFT_FASHION_MNIST_DIR, then Debian's /usr/share/datasets/fashion-mnist.

    Returns:
      (images, labels): uint8 array (N, 28, 28, 1) and int64 array (N,).

    Raises:
      MissingDatasetError: the files are absent; the message names the folder
        and the package to install.
      DatasetError: a file is truncated, not gzip/idx, of the wrong kind, or
        holds a label outside [0, 10) (the file is named).
      ValueError: unknown split.
    """
    if split not in _FILES:
        raise ValueError(f"Unknown Fashion-MNIST split {split!r}; use 'train' or 'test'.")
    directory = data_dir or os.environ.get(ENV_VAR) or DEFAULT_DIR
    image_stem, label_stem = _FILES[split]
    images = _read_idx(_find(directory, image_stem), 0x00000803)
    label_file = _find(directory, label_stem)
    labels = _read_idx(label_file, 0x00000801)
    if images.ndim != 3 or labels.ndim != 1:
        raise DatasetError(f"{directory}: split {split!r} has images of shape {images.shape} and labels of shape {labels.shape}.")
    if len(images) != len(labels):
        raise DatasetError(f"{directory}: {len(images)} images but {len(labels)} labels in split {split!r}.")
    if labels.size and labels.max() >= NUM_CLASSES:
        position = int(np.argmax(labels >= NUM_CLASSES))
        raise DatasetError(
            f"{label_file} holds label {int(labels[position])} at position {position}; Fashion-MNIST labels are in "
            f"[0, {NUM_CLASSES}) (a damaged file: reinstall the dataset)."
        )
    return images[..., None], labels.astype(np.int64)
