"""CIFAR-10-C style corruptions (tf_freetickets.data.corruptions)."""

import numpy as np
import pytest
from scipy import ndimage

from tf_freetickets.data import corruptions as C


def _image_like(channels, num=6, seed=0):
    """Smooth random blobs on a black background, 0..255 uint8 (N, 28, 28, C)."""
    rng = np.random.default_rng(seed)
    x = ndimage.gaussian_filter(rng.random((num, 28, 28, channels)), (0, 2, 2, 0))
    low, high = x.min(axis=(1, 2, 3), keepdims=True), x.max(axis=(1, 2, 3), keepdims=True)
    x = (x - low) / (high - low)
    return np.rint(np.where(x < 0.3, 0.0, x) * 255).astype(np.uint8)


GRAY = _image_like(1)
RGB = _image_like(3)


def test_names_and_tables():
    assert len(C.CORRUPTIONS) >= 8 and len(set(C.CORRUPTIONS)) == len(C.CORRUPTIONS)
    assert set(C.SEVERITY_PARAMETERS) == set(C.CORRUPTIONS)
    assert all(len(table) == 5 for table in C.SEVERITY_PARAMETERS.values())
    assert "saturate" not in C.available_corruptions(1)
    assert set(C.available_corruptions(3)) == set(C.CORRUPTIONS)
    assert len(C.available_corruptions(1)) >= 8


@pytest.mark.parametrize("images", [GRAY, RGB], ids=["gray", "rgb"])
def test_shape_dtype_and_monotone_damage(images):
    for name in C.available_corruptions(images.shape[-1]):
        damage = [0.0]
        for severity in range(1, 6):
            out = C.corrupt(images, name, severity, seed=0)
            assert out.shape == images.shape and out.dtype == np.uint8, name
            damage.append(np.abs(out.astype(np.float64) - images).mean())
        assert np.all(np.diff(damage) > 0), (name, damage)


def test_deterministic_with_seed():
    for name in C.available_corruptions(3):
        a = C.corrupt(RGB, name, 3, seed=7)
        np.testing.assert_array_equal(a, C.corrupt(RGB, name, 3, seed=7), err_msg=name)
    for name in ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "elastic_transform", "fog"):
        assert not np.array_equal(C.corrupt(GRAY, name, 3, seed=7), C.corrupt(GRAY, name, 3, seed=8)), name


def test_input_not_modified():
    copy = GRAY.copy()
    for name in C.available_corruptions(1):
        C.corrupt(GRAY, name, 5)
    np.testing.assert_array_equal(GRAY, copy)


def test_brightness_on_constant_image_exact():
    # 100 + shift * 255 = 112.75, 125.5, 138.25, 151, 176.5: exact after rounding where not a half.
    for channels in (1, 3):  # a gray RGB pixel has S = 0 and V = the gray level
        images = np.full((2, 8, 8, channels), 100, np.uint8)
        for severity, expected in ((1, [113]), (2, [125, 126]), (3, [138]), (4, [151]), (5, [176, 177])):
            values = np.unique(C.corrupt(images, "brightness", severity))
            assert len(values) == 1 and values[0] in expected, (channels, severity, values)
    white = np.full((1, 4, 4, 1), 250, np.uint8)
    np.testing.assert_array_equal(C.corrupt(white, "brightness", 5), 255)


def test_contrast_on_two_level_image_exact():
    images = np.zeros((1, 4, 4, 1), np.uint8)
    images[:, :2] = 200  # per-image mean 100
    for severity, factor in zip(range(1, 6), (0.75, 0.5, 0.4, 0.3, 0.15)):
        out = C.corrupt(images, "contrast", severity)[0, :, 0, 0]
        np.testing.assert_array_equal(out, [100 + 100 * factor] * 2 + [100 - 100 * factor] * 2)
    constant = np.full((1, 4, 4, 1), 77, np.uint8)
    np.testing.assert_array_equal(C.corrupt(constant, "contrast", 5), constant)


def test_gaussian_noise_std_matches_table():
    images = np.full((4, 128, 128, 1), 128, np.uint8)
    for severity, std in zip(range(1, 6), (0.04, 0.06, 0.08, 0.09, 0.10)):
        noise = (C.corrupt(images, "gaussian_noise", severity).astype(np.float64) - 128) / 255
        assert abs(noise.mean()) < 0.002
        assert abs(noise.std() / std - 1) < 0.02, (severity, noise.std())


def test_impulse_noise_fraction_matches_table():
    images = np.full((4, 128, 128, 1), 128, np.uint8)
    for severity, amount in zip(range(1, 6), (0.01, 0.02, 0.03, 0.05, 0.07)):
        out = C.corrupt(images, "impulse_noise", severity)
        assert set(np.unique(out)) <= {0, 128, 255}
        assert abs(np.mean(out == 0) - amount / 2) < 0.1 * amount
        assert abs(np.mean(out == 255) - amount / 2) < 0.1 * amount


def test_shot_noise_variance_matches_poisson():
    images = np.full((4, 128, 128, 1), 128, np.uint8)
    x = 128 / 255
    for severity, photons in zip(range(1, 6), (500, 250, 100, 75, 50)):
        out = C.corrupt(images, "shot_noise", severity).astype(np.float64) / 255
        assert abs(out.std() / np.sqrt(x / photons) - 1) < 0.03


def test_blurs_keep_constant_images_and_disk_kernel():
    constant = np.full((2, 16, 16, 3), 90, np.uint8)
    for name in ("gaussian_blur", "defocus_blur", "pixelate", "elastic_transform"):
        np.testing.assert_array_equal(C.corrupt(constant, name, 5), constant, err_msg=name)
    kernel = C.disk_kernel(1.0)
    assert kernel.shape == (3, 3) and abs(kernel.sum() - 1) < 1e-6
    np.testing.assert_allclose(kernel, kernel.T)
    assert kernel[1, 1] > kernel[0, 1] > kernel[0, 0] > 0
    np.testing.assert_array_equal(C.disk_kernel(0.4), [[1.0]])


def test_pixelate_makes_blocks():
    out = C.corrupt(GRAY, "pixelate", 5)  # 28 -> 18 -> 28
    distinct_rows = [len(np.unique(out[i, :, :, 0], axis=0)) for i in range(len(out))]
    assert max(distinct_rows) <= 18


def test_saturate_keeps_gray_and_changes_colour():
    gray = np.full((1, 4, 4, 3), 120, np.uint8)
    np.testing.assert_array_equal(C.corrupt(gray, "saturate", 1), np.full_like(gray, 120))  # S=0 stays gray
    colour = np.zeros((1, 1, 1, 3), np.uint8) + np.array([200, 150, 100], np.uint8)
    out = C.corrupt(colour, "saturate", 2)[0, 0, 0].astype(int)  # S 0.5 -> 1.0, V and H kept
    np.testing.assert_array_equal(out, [200, 100, 0])


def test_corrupted_dataset():
    labels = np.arange(len(GRAY))
    items = list(C.corrupted_dataset(GRAY, labels, names=["contrast", "gaussian_noise"], severities=(1, 5), seed=3))
    assert [(name, severity) for name, severity, _, _ in items] == [
        ("contrast", 1),
        ("contrast", 5),
        ("gaussian_noise", 1),
        ("gaussian_noise", 5),
    ]
    for name, severity, images, item_labels in items:
        np.testing.assert_array_equal(images, C.corrupt(GRAY, name, severity, seed=3))
        np.testing.assert_array_equal(item_labels, labels)
    names = {name for name, _, _, _ in C.corrupted_dataset(GRAY[:1], labels[:1], severities=(1,))}
    assert names == set(C.available_corruptions(1))


def test_errors():
    with pytest.raises(ValueError, match="Unknown corruption 'snow'.*gaussian_noise.*jpeg_compression"):
        C.corrupt(GRAY, "snow", 1)
    for severity in (0, 6, -1, 2.5, True):
        with pytest.raises(ValueError, match="1..5"):
            C.corrupt(GRAY, "contrast", severity)
    with pytest.raises(ValueError, match="RGB"):
        C.corrupt(GRAY, "saturate", 1)
    with pytest.raises(TypeError, match="uint8"):
        C.corrupt(GRAY.astype(np.float32), "contrast", 1)
    with pytest.raises(ValueError, match="shape"):
        C.corrupt(GRAY[0], "contrast", 1)
    # corrupted_dataset checks eagerly, before iteration.
    with pytest.raises(ValueError, match="Unknown corruption"):
        C.corrupted_dataset(GRAY, np.arange(len(GRAY)), names=["nope"])
    with pytest.raises(ValueError, match="1..5"):
        C.corrupted_dataset(GRAY, np.arange(len(GRAY)), severities=(0, 1))
    with pytest.raises(ValueError, match="labels"):
        C.corrupted_dataset(GRAY, np.arange(3))
