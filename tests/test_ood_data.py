"""Offline OoD sets for Fashion-MNIST models (tf_freetickets.data.ood)."""

import os

import numpy as np
import pytest
from sklearn.datasets import load_digits

from tf_freetickets.data import ood


def test_digits_shape_dtype_count_and_range():
    digits = ood.digits_ood()
    assert digits.shape == (1797, 28, 28, 1) == (ood.NUM_SKLEARN_DIGITS, *ood.IMAGE_SHAPE)
    assert digits.dtype == np.uint8
    # Bright ink on black, full 0..255 range as in Fashion-MNIST.
    assert digits.min() == 0 and digits.max() == 255
    assert 60 < digits.mean() < 95
    assert ood.digits_ood(10).shape == (10, 28, 28, 1)
    np.testing.assert_array_equal(ood.digits_ood(10), digits[:10])
    assert ood.digits_ood(0).shape == (0, 28, 28, 1)


def test_digits_keep_the_8x8_pattern():
    digits = ood.digits_ood(200)
    reference = load_digits().images[:200] * (255.0 / 16.0)
    back = ood.resize_to(digits, 8, method="bilinear")[..., 0].astype(np.float64)
    error = np.abs(back - reference)
    assert error.mean() < 12.0
    correlations = [np.corrcoef(b.ravel(), r.ravel())[0, 1] for b, r in zip(back, reference)]
    assert np.min(correlations) > 0.9
    # Each digit is closest to its own source among the 200.
    distances = ((back[:, None] - reference[None]) ** 2).sum(axis=(2, 3))
    np.testing.assert_array_equal(distances.argmin(axis=1), np.arange(200))


def test_digits_invert_and_stretch():
    plain = ood.digits_ood(20).astype(int)
    np.testing.assert_array_equal(ood.digits_ood(20, invert=True), 255 - plain)
    stretched = ood.digits_ood(20, stretch=True)
    assert (stretched.min(axis=(1, 2, 3)) == 0).all() and (stretched.max(axis=(1, 2, 3)) == 255).all()


def test_digits_too_many():
    with pytest.raises(ValueError, match="1797"):
        ood.digits_ood(1798)


def test_uniform_noise():
    images = ood.mnist_like_noise(500, seed=3)
    assert images.shape == (500, 28, 28, 1) and images.dtype == np.uint8
    assert images.min() == 0 and images.max() == 255
    assert abs(images.mean() - 127.5) < 1.0
    assert abs(images.std() - np.sqrt((256**2 - 1) / 12)) < 1.0
    np.testing.assert_array_equal(images, ood.mnist_like_noise(500, seed=3))
    assert not np.array_equal(images, ood.mnist_like_noise(500, seed=4))
    assert ood.mnist_like_noise(2, shape=(32, 32, 3)).shape == (2, 32, 32, 3)


def test_gaussian_noise_images():
    images = ood.gaussian_noise_images(500, seed=3)
    assert images.shape == (500, 28, 28, 1) and images.dtype == np.uint8
    assert abs(images.mean() - 128.0) < 1.0
    # Clipping at 0 and 255 (about 2 standard deviations) trims the std a little below 64.
    assert 58.0 < images.std() < 64.0
    clipped = np.mean((images == 0) | (images == 255))
    assert 0.035 < clipped < 0.06
    np.testing.assert_array_equal(images, ood.gaussian_noise_images(500, seed=3))
    assert not np.array_equal(images, ood.gaussian_noise_images(500, seed=4))


def test_ood_sets():
    sets = ood.ood_sets(num=300, seed=1)
    # The first three keep their names, order and images (old records compare); natural_patches comes last.
    assert list(sets) == ["digits", "uniform_noise", "gaussian_noise", "natural_patches"]
    np.testing.assert_array_equal(sets["uniform_noise"], ood.mnist_like_noise(300, seed=1))
    np.testing.assert_array_equal(sets["gaussian_noise"], ood.gaussian_noise_images(300, seed=1))
    np.testing.assert_array_equal(sets["natural_patches"], ood.natural_patches(300, seed=1))
    for images in sets.values():
        assert images.shape == (300, 28, 28, 1) and images.dtype == np.uint8
    again = ood.ood_sets(num=300, seed=1)
    for name in sets:
        np.testing.assert_array_equal(sets[name], again[name])
    assert ood.ood_sets(num=2000)["digits"].shape == (1797, 28, 28, 1)
    with pytest.raises(ValueError):
        ood.ood_sets(num=-1)


def test_resize_to():
    images = np.arange(2 * 4 * 4 * 3, dtype=np.uint8).reshape(2, 4, 4, 3)
    up = ood.resize_to(images, (8, 12), method="nearest")
    assert up.shape == (2, 8, 12, 3) and up.dtype == np.uint8
    np.testing.assert_array_equal(up[:, ::2, ::3], images)
    assert ood.resize_to(images, 6).shape == (2, 6, 6, 3)
    with pytest.raises(ValueError):
        ood.resize_to(images[0], 8)


def test_ood_sets_for_picks_sets_by_dataset_and_skips_unprepared_ones(tmp_path):
    from tf_freetickets.data.ood import ood_sets_for

    assert sorted(ood_sets_for("fashion_mnist", num=3)) == ["digits", "gaussian_noise", "natural_patches", "uniform_noise"]
    notes = []
    sets = ood_sets_for("cifar10", num=3, data_dir=str(tmp_path), log=notes.append)
    assert sorted(sets) == ["gaussian_noise", "uniform_noise"]
    assert all(images.shape == (3, 32, 32, 3) and images.dtype == np.uint8 for images in sets.values())
    assert [note.split(":")[0] for note in notes] == ["OoD set svhn_cropped skipped", "OoD set cifar100 skipped"]
    with pytest.raises(ValueError, match="'imagenet2012'"):
        ood_sets_for("imagenet2012")


def _neighbour_correlation(images):
    """Correlation of horizontally adjacent pixels over a uint8 image set (N, H, W, 1)."""
    x = images[..., 0].astype(np.float64)
    return float(np.corrcoef(x[:, :, :-1].ravel(), x[:, :, 1:].ravel())[0, 1])


def test_natural_patches_shape_range_and_determinism():
    images = ood.natural_patches(200, seed=0)
    assert images.shape == (200, 28, 28, 1) and images.dtype == np.uint8
    # Stretched per patch to the full 0..255 range, like a Fashion-MNIST image.
    assert np.all(images.min(axis=(1, 2, 3)) == 0) and np.all(images.max(axis=(1, 2, 3)) == 255)
    np.testing.assert_array_equal(images, ood.natural_patches(200, seed=0))
    np.testing.assert_array_equal(images[:50], ood.natural_patches(50, seed=0))  # a prefix does not depend on num
    assert not np.array_equal(images, ood.natural_patches(200, seed=1))
    assert ood.natural_patches(0).shape == (0, 28, 28, 1)
    kept = ood.natural_patches(100, seed=0, stretch=False)
    assert kept.min() < kept.max() and not np.array_equal(kept, images[:100])


def test_natural_patches_are_image_like_not_noise():
    patches = ood.natural_patches(300, seed=0)
    noise = ood.mnist_like_noise(300, seed=0)
    gaussian = ood.gaussian_noise_images(300, seed=0)
    # Natural images: adjacent pixels are strongly correlated; independent pixel noise: about 0.
    assert _neighbour_correlation(patches) > 0.8
    assert abs(_neighbour_correlation(noise)) < 0.02 and abs(_neighbour_correlation(gaussian)) < 0.02
    # No flat patch: every one has structure before stretching (min_std = 8 grey levels).
    raw = ood.natural_patches(300, seed=0, stretch=False).astype(np.float64)
    assert raw.std(axis=(1, 2, 3)).min() >= 7.5


def test_natural_patches_are_crops_of_the_sample_photos():
    # Independent of the module: PIL's decoding via scikit-learn, BT.601 luma, k x k block means, min-max stretch.
    from sklearn.datasets import load_sample_images

    sample = load_sample_images()
    names = [os.path.basename(f) for f in sample.filenames]
    images, boxes = ood.natural_patches(20, seed=5, return_boxes=True)
    assert boxes.shape == (20, 4) and set(boxes[:, 0]) <= {0, 1}
    assert set(boxes[:, 3]) <= {28 * k for k in range(2, 9)}
    for image, (index, top, left, side) in zip(images, boxes):
        photo = sample.images[names.index(ood.SAMPLE_PHOTOS[index])].astype(np.float64)
        gray = photo[top : top + side, left : left + side] @ np.array([0.299, 0.587, 0.114])
        k = side // 28
        block = gray.reshape(28, k, 28, k).mean(axis=(1, 3))
        expected = (block - block.min()) * 255.0 / (block.max() - block.min())
        np.testing.assert_allclose(image[..., 0], expected, atol=1.0)


@pytest.mark.parametrize("kwargs", [{"num": -1}, {"num": 2.5}, {"num": 3, "min_std": -1.0}])
def test_natural_patches_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="num|min_std"):
        ood.natural_patches(**kwargs)


def test_ood_set_names_list_the_sets_in_order():
    from tf_freetickets.data.ood import OOD_SET_NAMES, ood_sets

    assert tuple(ood_sets(num=8)) == OOD_SET_NAMES
