"""AutoAugment's CIFAR-10 policy: each operation against PIL (the official code's library), the layer per image."""

import numpy as np
import pytest
import tensorflow as tf

from tf_freetickets.ensembles.autoaugment import _RANGES, CIFAR10_POLICY, CIFAR10AutoAugment, _apply

PIL = pytest.importorskip("PIL")
from PIL import Image, ImageEnhance, ImageOps  # noqa: E402

RNG = np.random.default_rng(0)
ARRAY = RNG.integers(30, 220, (32, 32, 3)).astype(np.uint8)
ARRAY[:8] = RNG.integers(0, 256, (8, 32, 3))  # some full-range rows for autocontrast/equalize
IMAGE = Image.fromarray(ARRAY)
GREY = (128, 128, 128)


def _ours(name, index, sign=1.0):
    out = _apply(name, _RANGES[name](index), tf.constant(ARRAY, tf.float32), tf.constant(sign))
    return np.clip(np.round(out.numpy()), 0, 255)


def _pil(name, index, sign):
    m = _RANGES[name](index)
    if name in ("invert", "autocontrast", "equalize"):
        return getattr(ImageOps, name)(IMAGE)
    if name == "posterize":
        return ImageOps.posterize(IMAGE, m)
    if name == "solarize":
        return ImageOps.solarize(IMAGE, m)
    if name in ("brightness", "color", "contrast", "sharpness"):
        return getattr(ImageEnhance, name.capitalize())(IMAGE).enhance(1 + m * sign)
    if name == "translateX":
        return IMAGE.transform(IMAGE.size, Image.AFFINE, (1, 0, m * 32 * sign, 0, 1, 0), fillcolor=GREY)
    if name == "translateY":
        return IMAGE.transform(IMAGE.size, Image.AFFINE, (1, 0, 0, 0, 1, m * 32 * sign), fillcolor=GREY)
    if name == "rotate":
        rotated = IMAGE.convert("RGBA").rotate(m)
        return Image.composite(rotated, Image.new("RGBA", rotated.size, (128,) * 4), rotated).convert("RGB")
    raise AssertionError(name)


@pytest.mark.parametrize(
    "name,index",
    [("invert", 0), ("posterize", 7), ("solarize", 2), ("solarize", 8), ("equalize", 0), ("autocontrast", 0),
     ("brightness", 7), ("color", 9), ("contrast", 6), ("sharpness", 5), ("translateX", 9), ("translateY", 3),
     ("rotate", 2)],
)  # fmt: skip
@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_operations_match_pil(name, index, sign):
    difference = np.abs(_ours(name, index, sign) - np.asarray(_pil(name, index, sign), float))
    # Integer arithmetic of PIL's "L" conversion and autocontrast's LUT: off by one on a few pixels at most.
    assert difference.max() <= 1 and np.mean(difference == 0) > 0.99, (difference.max(), np.mean(difference == 0))


def test_shear_matches_pil_bilinear_geometry():
    m = _RANGES["shearY"](8)
    for sign in (1.0, -1.0):
        reference = IMAGE.transform(IMAGE.size, Image.AFFINE, (1, 0, 0, m * sign, 1, 0), Image.BILINEAR, fillcolor=GREY)
        difference = np.abs(_ours("shearY", 8, sign) - np.asarray(reference, float))
        assert np.mean(difference <= 1) > 0.95  # PIL's bicubic (official) is not available in TF: bilinear


def test_policy_table_and_layer():
    assert len(CIFAR10_POLICY) == 25 and all(len(sub) == 2 for sub in CIFAR10_POLICY)
    assert {op for sub in CIFAR10_POLICY for op, _, _ in sub} <= set(_RANGES)
    images = (RNG.integers(0, 256, (6, 32, 32, 3)) / 255.0).astype("float32")
    out = np.asarray(CIFAR10AutoAugment(seed=2)(images, training=True))
    again = np.asarray(CIFAR10AutoAugment(seed=2)(images, training=True))
    np.testing.assert_array_equal(out, again)
    assert out.shape == images.shape and out.min() >= 0.0 and out.max() <= 1.0
    np.testing.assert_allclose(out * 255, np.round(out * 255), atol=1e-3)  # uint8 values, as PIL
    np.testing.assert_array_equal(np.asarray(CIFAR10AutoAugment(seed=2)(images, training=False)), images)
    with pytest.raises(ValueError, match="RGB images, got 1 channel"):
        CIFAR10AutoAugment()(images[..., :1], training=True)
