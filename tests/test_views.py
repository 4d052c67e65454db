"""Divide-and-Co-training member views: the official per-dataset pipelines, per image, seeded."""

import numpy as np
import pytest

from tf_freetickets.data.tfds_data import CIFAR_CHANNEL_STATS
from tf_freetickets.ensembles.views import VIEW_PIPELINES, RandomErasingBox, RandomPadCrop, member_views


def _images(n=64, size=32, seed=0):
    return np.random.default_rng(seed).uniform(0.0, 1.0, (n, size, size, 3)).astype("float32")


# AutoAugment runs image by image (slow eagerly): fewer images for those pipelines.
SIZES = {name: 8 if "autoaugment" in name or name == "cifar10" else 64 for name in VIEW_PIPELINES}


@pytest.mark.parametrize("name", sorted(VIEW_PIPELINES))
def test_views_keep_shape_and_dtype_and_differ_between_members(name):
    mean = CIFAR_CHANNEL_STATS["cifar10"][0]
    views = member_views(name, 2, seed=0, mean=mean)
    x = (np.round(_images(SIZES[name]) * 255) / 255).astype("float32")  # images come from uint8
    outputs = [np.asarray(view(x, training=True)) for view in views]
    for out in outputs:
        assert out.shape == x.shape and out.dtype == np.float32
        assert not np.array_equal(out, x)
    assert not np.allclose(outputs[0], outputs[1])
    # Inference: every member sees the images themselves.
    np.testing.assert_array_equal(np.asarray(views[0](x, training=False)), x)


@pytest.mark.parametrize("name", sorted(VIEW_PIPELINES))
def test_views_are_deterministic_by_seed(name):
    x = _images(min(SIZES[name], 16))
    first = [np.asarray(v(x, training=True)) for v in member_views(name, 1, seed=5)]
    again = [np.asarray(v(x, training=True)) for v in member_views(name, 1, seed=5)]
    other = [np.asarray(v(x, training=True)) for v in member_views(name, 1, seed=6)]
    for a, b, c in zip(first, again, other):
        np.testing.assert_array_equal(a, b)
        assert not np.array_equal(a, c)


def test_pad_crop_takes_a_window_of_the_padded_image_per_image():
    base = np.arange(32 * 32, dtype="float32").reshape(1, 32, 32, 1)
    x = np.repeat(base, 64, axis=0)
    for mode, np_mode in (("constant", "constant"), ("reflect", "reflect")):
        out = np.asarray(RandomPadCrop(4, mode, seed=1)(x, training=True))
        padded = np.pad(base[0, :, :, 0], 4, mode=np_mode)
        offsets = set()
        for image in out[:, :, :, 0]:
            matches = [(r, c) for r in range(9) for c in range(9) if np.array_equal(padded[r : r + 32, c : c + 32], image)]
            assert matches, "every crop is a 32x32 window of the padded image"
            offsets.add(matches[0])
        assert len(offsets) > 20  # per-image offsets (Keras' RandomCrop takes one per batch)
    # reflect mirrors without repeating the edge: the pixel left of column 0 is column 1.
    assert np.pad(base[0, :, :, 0], 4, mode="reflect")[4, 3] == base[0, 0, 1, 0]


@pytest.mark.parametrize("scale", [(0.125, 0.2), (0.0625, 0.1)])
def test_random_erasing_probability_area_and_fill(scale):
    fill = CIFAR_CHANNEL_STATS["cifar100"][0]
    n = 2000
    x = np.full((n, 32, 32, 3), 2.0, "float32")  # outside [0, 1]: erased pixels are the ones that changed
    out = np.asarray(RandomErasingBox(0.5, scale, (0.99, 1.0), fill_value=fill, seed=3)(x, training=True))
    erased = np.any(out != 2.0, axis=(1, 2, 3))
    # p = 0.5: the count is Binomial(2000, 0.5), sd 22.4; 5 sd either side.
    assert abs(int(erased.sum()) - n // 2) < 112
    for image in out[erased][:200]:
        mask = np.all(image != 2.0, axis=-1)
        rows, cols = np.where(mask)
        h, w = rows.max() - rows.min() + 1, cols.max() - cols.min() + 1
        assert mask.sum() == h * w  # one solid box
        # torchvision: h = round(sqrt(a r)), w = round(sqrt(a / r)) with a in scale * 1024, r in [0.99, 1].
        assert round(np.sqrt(scale[0] * 1024 * 0.99)) <= min(h, w) and max(h, w) <= round(np.sqrt(scale[1] * 1024 / 0.99))
        assert abs(h - w) <= 1
        np.testing.assert_allclose(image[mask], np.broadcast_to(fill, (mask.sum(), 3)))


def test_erasing_fill_is_zero_after_the_members_normalisation():
    mean, std = CIFAR_CHANNEL_STATS["cifar10"]
    x = _images(256)
    out = np.asarray(RandomErasingBox(1.0, (0.125, 0.2), (0.99, 1.0), fill_value=mean, seed=0)(x, training=True))
    normalised = (out - np.asarray(mean, "float32")) / np.asarray(std, "float32")
    changed = np.any(out != x, axis=-1)
    assert changed.any()
    np.testing.assert_allclose(normalised[changed], 0.0, atol=1e-6)


def test_erasing_refuses_boxes_that_may_not_fit():
    with pytest.raises(ValueError, match="retries are not implemented"):
        RandomErasingBox(0.5, (0.5, 0.9), (0.3, 3.3))(_images(2), training=True)
    with pytest.raises(ValueError, match="Unknown view pipeline 'autoaugment'"):
        member_views("autoaugment", 2)
