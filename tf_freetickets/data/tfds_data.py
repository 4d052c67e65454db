"""Datasets prepared ahead of time by tensorflow-datasets (tfds), read offline.

Nothing here downloads: every loader opens the dataset that `tfds build` has
already written under a data folder and raises `MissingDatasetError` (with a
one-line message saying what to do) when it is not there. Fashion-MNIST is the
exception: it comes from Debian's idx files (see `fashion_mnist.py`).

The data folder is the `data_dir` argument, else $TFDS_DATA_DIR, else
~/tensorflow_datasets; a dataset lives in `<data_dir>/<name>[/<config>]/<version>/`.
"""

import numbers
import os

import numpy as np
import tensorflow as tf

from tf_freetickets.data.fashion_mnist import DatasetError, MissingDatasetError, load_fashion_mnist

#: Datasets that `load_split` knows, each with its splits.
SPLITS = {
    "fashion_mnist": ("train", "test"),
    "cifar10": ("train", "test"),
    "cifar100": ("train", "test"),
    "svhn_cropped": ("train", "test"),
}

#: The 19 CIFAR-10-C corruptions of tfds' `cifar10_corrupted` configs (15 benchmark ones, then 4 extra).
CIFAR10_CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "defocus_blur",
    "frosted_glass_blur",
    "motion_blur",
    "zoom_blur",
    "snow",
    "frost",
    "fog",
    "brightness",
    "contrast",
    "elastic",
    "pixelate",
    "jpeg_compression",
    "gaussian_blur",
    "saturate",
    "spatter",
    "speckle_noise",
)
CIFAR10_CORRUPTION_SEVERITIES = (1, 2, 3, 4, 5)

#: Per-channel (mean, std) of CIFAR images scaled to [0, 1], as the official FreeTickets, CigL and
#: Divide-and-Co-training code normalise them (CIFAR-10's std is the widely copied (0.2023, 0.1994, 0.2010)).
CIFAR_CHANNEL_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
}

#: ImageNet channel statistics of images scaled to [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
IMAGENET_SPLITS = ("train", "validation")

TFDS_ENV_VAR = "TFDS_DATA_DIR"
DEFAULT_TFDS_DIR = "~/tensorflow_datasets"


def _tfds():
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("Reading CIFAR/SVHN/ImageNet needs tensorflow-datasets: pip install 'tf_freetickets[datasets]'.") from e
    return tfds


def tfds_data_dir(data_dir=None):
    """The tfds data folder used: `data_dir`, else $TFDS_DATA_DIR, else ~/tensorflow_datasets (user-expanded)."""
    return os.path.expanduser(os.fspath(data_dir or os.environ.get(TFDS_ENV_VAR) or DEFAULT_TFDS_DIR))


def _build_hint(name, folder):
    dataset = name.split("/")[0]
    if dataset == "imagenet2012":
        return (
            f"put ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar in {folder}/downloads/manual and run "
            f"`tfds build imagenet2012 --data_dir={folder}` (or build it elsewhere and copy {folder}/imagenet2012 "
            f"here), or pass --config.data_dir / set {TFDS_ENV_VAR} to the folder that holds it"
        )
    return (
        f"run `tfds build {name} --data_dir={folder}` on a machine with internet and copy {folder}/{dataset} "
        f"here, or pass --config.data_dir / set {TFDS_ENV_VAR} to the folder that holds it"
    )


def _prepared_builder(name, data_dir):
    """A tfds builder of `name` ("dataset" or "dataset/config") whose data is prepared in the data folder.

    Never downloads or prepares: raises MissingDatasetError when the prepared
    files (`<folder>/<name>/<version>/dataset_info.json` and shards) are absent.
    """
    tfds = _tfds()
    folder = tfds_data_dir(data_dir)
    builder = tfds.builder(name, data_dir=folder)
    if builder.is_prepared():
        return builder
    found = ""
    parent = os.path.dirname(os.fspath(builder.data_path))
    if os.path.isdir(parent):
        versions = sorted(v for v in os.listdir(parent) if os.path.isdir(os.path.join(parent, v)))
        if versions:
            found = f" (found only version(s) {', '.join(versions)} there, this tensorflow-datasets reads {builder.version})"
    raise MissingDatasetError(
        f"tfds dataset {name} {builder.version} is not prepared in {folder}{found}: {_build_hint(name, folder)}."
    )


def _read_all(builder, split, display_name):
    """Every example of `split` as (uint8 images (N, H, W, C), int64 labels (N,)), in file order."""
    if split not in builder.info.splits:
        raise ValueError(
            f"{display_name} prepared in {builder.data_dir} has no split {split!r}; it has {sorted(builder.info.splits)}."
        )
    tfds = _tfds()
    try:
        ds = builder.as_dataset(split=split, batch_size=-1, as_supervised=True, shuffle_files=False)
        images, labels = tfds.as_numpy(ds)
    except tf.errors.OpError as error:
        first = str(error).strip().splitlines()[0][:300]
        raise DatasetError(
            f"{display_name}/{split} prepared in {builder.data_dir} cannot be read ({first}); prepare it again."
        ) from None
    images = np.asarray(images, dtype=np.uint8)
    labels = np.asarray(labels, dtype=np.int64)
    if images.ndim != 4 or len(images) != len(labels):
        raise DatasetError(f"{display_name}/{split}: unexpected shapes images {images.shape}, labels {labels.shape}.")
    label_feature = builder.info.features["label"] if "label" in builder.info.features else None
    num_classes = getattr(label_feature, "num_classes", None)
    if num_classes and labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(
            f"{display_name}/{split} in {builder.data_dir} holds labels in [{labels.min()}, {labels.max()}] but has "
            f"{num_classes} classes (damaged files: prepare it again)."
        )
    return images, labels


def load_split(name, split, data_dir=None):
    """Loads a whole dataset split as numpy arrays, offline.

    Args:
      name: "fashion_mnist", "cifar10", "cifar100" or "svhn_cropped".
      split: "train" or "test".
      data_dir: for "fashion_mnist", the folder of the four idx files (passed to
        `load_fashion_mnist`, which does not use tfds); for the others, the tfds
        data folder holding the prepared dataset (`<data_dir>/<name>/<version>/`),
        defaulting to $TFDS_DATA_DIR, then ~/tensorflow_datasets.

    Returns:
      (images, labels): uint8 array (N, H, W, C), pixel values 0..255 (CIFAR and
      SVHN: (N, 32, 32, 3); Fashion-MNIST: (N, 28, 28, 1)), and int64 array (N,)
      of class indices, in the order of the prepared files.

    Raises:
      MissingDatasetError: the dataset is not prepared in the data folder; the
        one-line message names the dataset, the folder and how to prepare it.
        Nothing is ever downloaded.
      ValueError: unknown dataset name or split.
    """
    if name not in SPLITS:
        raise ValueError(f"Unknown dataset {name!r}; load_split knows {sorted(SPLITS)}.")
    if split not in SPLITS[name]:
        raise ValueError(f"Unknown split {split!r} of {name}; use one of {list(SPLITS[name])}.")
    if name == "fashion_mnist":
        return load_fashion_mnist(split, data_dir)
    return _read_all(_prepared_builder(name, data_dir), split, name)


def load_cifar10_corrupted(corruption, severity, data_dir=None):
    """Loads one CIFAR-10-C test set (10,000 corrupted CIFAR-10 test images), offline.

    Reads tfds' `cifar10_corrupted/{corruption}_{severity}` prepared in the data
    folder (`<data_dir>/cifar10_corrupted/{corruption}_{severity}/<version>/`).

    Args:
      corruption: one of `CIFAR10_CORRUPTIONS` (tfds names, e.g. "gaussian_noise",
        "frosted_glass_blur", "elastic").
      severity: integer 1 (mildest) to 5.
      data_dir: tfds data folder; defaults to $TFDS_DATA_DIR, then ~/tensorflow_datasets.

    Returns:
      (images, labels): uint8 array (N, 32, 32, 3) and int64 array (N,) of
      CIFAR-10 class indices (same classes as `load_split("cifar10", ...)`).

    Raises:
      ValueError: unknown corruption or severity outside 1..5.
      MissingDatasetError: that corruption/severity is not prepared in the data folder.
    """
    if corruption not in CIFAR10_CORRUPTIONS:
        raise ValueError(f"Unknown CIFAR-10-C corruption {corruption!r}; use one of {list(CIFAR10_CORRUPTIONS)}.")
    if isinstance(severity, bool) or not isinstance(severity, numbers.Integral) or not 1 <= severity <= 5:
        raise ValueError(f"CIFAR-10-C severity must be an integer from 1 to 5, got {severity!r}.")
    name = f"cifar10_corrupted/{corruption}_{int(severity)}"
    return _read_all(_prepared_builder(name, data_dir), "test", name)


def _random_resized_crop(encoded, image_size, seed):
    """Decodes the JPEG window of a random crop (8%-100% of the area, aspect 3/4-4/3) and resizes it."""
    shape = tf.image.extract_jpeg_shape(encoded)
    begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
        shape,
        bounding_boxes=tf.zeros([1, 0, 4], tf.float32),
        seed=seed,
        min_object_covered=0.0,
        aspect_ratio_range=(3.0 / 4.0, 4.0 / 3.0),
        area_range=(0.08, 1.0),
        max_attempts=10,
        use_image_if_no_bounding_boxes=True,
    )
    window = tf.stack([begin[0], begin[1], size[0], size[1]])
    image = tf.io.decode_and_crop_jpeg(encoded, window, channels=3)
    return tf.image.resize(image, [image_size, image_size], method="bilinear")


def _resize_center_crop(encoded, image_size):
    """Decodes, resizes the shorter side to image_size * 256 / 224, and takes the central image_size square."""
    image = tf.io.decode_jpeg(encoded, channels=3)
    resize = round(image_size * 256 / 224)
    shape = tf.cast(tf.shape(image)[:2], tf.float32)
    scale = resize / tf.reduce_min(shape)
    new_shape = tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), image_size)
    image = tf.image.resize(image, new_shape, method="bilinear")
    top = (new_shape[0] - image_size) // 2
    left = (new_shape[1] - image_size) // 2
    return tf.slice(image, [top, left, 0], [image_size, image_size, 3])


def _normalise_imagenet(image):
    image = tf.cast(image, tf.float32) / 255.0
    return (image - tf.constant(IMAGENET_MEAN, tf.float32)) / tf.constant(IMAGENET_STD, tf.float32)


def imagenet_stream(
    split,
    data_dir=None,
    image_size=224,
    batch_size=256,
    training=None,
    seed=0,
    shuffle_buffer=10_000,
    drop_remainder=None,
):
    """A tf.data pipeline over ImageNet-1k (tfds `imagenet2012`) prepared in the data folder.

    ImageNet does not fit in memory, so this streams the prepared TFRecords:

    - training: files and examples shuffled (from `seed`), repeated forever;
      each image gets a random-resized crop (8%-100% of the area, aspect ratio
      3/4 to 4/3, decoded from the JPEG window only) resized to
      `image_size` x `image_size`, and a random horizontal flip. The crop and
      flip of the k-th example of the stream are stateless functions of
      (seed, k). Pass `steps_per_epoch` to `model.fit`.
    - evaluation: one pass in file order; the shorter side is resized to
      `image_size * 256 / 224` (256 for 224) and the central `image_size` square kept.

    Pixels are scaled to [0, 1] and normalised per channel with `IMAGENET_MEAN`
    and `IMAGENET_STD`.

    Args:
      split: "train" or "validation" (the 50,000 labelled validation images).
      data_dir: tfds data folder holding `imagenet2012/<version>/`; defaults to
        $TFDS_DATA_DIR, then ~/tensorflow_datasets.
      image_size: side of the square output images.
      batch_size: examples per batch.
      training: augment, shuffle and repeat; defaults to `split == "train"`.
      seed: seeds file order, shuffling and augmentation.
      shuffle_buffer: examples in the shuffle buffer (training only).
      drop_remainder: drop a partial last batch; defaults to `training`.

    Returns:
      tf.data.Dataset of (images float32 (batch, image_size, image_size, 3),
      labels int64 (batch,)) with labels 0..999.

    Raises:
      ValueError: unknown split.
      MissingDatasetError: imagenet2012 is not prepared in the data folder.
    """
    if split not in IMAGENET_SPLITS:
        raise ValueError(f"Unknown ImageNet split {split!r}; use one of {list(IMAGENET_SPLITS)}.")
    training = split == "train" if training is None else bool(training)
    drop_remainder = training if drop_remainder is None else bool(drop_remainder)
    builder = _prepared_builder("imagenet2012", data_dir)
    if split not in builder.info.splits:
        raise ValueError(f"imagenet2012 prepared in {builder.data_dir} has no split {split!r}.")
    tfds = _tfds()
    read_config = tfds.ReadConfig(shuffle_seed=seed) if training else None
    ds = builder.as_dataset(
        split=split,
        shuffle_files=training,
        decoders={"image": tfds.decode.SkipDecoding()},
        read_config=read_config,
    )
    ds = ds.map(lambda ex: (ex["image"], ex["label"]), num_parallel_calls=tf.data.AUTOTUNE)

    if training:
        ds = ds.shuffle(shuffle_buffer, seed=seed).repeat()
        key = tf.constant(int(seed), tf.int64)

        def prepare(index, example):
            encoded, label = example
            crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(tf.stack([key, index]), 2))
            image = _random_resized_crop(encoded, image_size, crop_seed)
            image = tf.image.stateless_random_flip_left_right(image, flip_seed)
            return _normalise_imagenet(image), label

        ds = ds.enumerate().map(prepare, num_parallel_calls=tf.data.AUTOTUNE)
    else:
        ds = ds.map(
            lambda encoded, label: (_normalise_imagenet(_resize_center_crop(encoded, image_size)), label),
            num_parallel_calls=tf.data.AUTOTUNE,
        )
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


def imagenet_split_sizes(data_dir=None):
    """{split: number of examples} of the prepared `imagenet2012` (read from its dataset_info, no image read).

    Raises:
      MissingDatasetError: imagenet2012 is not prepared in the data folder.
    """
    builder = _prepared_builder("imagenet2012", data_dir)
    return {name: int(info.num_examples) for name, info in builder.info.splits.items()}


def imagenet_labels(split, data_dir=None):
    """The int64 labels (N,) of an ImageNet split in file order, the order `imagenet_stream(split, training=False)` yields.

    Reads the label feature only: the JPEGs are skipped, not decoded.

    Raises:
      ValueError: unknown split.
      MissingDatasetError: imagenet2012 is not prepared in the data folder.
    """
    if split not in IMAGENET_SPLITS:
        raise ValueError(f"Unknown ImageNet split {split!r}; use one of {list(IMAGENET_SPLITS)}.")
    builder = _prepared_builder("imagenet2012", data_dir)
    tfds = _tfds()
    ds = builder.as_dataset(split=split, shuffle_files=False, decoders={"image": tfds.decode.SkipDecoding()})
    labels = ds.map(lambda example: example["label"]).batch(4096)
    return np.concatenate([np.asarray(batch, dtype=np.int64) for batch in labels.as_numpy_iterator()] or [np.zeros(0, np.int64)])
