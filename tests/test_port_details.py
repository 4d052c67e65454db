"""Port details of the official CIFAR scripts: reflect padding, the held-out split, best-validation runs."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from tf_freetickets import data
from tf_freetickets.experiments import fashion_mnist_defaults, run
from tf_freetickets.experiments.data_sources import data_source

IMAGE = np.arange(32 * 32 * 3, dtype=np.uint8).reshape(1, 32, 32, 3)


def _windows(padded):
    return [padded[r : r + 32, c : c + 32] for r in range(9) for c in range(9)]


def test_reflect_padding_crops_a_window_of_the_mirrored_image():
    image = IMAGE[0].astype("float32") / 255.0
    windows = _windows(np.pad(image, ((4, 4), (4, 4), (0, 0)), mode="reflect"))
    zero_windows = _windows(np.pad(image, ((4, 4), (4, 4), (0, 0))))
    stream = data.train_dataset(np.repeat(IMAGE, 32, 0), np.zeros(32, np.int64), 32, seed=3, crop_padding="reflect")
    found_border = False
    for out in next(iter(stream))[0].numpy():
        candidates = [out, out[:, ::-1]]  # the flip comes first, then the crop
        assert any(np.array_equal(c, w) for c in candidates for w in windows)
        found_border |= not any(np.array_equal(c, w) for c in candidates for w in zero_windows)
    assert found_border  # some crops reach into the mirrored border, which zero padding would not give


def test_constant_padding_stream_is_unchanged():
    """The default stream equals the zero-padded pad_to_bounding_box recipe it had before crop_padding existed."""
    images = np.random.default_rng(0).integers(0, 256, (16, 28, 28, 1), dtype=np.uint8)
    labels = np.arange(16)
    new = next(iter(data.train_dataset(images, labels, 16, seed=4)))[0].numpy()
    epoch_seed = tf.constant(4 * 1_000_003, tf.int64)
    key = tf.stack([epoch_seed, tf.constant(0, tf.int64)])
    for position in range(16):
        index = int(tf.random.experimental.index_shuffle(tf.constant(position, tf.int64), key, 15))
        seed = tf.stack([epoch_seed, tf.constant(position, tf.int64)])
        image = tf.image.stateless_random_flip_left_right(tf.cast(images[index], tf.float32) / 255.0, seed)
        padded = tf.image.pad_to_bounding_box(image, 2, 2, 32, 32)
        old = tf.image.stateless_random_crop(padded, tf.shape(image), seed + 1).numpy()
        np.testing.assert_array_equal(new[position], old)


def test_validation_split_holds_out_the_tail_of_the_training_split():
    config = fashion_mnist_defaults()
    full = data_source(config)
    config.validation_examples = 5000
    split = data_source(config)
    assert (len(split.x_train), len(split.x_val)) == (55000, 5000)
    np.testing.assert_array_equal(split.x_val, full.x_train[-5000:])
    np.testing.assert_array_equal(split.y_train, full.y_train[:-5000])
    x, y = next(iter(split.validation_data()))
    assert x.dtype == tf.float32 and float(tf.reduce_max(x)) <= 1.0 and y.shape[0] == 512
    with pytest.raises(ValueError, match="no validation split"):
        full.validation_data()


@pytest.mark.slow
def test_edst_with_best_validation_tickets_runs_end_to_end(tmp_path):
    config = fashion_mnist_defaults()
    config.train_examples, config.validation_examples, config.batch_size = 256, 256, 64
    config.width, config.verbose = 0.25, 0
    config.sparse.update_every = 2
    config.ensemble.kind, config.ensemble.num_members = "edst", 2
    config.keep_best_validation = True
    results = run(config, str(tmp_path))
    assert sorted(n for n in os.listdir(tmp_path / "members") if n.endswith(".keras")) == ["ticket_0.keras", "ticket_1.keras"]
    assert json.load(open(tmp_path / "results.json"))["config"]["keep_best_validation"] is True
    assert len(results["ticket_mask_overlap"]) == 2


@pytest.mark.slow
def test_dnc_with_official_views_and_ramp_runs(tmp_path):
    config = fashion_mnist_defaults()
    config.train_examples, config.batch_size, config.epochs = 256, 64, 1
    config.width, config.verbose = 0.25, 0
    config.sparse.method = "dense"
    config.ensemble.kind, config.ensemble.num_members = "dnc", 2
    config.ensemble.views, config.ensemble.cotraining_ramp, config.ensemble.cotraining_min_weight = "cifar100", "epoch", 0.005
    run(config, str(tmp_path))
    assert os.path.isdir(tmp_path / "ensemble")
