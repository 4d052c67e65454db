"""CIFAR-10-C style image corruptions for uint8 image arrays, computed offline.

Follows the corruption families of Hendrycks & Dietterich, "Benchmarking Neural
Network Robustness to Common Corruptions and Perturbations" (ICLR 2019): every
corruption has five severities, each a fixed parameter (documented in the
corruption's docstring and in `SEVERITY_PARAMETERS`). Where a CIFAR-10-C
parameter table suits 28x28 and 32x32 images and is monotone in damage, its
published values are used; where this module's formulation differs (anti-aliased
disk kernel, monotone saturation, elastic field, fog), the table is this
module's own, chosen so that the damage grows with the severity.

The code works on whole arrays (N, H, W, C) with numpy, scipy.ndimage and
TensorFlow image ops; no per-pixel Python loops. Images are processed in float
[0, 1] and returned rounded and clipped to uint8.

Randomness: `corrupt(images, name, severity, seed)` draws from a numpy
Generator seeded with (seed, corruption index), not with the severity, so the
five severities of one corruption share the same random draws (common random
numbers: the same noise pattern, scaled) and the output is a deterministic
function of (images, name, severity, seed).
"""

import numpy as np
import tensorflow as tf
from scipy import ndimage

CORRUPTIONS = (
    "gaussian_noise",
    "shot_noise",
    "impulse_noise",
    "speckle_noise",
    "gaussian_blur",
    "defocus_blur",
    "elastic_transform",
    "contrast",
    "brightness",
    "saturate",
    "fog",
    "pixelate",
    "jpeg_compression",
)

#: Corruptions that need three (RGB) channels; left out for grayscale images.
RGB_ONLY = ("saturate",)

#: Severity -> parameter tables, index 0 is severity 1. Meanings in each function's docstring.
SEVERITY_PARAMETERS = {
    "gaussian_noise": (0.04, 0.06, 0.08, 0.09, 0.10),
    "shot_noise": (500.0, 250.0, 100.0, 75.0, 50.0),
    "impulse_noise": (0.01, 0.02, 0.03, 0.05, 0.07),
    "speckle_noise": (0.06, 0.10, 0.12, 0.16, 0.20),
    "gaussian_blur": (0.4, 0.6, 0.7, 0.8, 1.0),
    "defocus_blur": (0.6, 0.8, 1.0, 1.5, 2.0),
    "elastic_transform": (0.6, 0.9, 1.2, 1.6, 2.0),
    "contrast": (0.75, 0.5, 0.4, 0.3, 0.15),
    "brightness": (0.05, 0.1, 0.15, 0.2, 0.3),
    "saturate": ((1.5, 0.0), (2.0, 0.0), (2.5, 0.1), (3.0, 0.2), (4.0, 0.3)),
    "fog": ((0.2, 3.0), (0.5, 3.0), (0.75, 2.5), (1.0, 2.0), (1.5, 1.75)),
    "pixelate": (0.95, 0.9, 0.85, 0.75, 0.65),
    "jpeg_compression": (80, 65, 58, 50, 40),
}

_ELASTIC_SMOOTHING = 3.0  # pixels; Gaussian smoothing of the elastic displacement field


# --------------------------------------------------------------------------- noise


def _gaussian_noise(x, std, rng):
    """Additive Gaussian noise: x + N(0, std^2), std in [0, 1] units.

    Table (CIFAR-10-C): std = 0.04, 0.06, 0.08, 0.09, 0.10.
    """
    return x + rng.standard_normal(x.shape, dtype=np.float32) * np.float32(std)


def _shot_noise(x, photons, rng):
    """Poisson (shot) noise: Poisson(x * photons) / photons; fewer photons, more noise.

    Table (CIFAR-10-C): photons = 500, 250, 100, 75, 50.
    """
    return rng.poisson(x * photons).astype(np.float32) / np.float32(photons)


def _impulse_noise(x, amount, rng):
    """Salt-and-pepper noise: each value set to 0 with prob. amount/2, to 1 with prob. amount/2.

    Table (CIFAR-10-C): amount = 0.01, 0.02, 0.03, 0.05, 0.07. Drawn per value
    (per pixel and channel); with a shared draw u, the pixels hit at a lower
    severity are also hit at every higher one.
    """
    u = rng.random(x.shape, dtype=np.float32)
    x = np.where(u < amount / 2, np.float32(0.0), x)
    return np.where((u >= amount / 2) & (u < amount), np.float32(1.0), x)


def _speckle_noise(x, std, rng):
    """Multiplicative (speckle) noise: x + x * N(0, std^2).

    Table (CIFAR-10-C): std = 0.06, 0.10, 0.12, 0.16, 0.20.
    """
    return x + x * rng.standard_normal(x.shape, dtype=np.float32) * np.float32(std)


# --------------------------------------------------------------------------- blur


def _gaussian_blur(x, sigma, rng):
    """Gaussian blur of each image and channel, sigma in pixels (reflecting borders).

    Table (CIFAR-10-C): sigma = 0.4, 0.6, 0.7, 0.8, 1.0.
    """
    del rng
    return ndimage.gaussian_filter(x, sigma=(0, sigma, sigma, 0), mode="reflect")


def disk_kernel(radius, supersample=16):
    """Normalised, anti-aliased disk (defocus / pillbox) kernel of the given radius in pixels.

    Each tap is the fraction of its pixel square covered by the disk, measured on
    a `supersample` x `supersample` sub-pixel grid, so the kernel grows smoothly
    with the radius (a radius below 0.5 is the identity). Returns a float32
    (2k+1, 2k+1) array summing to 1, k = ceil(radius - 0.5).
    """
    k = max(int(np.ceil(radius - 0.5)), 0)
    offsets = (np.arange(supersample, dtype=np.float64) + 0.5) / supersample - 0.5
    centres = np.arange(-k, k + 1, dtype=np.float64)
    sub = (centres[:, None] + offsets[None, :]).reshape(-1)  # sub-pixel coordinates, grouped per tap
    inside = (sub[:, None] ** 2 + sub[None, :] ** 2) <= radius**2
    weights = inside.reshape(2 * k + 1, supersample, 2 * k + 1, supersample).mean(axis=(1, 3))
    return (weights / weights.sum()).astype(np.float32)


def _defocus_blur(x, radius, rng):
    """Defocus blur: convolution with an anti-aliased disk of the given radius in pixels.

    Table (this module's; CIFAR-10-C's disk radii 0.3-1.5 with an extra
    Gaussian "alias" blur become, with an anti-aliased disk, radii):
    radius = 0.6, 0.8, 1.0, 1.5, 2.0.
    """
    del rng
    kernel = disk_kernel(radius)
    return ndimage.convolve(x, kernel[None, :, :, None], mode="reflect")


def _elastic_transform(x, displacement, rng):
    """Elastic deformation (Simard et al. 2003): resample along a smooth random displacement field.

    Per image, a field of U(-1, 1) values for the row and column shift is
    smoothed by a Gaussian (sigma 3 pixels), rescaled to a root-mean-square
    length of one pixel and multiplied by `displacement` (pixels); pixels are
    resampled bilinearly, reflecting at the border; all channels share the
    field. CIFAR-10-C adds an affine jitter, left out here.
    Table (this module's): RMS displacement = 0.6, 0.9, 1.2, 1.6, 2.0 pixels.
    """
    n, h, w, c = x.shape
    field = rng.uniform(-1.0, 1.0, size=(n, h, w, 2)).astype(np.float32)
    field = ndimage.gaussian_filter(field, sigma=(0, _ELASTIC_SMOOTHING, _ELASTIC_SMOOTHING, 0), mode="reflect")
    rms = np.sqrt(np.mean(np.sum(field**2, axis=-1), axis=(1, 2), keepdims=True))[..., None]
    field = field / np.maximum(rms, 1e-12) * np.float32(displacement)
    grid_n, grid_h, grid_w, grid_c = np.meshgrid(
        np.arange(n, dtype=np.float32),
        np.arange(h, dtype=np.float32),
        np.arange(w, dtype=np.float32),
        np.arange(c, dtype=np.float32),
        indexing="ij",
    )
    coordinates = np.stack([grid_n, grid_h + field[..., :1], grid_w + field[..., 1:], grid_c])
    return ndimage.map_coordinates(x, coordinates, order=1, mode="reflect")


# --------------------------------------------------------------------------- photometric


def _contrast(x, factor, rng):
    """Contrast reduction towards each image's per-channel mean: (x - mean) * factor + mean.

    Table (CIFAR-10-C): factor = 0.75, 0.5, 0.4, 0.3, 0.15.
    """
    del rng
    mean = x.mean(axis=(1, 2), keepdims=True)
    return (x - mean) * np.float32(factor) + mean


def _brightness(x, shift, rng):
    """Brightness: adds `shift` to the HSV value channel, clipped to [0, 1].

    For grayscale (or any channel count but 3) the value channel is the image
    itself, so it is clip(x + shift). Table (CIFAR-10-C): shift = 0.05, 0.1,
    0.15, 0.2, 0.3.
    """
    del rng
    if x.shape[-1] != 3:
        return np.clip(x + np.float32(shift), 0.0, 1.0)
    hsv = tf.image.rgb_to_hsv(x).numpy()
    hsv[..., 2] = np.clip(hsv[..., 2] + shift, 0.0, 1.0)
    return tf.image.hsv_to_rgb(hsv).numpy()


def _saturate(x, params, rng):
    """Saturation change in HSV: S' = clip(S * scale + shift, 0, 1); RGB images only.

    Table (this module's): (scale, shift) = (1.5, 0), (2, 0), (2.5, 0.1),
    (3, 0.2), (4, 0.3). CIFAR-10-C's table mixes desaturation (severities 1-2)
    with over-saturation (3-5); here every severity over-saturates, so for a
    fixed hue and value the change of every pixel grows with the severity.
    """
    del rng
    scale, shift = params
    hsv = tf.image.rgb_to_hsv(x).numpy()
    hsv[..., 1] = np.clip(hsv[..., 1] * scale + shift, 0.0, 1.0)
    return tf.image.hsv_to_rgb(hsv).numpy()


def _fractal_noise(n, h, w, decay, rng):
    """Per-image fractal ("plasma") noise in [0, 1]: octaves of bilinearly upsampled noise.

    Octave k is a (2^k + 1)-square grid of U(0, 1) values resized to (h, w),
    weighted by decay**-k, so a larger decay gives smoother fog.
    """
    octaves = int(np.ceil(np.log2(max(h, w)))) + 1
    total = np.zeros((n, h, w, 1), np.float32)
    for k in range(octaves):
        side = 2**k + 1
        grid = rng.random((n, side, side, 1), dtype=np.float32)
        total += tf.image.resize(grid, (h, w), method="bilinear").numpy() * np.float32(decay ** (-k))
    low = total.min(axis=(1, 2, 3), keepdims=True)
    high = total.max(axis=(1, 2, 3), keepdims=True)
    return (total - low) / np.maximum(high - low, 1e-12)


def _fog(x, params, rng):
    """Fog: adds fractal noise and rescales to keep each image's maximum.

    x' = (x + strength * fog) * max(x) / (max(x) + strength), fog fractal noise
    in [0, 1] (shared by the channels) whose octave weights fall as decay**-k.
    Table (CIFAR-10-C's values; their plasma fractal is replaced by octave
    noise): (strength, decay) = (0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75).
    """
    strength, decay = params
    n, h, w, _ = x.shape
    fog = _fractal_noise(n, h, w, decay, rng)
    peak = x.max(axis=(1, 2, 3), keepdims=True)
    return (x + np.float32(strength) * fog) * peak / (peak + np.float32(strength))


# --------------------------------------------------------------------------- digital


def _pixelate(x, factor, rng):
    """Pixelation: area-downsample to round(factor * size), then nearest-neighbour back up.

    Table (CIFAR-10-C): factor = 0.95, 0.9, 0.85, 0.75, 0.65.
    """
    del rng
    h, w = x.shape[1:3]
    small = tf.image.resize(x, (max(1, round(h * factor)), max(1, round(w * factor))), method="area")
    return tf.image.resize(small, (h, w), method="nearest").numpy()


@tf.function(reduce_retracing=True)
def _jpeg_batch(images, quality):
    channels = images.shape[-1]

    def one(image):
        encoded = tf.raw_ops.EncodeJpegVariableQuality(images=image, quality=quality)
        return tf.io.decode_jpeg(encoded, channels=channels)

    return tf.map_fn(one, images, fn_output_signature=tf.TensorSpec(images.shape[1:], tf.uint8))


def _jpeg_compression(x, quality, rng):
    """JPEG compression at the given quality (TensorFlow's libjpeg encoder/decoder), 1 or 3 channels.

    Table (CIFAR-10-C): quality = 80, 65, 58, 50, 40.
    """
    del rng
    if x.shape[-1] not in (1, 3):
        raise ValueError(f"jpeg_compression needs 1 or 3 channels, got {x.shape[-1]}.")
    images = np.clip(np.rint(x * 255.0), 0, 255).astype(np.uint8)
    out = _jpeg_batch(tf.constant(images), tf.constant(quality, tf.int32))
    return out.numpy().astype(np.float32) / 255.0


_FUNCTIONS = {
    "gaussian_noise": _gaussian_noise,
    "shot_noise": _shot_noise,
    "impulse_noise": _impulse_noise,
    "speckle_noise": _speckle_noise,
    "gaussian_blur": _gaussian_blur,
    "defocus_blur": _defocus_blur,
    "elastic_transform": _elastic_transform,
    "contrast": _contrast,
    "brightness": _brightness,
    "saturate": _saturate,
    "fog": _fog,
    "pixelate": _pixelate,
    "jpeg_compression": _jpeg_compression,
}

# Images per chunk: bounds the float32 work memory on large arrays. Fixed, so results do not depend on it.
_CHUNK = 2048


def _check_name(name):
    if name not in _FUNCTIONS:
        raise ValueError(f"Unknown corruption {name!r}; known corruptions: {', '.join(CORRUPTIONS)}.")


def _check_severity(severity):
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= 5:
        raise ValueError(f"Corruption severity must be an integer in 1..5, got {severity!r}.")


def _check_images(images):
    images = np.asarray(images)
    if images.dtype != np.uint8:
        raise TypeError(f"Corruptions take uint8 images, got dtype {images.dtype}.")
    if images.ndim != 4:
        raise ValueError(f"Corruptions take an image array of shape (N, H, W, C), got shape {images.shape}.")
    return images


def available_corruptions(channels):
    """Names in `CORRUPTIONS` that apply to images with `channels` channels (saturate needs 3; JPEG 1 or 3)."""
    names = [n for n in CORRUPTIONS if channels == 3 or n not in RGB_ONLY]
    if channels not in (1, 3):
        names.remove("jpeg_compression")
    return tuple(names)


def corrupt(images, name, severity, seed=0):
    """Applies one CIFAR-10-C style corruption (Hendrycks & Dietterich 2019) at one severity.

    Args:
      images: uint8 array (N, H, W, C), grayscale (C=1) or RGB (C=3).
      name: one of `CORRUPTIONS` ("saturate" needs C=3, "jpeg_compression" C in {1, 3}).
      severity: integer 1..5; the parameter comes from `SEVERITY_PARAMETERS[name]`.
      seed: seeds a numpy Generator together with the corruption, not the
        severity, so severities share their random draws; same inputs and seed,
        same output.

    Returns:
      uint8 array of the same shape: the corrupted images, computed in float
      [0, 1], then rounded and clipped to 0..255.

    Raises:
      ValueError: unknown corruption (the message lists the known ones), severity
        outside 1..5, an array that is not 4-D, or a channel count the corruption
        cannot handle. TypeError: images that are not uint8.
    """
    _check_name(name)
    _check_severity(severity)
    images = _check_images(images)
    if name in RGB_ONLY and images.shape[-1] != 3:
        raise ValueError(f"Corruption {name!r} needs RGB images (C=3), got C={images.shape[-1]}.")
    function = _FUNCTIONS[name]
    parameter = SEVERITY_PARAMETERS[name][int(severity) - 1]
    rng = np.random.default_rng([int(seed), CORRUPTIONS.index(name)])
    out = np.empty_like(images)
    for start in range(0, len(images), _CHUNK):
        x = images[start : start + _CHUNK].astype(np.float32) / np.float32(255.0)
        y = function(x, parameter, rng)
        out[start : start + _CHUNK] = np.clip(np.rint(np.asarray(y, np.float32) * 255.0), 0, 255).astype(np.uint8)
    return out


def corrupted_dataset(images, labels, names=None, severities=(1, 2, 3, 4, 5), seed=0):
    """Iterates over a corrupted copy of a test set for every (corruption, severity), as CIFAR-10-C does.

    Args:
      images: uint8 array (N, H, W, C); labels: array (N,), passed through unchanged.
      names: corruptions to apply; None means `available_corruptions(C)` (every
        corruption that applies to the channel count, e.g. no "saturate" for
        grayscale).
      severities: severities 1..5 to produce for each corruption.
      seed: passed to `corrupt` for every pair.

    Returns:
      A generator of (name, severity, corrupted images uint8 (N, H, W, C), labels),
      corruption-major; one corrupted copy is computed per step, so memory stays
      at one extra copy of the test set.

    Raises:
      ValueError / TypeError as `corrupt`, raised here (before iterating) for
      unknown names, bad severities, a bad image array, or labels whose length
      differs from the number of images.
    """
    images = _check_images(images)
    labels = np.asarray(labels)
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels.")
    names = available_corruptions(images.shape[-1]) if names is None else tuple(names)
    for name in names:
        _check_name(name)
        if name in RGB_ONLY and images.shape[-1] != 3:
            raise ValueError(f"Corruption {name!r} needs RGB images (C=3), got C={images.shape[-1]}.")
    severities = tuple(severities)
    for severity in severities:
        _check_severity(severity)

    def generate():
        for name in names:
            for severity in severities:
                yield name, int(severity), corrupt(images, name, severity, seed=seed), labels

    return generate()
