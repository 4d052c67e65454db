"""Out-of-distribution image sets for a Fashion-MNIST model, made offline by this project's code.

Every set is uint8 (N, 28, 28, 1), the layout of `load_fashion_mnist`, so it
goes through the same pipelines (`eval_dataset`) and models. The sets follow the
usual OoD-detection conventions for (Fashion-)MNIST models (e.g. Hendrycks &
Gimpel 2017; Lakshminarayanan et al. 2017, who test Fashion-MNIST/MNIST models
on other digit/letter sets and on noise): a *far* natural set of handwritten
digits (scikit-learn's bundled UCI digits, upsampled), two synthetic noise
sets (uniform and Gaussian pixel noise) and a *near*, image-like set of
grayscale patches cut from the two photographs scikit-learn ships
(`natural_patches`: natural-image statistics, not noise). Nothing is downloaded.
"""

import functools
import os

import numpy as np
import tensorflow as tf

#: Image shape of the Fashion-MNIST-like sets.
IMAGE_SHAPE = (28, 28, 1)

#: Images in scikit-learn's bundled digits set (UCI optical recognition of handwritten digits, test part).
NUM_SKLEARN_DIGITS = 1797

# Salts that give each noise set its own random stream for one seed.
_UNIFORM_SALT = 1
_GAUSSIAN_SALT = 2
_PATCHES_SALT = 3

#: The photographs scikit-learn ships in sklearn/datasets/images (`load_sample_images`), both 427x640 RGB.
SAMPLE_PHOTOS = ("china.jpg", "flower.jpg")

#: Patch side lengths cut from the photographs: 28 * k pixels for k in 2..8 (56..224), block-averaged to 28x28.
PATCH_SCALES = tuple(range(2, 9))

# ITU-R BT.601 luma weights (what PIL's convert("L") and tf.image.rgb_to_grayscale use).
_LUMA = np.array([0.299, 0.587, 0.114])


def resize_to(images, size, method="bilinear"):
    """Resizes a uint8 image array (N, H, W, C) to (N, size[0], size[1], C) with `tf.image.resize`.

    Args:
      images: uint8 (or any real) array (N, H, W, C) with values in 0..255.
      size: (height, width), or one int for a square.
      method: a `tf.image.resize` method ("bilinear", "area", "nearest", ...).
        Bilinear uses half-pixel centres (TF2), so a k-times upsampled pixel's
        block averages back to the pixel.

    Returns:
      uint8 array (N, height, width, C), rounded and clipped to 0..255.
    """
    if isinstance(size, (int, np.integer)):
        size = (int(size), int(size))
    images = np.asarray(images)
    if images.ndim != 4:
        raise ValueError(f"resize_to takes an image array of shape (N, H, W, C), got shape {images.shape}.")
    out = tf.image.resize(tf.constant(images, tf.float32), tuple(size), method=method).numpy()
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _check_num(num):
    if isinstance(num, bool) or not isinstance(num, (int, np.integer)) or num < 0:
        raise ValueError(f"num must be a non-negative integer, got {num!r}.")
    return int(num)


def digits_ood(num=None, invert=False, stretch=False):
    """scikit-learn's bundled 8x8 handwritten digits as Fashion-MNIST-shaped OoD images.

    `sklearn.datasets.load_digits` (1,797 images, 8x8, values 0..16 counting the
    "on" pixels of 4x4 blocks, ink high) is scaled to 0..255 (value * 255 / 16),
    bilinearly upsampled to 28x28 by `resize_to` and returned as uint8
    (num, 28, 28, 1). Like Fashion-MNIST (bright object on a black background),
    the digits are bright ink on black, and their mean intensity (about 78 of
    255) is close to Fashion-MNIST's (about 73), so by default no inversion and
    no contrast change are applied.

    Args:
      num: how many digits, the first `num` in scikit-learn's order; None for all 1,797.
      invert: return 255 - image (dark ink on white), a harder-to-miss shift.
      stretch: per image, stretch min..max to 0..255 (contrast matching for
        digits whose darkest pixel is not 0 or brightest not 255).

    Returns:
      uint8 array (num, 28, 28, 1).

    Raises:
      ValueError: num is negative, not an integer, or above 1,797.
    """
    from sklearn.datasets import load_digits

    images = load_digits().images  # (1797, 8, 8) float64, 0..16
    if num is not None:
        num = _check_num(num)
        if num > len(images):
            raise ValueError(f"scikit-learn's digits set has {len(images)} images; asked for {num}.")
        images = images[:num]
    scaled = images[..., None] * (255.0 / 16.0)
    out = resize_to(scaled, IMAGE_SHAPE[:2], method="bilinear").astype(np.float64)
    if stretch:
        low = out.min(axis=(1, 2, 3), keepdims=True)
        high = out.max(axis=(1, 2, 3), keepdims=True)
        out = (out - low) * 255.0 / np.maximum(high - low, 1.0)
    if invert:
        out = 255.0 - out
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def mnist_like_noise(num, seed=0, shape=IMAGE_SHAPE):
    """Uniform pixel noise images: every pixel independently uniform over 0..255.

    The "uniform noise" OoD set of the MNIST/Fashion-MNIST OoD literature.

    Args:
      num: number of images.
      seed: seeds a numpy Generator (salted, so the Gaussian set of the same
        seed is independent); same seed, same images.
      shape: (H, W, C) of one image; Fashion-MNIST's (28, 28, 1) by default.

    Returns:
      uint8 array (num, *shape).
    """
    num = _check_num(num)
    rng = np.random.default_rng([int(seed), _UNIFORM_SALT])
    return rng.integers(0, 256, size=(num, *shape), dtype=np.uint8)


def gaussian_noise_images(num, seed=0, mean=128.0, std=64.0, shape=IMAGE_SHAPE):
    """Gaussian pixel noise images: every pixel N(mean, std^2), rounded and clipped to 0..255.

    The "Gaussian noise" OoD set of the MNIST/Fashion-MNIST OoD literature;
    N(128, 64^2) by default (about 4.6% of the pixels are clipped at 0 or 255).

    Args:
      num: number of images.
      seed: seeds a numpy Generator (salted, independent of `mnist_like_noise`).
      mean, std: pixel mean and standard deviation in 0..255 units.
      shape: (H, W, C) of one image; (28, 28, 1) by default.

    Returns:
      uint8 array (num, *shape).
    """
    num = _check_num(num)
    rng = np.random.default_rng([int(seed), _GAUSSIAN_SALT])
    values = mean + std * rng.standard_normal(size=(num, *shape))
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def _sample_photos_gray():
    """scikit-learn's sample photographs as float64 grayscale arrays (H, W), decoded by TensorFlow from the local files."""
    import sklearn.datasets

    folder = os.path.join(os.path.dirname(sklearn.datasets.__file__), "images")
    photos = []
    for name in SAMPLE_PHOTOS:
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"scikit-learn's sample photograph {path} is missing; natural_patches needs it.")
        rgb = tf.io.decode_jpeg(tf.io.read_file(path), channels=3, dct_method="INTEGER_ACCURATE").numpy()
        photos.append(rgb.astype(np.float64) @ _LUMA)
    return tuple(photos)


def natural_patches(num, seed=0, min_std=8.0, stretch=True, return_boxes=False):
    """Grayscale 28x28 patches of natural photographs: a near, image-like OoD set for Fashion-MNIST.

    The two photographs scikit-learn ships (`SAMPLE_PHOTOS`, the images of
    `sklearn.datasets.load_sample_images`, read from the installed package and
    decoded with `tf.io.decode_jpeg`, which gives PIL's pixels for these files)
    are turned to grayscale with the BT.601 luma weights. Each patch draws,
    from a numpy Generator seeded by (seed, salt): a photograph, a scale k in
    `PATCH_SCALES` and a top-left corner, cuts the (28k x 28k) square there
    and averages each k x k block (exact area downsampling to 28 x 28). A patch
    whose standard deviation is below `min_std` grey levels (flat sky or
    shadow) is drawn again, so every patch shows structure. With `stretch`,
    each patch's min..max is mapped to 0..255: Fashion-MNIST images span that
    range (black background, bright object) and the evaluation divides uint8
    pixels by 255, so these get the same input range. Neighbouring pixels are
    strongly correlated (about 0.9 over the set), unlike the noise sets (0).

    Args:
      num: number of patches.
      seed: same seed, same patches (the draw does not depend on `num`: the
        first k patches of a larger set are the k patches of a smaller one).
      min_std: patches with a lower pixel standard deviation (0..255 units,
        before stretching) are redrawn; 0 keeps every draw.
      stretch: map each patch's min..max to 0..255; False keeps the photograph's grey levels.
      return_boxes: also return the crops, an int64 array (num, 4) of
        (photograph index in `SAMPLE_PHOTOS`, top, left, side).

    Returns:
      uint8 array (num, 28, 28, 1), and the boxes when `return_boxes`.

    Raises:
      ValueError: num negative or not an integer, or min_std negative.
    """
    num = _check_num(num)
    if isinstance(min_std, bool) or not isinstance(min_std, (int, float, np.integer, np.floating)) or not min_std >= 0:
        raise ValueError(f"min_std must be a non-negative number of grey levels, got {min_std!r}.")
    photos = _sample_photos_gray()
    rng = np.random.default_rng([int(seed), _PATCHES_SALT])
    side = IMAGE_SHAPE[0]
    patches, boxes = np.zeros((num, side, side)), np.zeros((num, 4), np.int64)
    count, draws = 0, 0
    while count < num:
        draws += 1
        if draws > 100 * num + 1000:  # unreachable with the shipped photos; a guard against a changed file
            raise ValueError(f"Only {count} of {num} patches reached min_std={min_std} in {draws - 1} draws; lower min_std.")
        index = int(rng.integers(len(photos)))
        scale = int(rng.choice(PATCH_SCALES))
        size = side * scale
        height, width = photos[index].shape
        top, left = int(rng.integers(height - size + 1)), int(rng.integers(width - size + 1))
        crop = photos[index][top : top + size, left : left + size]
        patch = crop.reshape(side, scale, side, scale).mean(axis=(1, 3))
        if patch.std() < min_std:
            continue
        if stretch:
            low, high = patch.min(), patch.max()
            patch = (patch - low) * (255.0 / max(high - low, 1e-12))
        patches[count], boxes[count] = patch, (index, top, left, size)
        count += 1
    images = np.clip(np.rint(patches), 0, 255).astype(np.uint8)[..., None]
    return (images, boxes) if return_boxes else images


#: The names of `ood_sets`, in order (a study records them: its mean OoD figures are over these).
OOD_SET_NAMES = ("digits", "uniform_noise", "gaussian_noise", "natural_patches")


def ood_sets(num=2000, seed=0):
    """The OoD sets for a Fashion-MNIST model, by name, each uint8 (n, 28, 28, 1).

    Returns a dict:
      "digits": `digits_ood(min(num, 1797))` (scikit-learn's set holds 1,797
        images, so it is capped there);
      "uniform_noise": `mnist_like_noise(num, seed)`;
      "gaussian_noise": `gaussian_noise_images(num, seed)`;
      "natural_patches": `natural_patches(num, seed)` (near OoD: photograph
        patches; added after the first three, whose images are unchanged).

    Use them with `tft.metrics.ood_detection`, the Fashion-MNIST test set as the
    in-distribution side.
    """
    num = _check_num(num)
    return {
        "digits": digits_ood(min(num, NUM_SKLEARN_DIGITS)),
        "uniform_noise": mnist_like_noise(num, seed),
        "gaussian_noise": gaussian_noise_images(num, seed),
        "natural_patches": natural_patches(num, seed),
    }


#: Natural OoD datasets of FreeTickets' CIFAR evaluation, read from prepared tfds data when present.
NATURAL_OOD = {"cifar10": ("svhn_cropped", "cifar100"), "cifar100": ("svhn_cropped", "cifar10"), "svhn_cropped": ("cifar10",)}


def ood_sets_for(dataset, num=2000, seed=0, data_dir=None, log=print):
    """The OoD sets to test a model trained on `dataset` against, by name, uint8 like its images.

    - "fashion_mnist": `ood_sets(num, seed)` (digits, uniform and Gaussian
      noise, natural photograph patches; offline).
    - "cifar10", "cifar100", "svhn_cropped": uniform and Gaussian noise at
      32x32x3, plus the natural sets of `NATURAL_OOD` (FreeTickets tests
      CIFAR models on SVHN and the other CIFAR) from the test split of each
      dataset prepared in the tfds folder; one that is not prepared is skipped
      with a line through `log` saying so.

    Args:
      dataset: the in-distribution dataset name.
      num: images per set (natural sets: their first `num` test images).
      seed: seeds the noise sets.
      data_dir: tfds data folder of the natural sets.
      log: where skip notices go.

    Raises:
      ValueError: a dataset without OoD sets here.
    """
    if dataset == "fashion_mnist":
        return ood_sets(num, seed)
    if dataset not in NATURAL_OOD:
        raise ValueError(f"No OoD sets for {dataset!r}; known: {['fashion_mnist', *NATURAL_OOD]}.")
    from tf_freetickets.data.fashion_mnist import MissingDatasetError
    from tf_freetickets.data.tfds_data import load_split

    shape = (32, 32, 3)
    sets = {}
    for name in NATURAL_OOD[dataset]:
        try:
            sets[name] = load_split(name, "test", data_dir)[0][: _check_num(num)]
        except MissingDatasetError as error:
            log(f"OoD set {name} skipped: {error}")
    sets["uniform_noise"] = mnist_like_noise(num, seed, shape=shape)
    sets["gaussian_noise"] = gaussian_noise_images(num, seed, shape=shape)
    return sets
