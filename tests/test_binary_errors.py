"""Damaged data files and bad command lines end in one `error:` line and exit code 2."""

import gzip
import os
import subprocess
import sys

import numpy as np
import pytest

from tf_freetickets.data import DEFAULT_DIR, DatasetError, load_fashion_mnist
from tf_freetickets.experiments.config import ConfigError, fashion_mnist_defaults, validate
from tf_freetickets.experiments.data_sources import ArrayData

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_data = pytest.mark.skipif(not os.path.isdir(DEFAULT_DIR), reason=f"Fashion-MNIST not installed at {DEFAULT_DIR}")


def _idx(array, magic):
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.asarray(array, np.uint8).tobytes()


def _write_split(folder, images=None, labels=None, split_stems=("t10k", "train")):
    images = np.zeros((4, 28, 28), np.uint8) if images is None else images
    labels = np.arange(4, dtype=np.uint8) if labels is None else labels
    for stem in split_stems:
        (folder / f"{stem}-images-idx3-ubyte").write_bytes(_idx(images, 0x803))
        (folder / f"{stem}-labels-idx1-ubyte").write_bytes(_idx(labels, 0x801))


def test_valid_small_files_load(tmp_path):
    _write_split(tmp_path)
    images, labels = load_fashion_mnist("test", tmp_path)
    assert images.shape == (4, 28, 28, 1) and labels.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:-100]), "is truncated or padded: 3036 values for shape [4, 28, 28]"),
        (lambda p: p.write_bytes(b"\x8b\x1f garbage bytes"), "is not an idx file of the expected kind (magic 0x8b1f2067"),
        (
            lambda p: p.write_bytes(b""),
            "is not an idx file of the expected kind (magic none, the file is shorter than 4 bytes, expected 0x803)",
        ),
        (
            lambda p: p.write_bytes(_idx(np.zeros(4), 0x801)),
            "is not an idx file of the expected kind (magic 0x801, expected 0x803)",
        ),
    ],
    ids=["truncated", "garbage", "empty", "labels-in-place-of-images"],
)
def test_damaged_image_file_is_named(tmp_path, damage, message):
    _write_split(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte"
    damage(path)
    with pytest.raises(DatasetError) as error:
        load_fashion_mnist("test", tmp_path)
    assert str(error.value).startswith(str(path)) and message in str(error.value)


def test_garbage_gzip_file_is_named(tmp_path):
    _write_split(tmp_path)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte")
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(b"0123456789")[:12])  # cut inside the stream
    with pytest.raises(DatasetError, match=r"t10k-labels-idx1-ubyte.gz cannot be read"):
        load_fashion_mnist("test", tmp_path)


def test_label_outside_the_ten_classes_is_named(tmp_path):
    _write_split(tmp_path, labels=np.array([0, 1, 200, 3], np.uint8))  # one corrupted label byte
    with pytest.raises(DatasetError) as error:
        load_fashion_mnist("test", tmp_path)
    assert str(error.value) == (
        f"{tmp_path / 't10k-labels-idx1-ubyte'} holds label 200 at position 2; Fashion-MNIST labels are in [0, 10) "
        "(a damaged file: reinstall the dataset)."
    )


def test_array_data_classes_come_from_the_dataset_not_the_labels():
    x = np.zeros((3, 4, 4, 1), np.uint8)
    assert ArrayData(x, np.array([0, 1, 2]), x, np.array([0, 1, 1]), num_classes=10).num_classes == 10
    with pytest.raises(DatasetError, match=r"The test labels span \[0, 12\], outside the dataset's \[0, 10\) classes"):
        ArrayData(x, np.array([0, 1, 2]), x, np.array([0, 12, 1]), num_classes=10)


def test_negative_seed_is_a_config_error():
    config = fashion_mnist_defaults()
    config.seed = -1
    with pytest.raises(ConfigError, match=r"config.seed=-1 must be an integer >= 0."):
        validate(config)


def test_an_independent_ensemble_needs_every_member_seed_in_numpys_range():
    config = fashion_mnist_defaults()
    config.ensemble.kind, config.ensemble.num_members, config.seed = "independent", 3, 2**32 - 3
    validate(config)
    config.seed = 2**32 - 2
    with pytest.raises(ConfigError, match=r"^config.seed=4294967294 must be an integer in \[0, 4294967293\] \(its 3 "):
        validate(config)


def _binary(*args, module="tf_freetickets.train"):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


def _one_error_line(result):
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


RIGL = "--config=configs/fashion_mnist_rigl.py"


@pytest.mark.parametrize(
    "args,expected",
    [
        (
            [RIGL, "--config.sparse.sparsty=0.5"],
            "error: --config.sparse.sparsty is not a config field; did you mean --config.sparse.sparsity?",
        ),
        (
            ["--config=configs/no_such_config.py"],
            "error: cannot load --config=configs/no_such_config.py: [Errno 2] No such file or directory",
        ),
        ([RIGL, "--wrkdir=x"], "error: unknown flag --wrkdir; did you mean --workdir?"),
        ([RIGL, "--config.seed=-3"], "error: config.seed=-3 must be an integer >= 0."),
        ([RIGL, "--config.seed=4294967296"], "error: config.seed=4294967296 must be an integer in [0, 4294967295]."),
        ([RIGL, "--config.optimizer.momentum=-5"], "error: config.optimizer.momentum=-5.0 must be a number in [0, 1)."),
        (
            [RIGL, "--config.optimizer.learning_rate=nan"],
            "error: config.optimizer.learning_rate=nan must be a finite number > 0.",
        ),
    ],
    ids=["unknown-field", "missing-config-file", "unknown-flag", "negative-seed", "seed-2**32", "momentum", "nan-rate"],
)
def test_bad_command_lines(tmp_path, args, expected):
    line = _one_error_line(_binary(*args, f"--workdir={tmp_path / 'run'}"))
    assert line.startswith(expected)


def test_workdir_that_is_a_file(tmp_path):
    path = tmp_path / "file"
    path.write_text("x")
    assert (
        _one_error_line(_binary(RIGL, f"--workdir={path}"))
        == f"error: --workdir={path} is a file, not a folder; pass a folder path."
    )


def test_unwritable_workdir():
    # /sys refuses new folders even to root, as a read-only mount would.
    line = _one_error_line(_binary(RIGL, "--workdir=/sys/tft_run"))
    assert line.startswith("error: --workdir=/sys/tft_run cannot be written (")


def test_damaged_data_file_through_the_binary(tmp_path):
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    _write_split(data_dir, labels=np.array([0, 1, 200, 3], np.uint8))
    line = _one_error_line(_binary(RIGL, f"--config.data_dir={data_dir}", f"--workdir={tmp_path / 'run'}"))
    assert line.startswith(f"error: {data_dir / 'train-labels-idx1-ubyte'} holds label 200 at position 2")
    assert not (tmp_path / "run" / "run_record.json").exists()  # nothing recorded: a fixed rerun starts fresh


@needs_data
def test_train_examples_below_the_batch_size(tmp_path):
    line = _one_error_line(_binary(RIGL, "--config.train_examples=100", f"--workdir={tmp_path}"))
    assert line == (
        "error: config.batch_size=128 is larger than the 100 training examples (config.train_examples=100), so an epoch "
        "has no full batch; lower batch_size or raise train_examples."
    )


def test_export_names_an_empty_member_file(tmp_path):
    (tmp_path / "member_0.keras").write_bytes(b"")
    line = _one_error_line(_binary(f"--source={tmp_path}", f"--output={tmp_path / 'o'}", module="tf_freetickets.export_main"))
    assert (
        line
        == f"error: Ensemble member '{tmp_path / 'member_0.keras'}' is an empty file (0 bytes): it was not written completely."
    )


def _prepared_cifar10(data_dir, label=1):
    """A tiny prepared tfds cifar10 (TFRecord shard + dataset info), as `tfds build` leaves it."""
    tfds = pytest.importorskip("tensorflow_datasets")
    import tensorflow as tf

    builder = tfds.builder("cifar10", data_dir=data_dir)
    features = builder.info.features
    builder.data_path.mkdir(parents=True, exist_ok=True)
    infos = []
    for split in ("train", "test"):
        filename = os.fspath(builder.data_path / f"cifar10-{split}.tfrecord-00000-of-00001")
        with tf.io.TFRecordWriter(filename) as writer:
            for i in range(4):
                image = np.full((32, 32, 3), 10 * i, np.uint8)
                writer.write(features.serialize_example({"id": f"{split}_{i}", "image": image, "label": label}))
        infos.append(tfds.core.SplitInfo(name=split, shard_lengths=[4], num_bytes=os.path.getsize(filename)))
    builder.info.set_splits(tfds.core.SplitDict(infos))
    builder.info.write_to_directory(builder.data_path)
    return builder.data_path


def test_truncated_tfrecord_shard_is_one_dataset_error(tmp_path):
    from tf_freetickets.data import load_split

    path = _prepared_cifar10(tmp_path)
    assert load_split("cifar10", "test", tmp_path)[1].tolist() == [1, 1, 1, 1]
    shard = path / "cifar10-test.tfrecord-00000-of-00001"
    shard.write_bytes(shard.read_bytes()[:-50])
    with pytest.raises(DatasetError, match=r"^cifar10/test prepared in .* cannot be read \(.*\); prepare it again.$"):
        load_split("cifar10", "test", tmp_path)


@needs_data
@pytest.mark.parametrize(
    "args,expected",
    [
        (
            ["--config=configs/fashion_mnist_gmp.py", "--config.sparse.block_size=1,4"],
            "error: Block sparsity (1, 4) applies to rank-2 (Dense) kernels as in tfmot; layer 'conv1_1' (MaskedConv2D)",
        ),
        (
            [RIGL, "--config.sparse.n_m=2:4", "--config.sparse.sparsity=0.5", "--config.sparse.distribution=uniform"],
            "error: N:M sparsity 2:4 needs each layer's input dimension divisible by 4; layer 'conv1_1' has 1.",
        ),
    ],
    ids=["block-on-conv", "n_m-on-one-channel"],
)
def test_a_structure_a_layer_cannot_take_is_one_line(tmp_path, args, expected):
    line = _one_error_line(_binary(*args, "--config.train_examples=256", f"--workdir={tmp_path / 'run'}"))
    assert line.startswith(expected)
    assert "StructureError" not in line
