"""tfds loaders read prepared datasets offline and never download.

The fixture writes a tiny but real prepared tfds dataset for each builder (the
TFRecord shards and `dataset_info.json` / `features.json` that `tfds build`
leaves in `<data_dir>/<name>[/<config>]/<version>/`), serialised with the real
builder's features, so the loaders run their real code path: `tfds.builder`,
`is_prepared`, `as_dataset`, decoding.
"""

import os
import socket
import time

import numpy as np
import pytest
import tensorflow as tf

from tf_freetickets.data import fashion_mnist, tfds_data
from tf_freetickets.data.fashion_mnist import MissingDatasetError

tfds = pytest.importorskip("tensorflow_datasets")

NUM = 6
# Solid colour of the fake ImageNet images (per channel), so normalisation can be checked exactly.
COLOUR = np.array([200, 100, 30], np.uint8)


def _write_prepared(data_dir, name, make_examples):
    """Writes `name` ("ds" or "ds/config") prepared in `data_dir`; returns {split: list of examples}."""
    builder = tfds.builder(name, data_dir=data_dir)
    features = builder.info.features
    path = builder.data_path
    path.mkdir(parents=True, exist_ok=True)
    written, infos = {}, []
    for split, examples in make_examples(features).items():
        filename = os.fspath(path / f"{builder.name}-{split}.tfrecord-00000-of-00001")
        with tf.io.TFRecordWriter(filename) as writer:
            for example in examples:
                writer.write(features.serialize_example(example))
        infos.append(tfds.core.SplitInfo(name=split, shard_lengths=[len(examples)], num_bytes=os.path.getsize(filename)))
        written[split] = examples
    builder.info.set_splits(tfds.core.SplitDict(infos))
    builder.info.write_to_directory(path)
    return written


def _small_images(splits, seed, shapes=((32, 32, 3),)):
    def make(features):
        rng = np.random.default_rng(seed)
        out = {}
        for split in splits:
            examples = []
            for i in range(NUM):
                example = {}
                for key, feature in features.items():
                    if key == "image":
                        shape = shapes[i % len(shapes)]
                        example[key] = rng.integers(0, 256, size=shape, dtype=np.uint8)
                    elif isinstance(feature, tfds.features.ClassLabel):
                        example[key] = int(rng.integers(feature.num_classes))
                    else:
                        example[key] = f"{split}_{i}"
                examples.append(example)
            out[split] = examples
        return out

    return make


def _solid_imagenet(features):
    shapes = [(40, 50, 3), (64, 48, 3), (37, 37, 3)]
    out = {}
    for split in ("train", "validation"):
        out[split] = [
            {
                "image": np.broadcast_to(COLOUR, shapes[i % 3]).copy(),
                "label": (7 * i + 3) % 1000,
                "file_name": f"n0000_{split}_{i}.JPEG",
            }
            for i in range(NUM)
        ]
    return out


def _textured_imagenet(features):
    """ImageNet-shaped examples of random pixels: a training run needs inputs that vary (solid colours
    make every BatchNorm batch variance a float32 rounding residue, which a deep ResNet amplifies)."""
    del features
    rng = np.random.default_rng(11)
    shapes = [(40, 50, 3), (64, 48, 3), (37, 37, 3)]
    return {
        split: [
            {"image": rng.integers(0, 256, shapes[i % 3], dtype=np.uint8), "label": (7 * i + 3) % 1000,
             "file_name": f"n0000_{split}_{i}.JPEG"}
            for i in range(NUM)
        ]
        for split in ("train", "validation")
    }  # fmt: skip


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    data_dir = os.fspath(tmp_path_factory.mktemp("tfds"))
    written = {}
    for seed, name in enumerate(("cifar10", "cifar100", "svhn_cropped")):
        written[name] = _write_prepared(data_dir, name, _small_images(("train", "test"), seed))
    written["cifar10_corrupted/fog_3"] = _write_prepared(data_dir, "cifar10_corrupted/fog_3", _small_images(("test",), 9))
    written["imagenet2012"] = _write_prepared(data_dir, "imagenet2012", _solid_imagenet)
    return data_dir, written


@pytest.fixture
def no_download(monkeypatch):
    """Any attempt to prepare a dataset or open a network connection fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("tried to download or prepare a dataset")

    monkeypatch.setattr(tfds.core.DatasetBuilder, "download_and_prepare", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)


@pytest.mark.parametrize("name,num_classes", [("cifar10", 10), ("cifar100", 100), ("svhn_cropped", 10)])
@pytest.mark.parametrize("split", ["train", "test"])
def test_load_split_reads_prepared_tfds_data(prepared, no_download, name, num_classes, split):
    data_dir, written = prepared
    images, labels = tfds_data.load_split(name, split, data_dir=data_dir)
    assert images.shape == (NUM, 32, 32, 3) and images.dtype == np.uint8
    assert labels.shape == (NUM,) and labels.dtype == np.int64
    assert labels.min() >= 0 and labels.max() < num_classes
    # Exactly the examples that were written, in file order.
    np.testing.assert_array_equal(images, np.stack([ex["image"] for ex in written[name][split]]))
    np.testing.assert_array_equal(labels, [ex["label"] for ex in written[name][split]])


def test_load_split_defaults_to_tfds_data_dir_env(prepared, no_download, monkeypatch):
    data_dir, _ = prepared
    monkeypatch.setenv("TFDS_DATA_DIR", data_dir)
    images, labels = tfds_data.load_split("cifar10", "test")
    assert images.shape == (NUM, 32, 32, 3) and labels.shape == (NUM,)
    assert tfds_data.tfds_data_dir() == data_dir
    assert tfds_data.tfds_data_dir("~/x") == os.path.expanduser("~/x")


def test_load_cifar10_corrupted_reads_prepared_config(prepared, no_download):
    data_dir, written = prepared
    images, labels = tfds_data.load_cifar10_corrupted("fog", 3, data_dir=data_dir)
    assert images.shape == (NUM, 32, 32, 3) and images.dtype == np.uint8
    assert labels.dtype == np.int64 and 0 <= labels.min() and labels.max() < 10
    np.testing.assert_array_equal(images, np.stack([ex["image"] for ex in written["cifar10_corrupted/fog_3"]["test"]]))
    images, _ = tfds_data.load_cifar10_corrupted("fog", np.int64(3), data_dir=data_dir)
    assert len(images) == NUM


def _assert_one_line_missing(error, name, folder):
    message = str(error.value)
    assert "\n" not in message
    assert name in message and folder in message
    assert "tfds build" in message and "TFDS_DATA_DIR" in message


@pytest.mark.parametrize("name", ["cifar10", "cifar100", "svhn_cropped"])
def test_missing_dataset_raises_quickly_without_download(tmp_path, no_download, name):
    start = time.monotonic()
    with pytest.raises(MissingDatasetError) as error:
        tfds_data.load_split(name, "train", data_dir=str(tmp_path))
    assert time.monotonic() - start < 5
    _assert_one_line_missing(error, name, str(tmp_path))
    assert list(tmp_path.iterdir()) == []  # nothing was written either


def test_missing_corruption_and_imagenet_raise(prepared, tmp_path, no_download):
    data_dir, _ = prepared
    # fog_3 is prepared there, fog_2 is not.
    with pytest.raises(MissingDatasetError) as error:
        tfds_data.load_cifar10_corrupted("fog", 2, data_dir=data_dir)
    _assert_one_line_missing(error, "cifar10_corrupted/fog_2", data_dir)
    with pytest.raises(MissingDatasetError) as error:
        tfds_data.imagenet_stream("validation", data_dir=str(tmp_path))
    _assert_one_line_missing(error, "imagenet2012", str(tmp_path))
    assert "downloads/manual" in str(error.value)


def test_missing_message_names_versions_found(tmp_path, no_download):
    (tmp_path / "cifar10" / "1.0.0").mkdir(parents=True)
    with pytest.raises(MissingDatasetError, match="found only version.*1.0.0"):
        tfds_data.load_split("cifar10", "test", data_dir=str(tmp_path))


def test_bad_arguments_raise_value_error(prepared):
    data_dir, _ = prepared
    with pytest.raises(ValueError, match="split"):
        tfds_data.load_split("cifar10", "validation", data_dir=data_dir)
    with pytest.raises(ValueError, match="Unknown dataset"):
        tfds_data.load_split("mnist", "train", data_dir=data_dir)
    with pytest.raises(ValueError, match="corruption"):
        tfds_data.load_cifar10_corrupted("glass_blur", 1, data_dir=data_dir)
    for severity in (0, 6, 2.5, True, "3", None):
        with pytest.raises(ValueError, match="severity"):
            tfds_data.load_cifar10_corrupted("fog", severity, data_dir=data_dir)
    with pytest.raises(ValueError, match="split"):
        tfds_data.imagenet_stream("test", data_dir=data_dir)


def test_corruption_list_matches_installed_tfds():
    configs = {c.name for c in tfds.builder_cls("cifar10_corrupted").BUILDER_CONFIGS}
    want = {f"{c}_{s}" for c in tfds_data.CIFAR10_CORRUPTIONS for s in tfds_data.CIFAR10_CORRUPTION_SEVERITIES}
    assert len(tfds_data.CIFAR10_CORRUPTIONS) == 19
    assert configs == want


def _expected_normalised():
    return (COLOUR / 255.0 - np.array(tfds_data.IMAGENET_MEAN)) / np.array(tfds_data.IMAGENET_STD)


def test_imagenet_eval_stream(prepared, no_download):
    data_dir, written = prepared
    ds = tfds_data.imagenet_stream("validation", data_dir=data_dir, image_size=32, batch_size=4)
    batches = list(ds.as_numpy_iterator())
    assert [len(x) for x, _ in batches] == [4, NUM - 4]  # one pass, partial last batch kept
    images = np.concatenate([x for x, _ in batches])
    labels = np.concatenate([y for _, y in batches])
    assert images.shape == (NUM, 32, 32, 3) and images.dtype == np.float32
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, [ex["label"] for ex in written["imagenet2012"]["validation"]])
    # Solid-colour JPEGs: every pixel is the normalised colour (up to JPEG rounding).
    np.testing.assert_allclose(images, np.broadcast_to(_expected_normalised(), images.shape), atol=0.05)


def test_imagenet_train_stream_is_augmented_repeated_and_seeded(prepared, no_download):
    data_dir, _ = prepared
    ds = tfds_data.imagenet_stream("train", data_dir=data_dir, image_size=24, batch_size=4, seed=1, shuffle_buffer=8)
    first = list(ds.take(3).as_numpy_iterator())  # 12 examples from 6: the stream repeats
    assert len(first) == 3
    for images, labels in first:
        assert images.shape == (4, 24, 24, 3) and images.dtype == np.float32
        assert labels.shape == (4,) and labels.dtype == np.int64
        assert labels.min() >= 0 and labels.max() < 1000
        np.testing.assert_allclose(images, np.broadcast_to(_expected_normalised(), images.shape), atol=0.05)
    again = list(
        tfds_data.imagenet_stream("train", data_dir=data_dir, image_size=24, batch_size=4, seed=1, shuffle_buffer=8)
        .take(3)
        .as_numpy_iterator()
    )
    for (x1, y1), (x2, y2) in zip(first, again):
        np.testing.assert_array_equal(y1, y2)
        np.testing.assert_array_equal(x1, x2)


def test_random_resized_crop_takes_a_window_and_eval_crop_is_central():
    # A horizontal ramp: the eval crop of a wide image keeps the central columns.
    ramp = np.tile(np.linspace(0, 255, 96).astype(np.uint8)[None, :, None], (48, 1, 3))
    encoded = tf.io.encode_jpeg(ramp, quality=100)
    central = tfds_data._resize_center_crop(encoded, 28).numpy()
    assert central.shape == (28, 28, 3)
    # Resized to 32 x 64 then the central 28 columns: values stay in the middle of the ramp.
    assert 60 < central[:, 0].mean() < 110 and 145 < central[:, -1].mean() < 195
    crops = [tfds_data._random_resized_crop(encoded, 16, tf.constant([s, 0], tf.int64)).numpy() for s in range(8)]
    assert all(c.shape == (16, 16, 3) for c in crops)
    assert len({round(float(c.mean()), 1) for c in crops}) > 1  # different windows for different seeds


@pytest.mark.skipif(not os.path.isdir(fashion_mnist.DEFAULT_DIR), reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_delegates_to_debian_files(monkeypatch, tmp_path, no_download):
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))  # tfds is not consulted
    monkeypatch.delenv(fashion_mnist.ENV_VAR, raising=False)
    images, labels = tfds_data.load_split("fashion_mnist", "test")
    want_images, want_labels = fashion_mnist.load_fashion_mnist("test")
    assert images.shape == (10_000, 28, 28, 1) and images.dtype == np.uint8 and labels.dtype == np.int64
    np.testing.assert_array_equal(images, want_images)
    np.testing.assert_array_equal(labels, want_labels)


def test_fashion_mnist_missing_files_keeps_its_error(tmp_path):
    with pytest.raises(MissingDatasetError, match="Fashion-MNIST"):
        tfds_data.load_split("fashion_mnist", "train", data_dir=str(tmp_path))


def test_imagenet_labels_and_sizes_read_without_images(prepared, no_download):
    data_dir, written = prepared
    assert tfds_data.imagenet_split_sizes(data_dir) == {"train": NUM, "validation": NUM}
    labels = tfds_data.imagenet_labels("validation", data_dir)
    np.testing.assert_array_equal(labels, [ex["label"] for ex in written["imagenet2012"]["validation"]])
    with pytest.raises(ValueError, match="'test'"):
        tfds_data.imagenet_labels("test", data_dir)


@pytest.mark.slow
def test_imagenet_resnet50_edst_config_runs_on_the_stream(no_download, tmp_path):
    """configs/imagenet_resnet50_edst.py end to end on prepared TFRecords, shrunk to 32x32 and 7 epochs."""
    from reporting import load_config
    from tf_freetickets.experiments import runner as experiment

    data_dir = os.fspath(tmp_path / "tfds")
    _write_prepared(data_dir, "imagenet2012", _textured_imagenet)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shrink = [
        f"data_dir='{data_dir}'", "image_size=32", "batch_size=2", "sparse.update_every=2",
        "ensemble.num_members=2", "ensemble.exploration_epochs=1", "ensemble.refinement_epochs=3",
        "ensemble.refinement_lr_epochs=(1, 1, 1)", "optimizer.warmup_epochs=1",
    ]  # fmt: skip
    config = load_config(os.path.join(root, "configs/imagenet_resnet50_edst.py"), shrink)
    assert (config.model, config.sparse.method, config.label_smoothing) == ("resnet50", "rigl", 0.1)
    results = experiment.run(config, str(tmp_path))
    assert results["members"] == 2 and results["sparsity"] == pytest.approx(0.8, abs=0.01)
    members = ["ticket_0", "ticket_0.keras", "ticket_1", "ticket_1.keras"]
    assert sorted(os.listdir(tmp_path / "members")) == ["manifest.json", *members]  # the run's own member list
    # Evaluated on the 6 validation images: accuracy is a multiple of 1/6.
    assert results["accuracy"] * NUM == pytest.approx(round(results["accuracy"] * NUM))
    # 6 training images / batch 2 = 3 steps per epoch, 1 + 2 x 3 epochs; RigL's dense gradients are costed.
    assert results["training"]["num_steps"] == 21 and results["training"]["gradient_flops"] > 0


def test_evaluate_binary_tests_a_cifar_run_on_its_own_dataset(prepared, tmp_path):
    """A CIFAR-10 workdir is evaluated on CIFAR-10 test images, with SVHN and CIFAR-100 as OoD sets."""
    import json
    import subprocess
    import sys

    import keras

    import tf_freetickets as tft

    data_dir, _ = prepared
    (tmp_path / "members").mkdir()
    keras.utils.set_random_seed(0)
    model = tft.sparsify(tft.models.small_cnn(input_shape=(32, 32, 3), width=0.25), 0.8, seed=0)
    model.save(tmp_path / "members" / "member_0.keras")
    (tmp_path / "results.json").write_text(json.dumps({"config": {"dataset": "cifar10", "data_dir": data_dir}}))
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    result = subprocess.run(
        [sys.executable, "-m", "tf_freetickets.evaluate", f"--source={tmp_path}", "--ood_examples=4",
         "--corruptions=contrast,saturate", "--corruption_examples=0"],
        cwd=root, capture_output=True, text=True, timeout=600, env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads((tmp_path / "evaluation.json").read_text())["results"]
    assert sorted(saved["ood"]) == ["cifar100", "gaussian_noise", "svhn_cropped", "uniform_noise"]
    assert sum(saved["reliability"]["counts"]) == NUM  # the 6 CIFAR-10 test images
    assert sorted(saved["corruption"]) == ["contrast", "saturate"] and saved["corruption_examples"] == NUM
