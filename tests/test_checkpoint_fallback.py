"""A damaged newest checkpoint falls back to the newest intact one; kills' temp folders are removed."""

import os
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest

from tf_freetickets.data import DEFAULT_DIR
from tf_freetickets.experiments.checkpointing import CheckpointError, EpochCheckpoint, restore_latest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Counter(keras.callbacks.Callback):
    """A stateful callback: its state is the number of epochs it saw."""

    def __init__(self):
        super().__init__()
        self.epochs = 0

    def on_epoch_end(self, epoch, logs=None):
        self.epochs += 1

    def get_state(self):
        return {"epochs": np.asarray(self.epochs)}

    def set_state(self, state):
        self.epochs = int(state["epochs"])


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile(keras.optimizers.SGD(0.1), "mse")
    return model


def _train(directory, epochs=3):
    """Trains 3 epochs with checkpoints kept for all; returns the kernel after each epoch."""
    model = _model()
    kernels = []

    class Snapshot(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            kernels.append(model.layers[1].kernel.numpy().copy())

    counter = Counter()
    x, y = np.ones((8, 4), "float32"), np.zeros((8, 2), "float32")
    model.fit(
        x, y, epochs=epochs, verbose=0, callbacks=[counter, Snapshot(), EpochCheckpoint(directory, [counter], max_to_keep=5)]
    )
    return kernels


def _flip_bytes(path):
    data = bytearray(path.read_bytes())
    for i in range(0, len(data), 7):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


DAMAGES = {
    "truncated data": lambda d: (d / "ckpt-3.data-00000-of-00001").write_bytes(
        (d / "ckpt-3.data-00000-of-00001").read_bytes()[:10]
    ),
    "empty index": lambda d: (d / "ckpt-3.index").write_bytes(b""),
    "flipped data bytes": lambda d: _flip_bytes(d / "ckpt-3.data-00000-of-00001"),
    "garbage callback state": lambda d: (d / "callback_state-3.npz").write_bytes(b"not a zip file"),
    "missing callback state": lambda d: (d / "callback_state-3.npz").unlink(),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, capsys, damage):
    kernels = _train(str(tmp_path))
    DAMAGES[damage](tmp_path)
    (tmp_path / "ckpt-4_temp").mkdir()  # what a kill during a save leaves
    (tmp_path / "ckpt-4_temp" / "part-00000-of-00001.data-00000-of-00001").write_bytes(b"x")
    model, counter = _model(), Counter()
    assert restore_latest(model, str(tmp_path), [counter]) == 2
    np.testing.assert_array_equal(model.layers[1].kernel.numpy(), kernels[1])  # epoch 2's weights exactly
    assert counter.epochs == 2
    err = capsys.readouterr().err
    assert err.startswith(f"warning: checkpoint ckpt-3 in {tmp_path} is damaged (") and err.count("\n") == 1
    assert not (tmp_path / "ckpt-4_temp").exists()
    assert sorted(p.name for p in tmp_path.glob("ckpt-*.index")) == ["ckpt-1.index", "ckpt-2.index"]
    assert (tmp_path / "damaged").is_dir()
    import tensorflow as tf

    assert tf.train.latest_checkpoint(str(tmp_path)).endswith("ckpt-2")  # the state file agrees


def test_a_copy_made_after_a_fallback_never_touches_the_original(tmp_path, capsys):
    original, copy = tmp_path / "original", tmp_path / "copy"
    _train(str(original))
    DAMAGES["empty index"](original)
    restore_latest(_model(), str(original), [Counter()])  # sets ckpt-3 aside, rewrites the state file
    assert "ckpt-3" in capsys.readouterr().err
    shutil.copytree(original, copy)
    before = sorted(p.name for p in original.iterdir())
    model, counter = _model(), Counter()
    initial_epoch = restore_latest(model, str(copy), [counter])
    x, y = np.ones((8, 4), "float32"), np.zeros((8, 2), "float32")
    callbacks = [counter, EpochCheckpoint(str(copy), [counter], max_to_keep=2)]
    model.fit(x, y, epochs=5, initial_epoch=initial_epoch, verbose=0, callbacks=callbacks)
    assert sorted(p.name for p in original.iterdir()) == before  # the copy's sweep deleted only its own files
    assert sorted(p.name for p in copy.glob("ckpt-*.index")) == ["ckpt-4.index", "ckpt-5.index"]


def test_no_intact_checkpoint_is_one_error(tmp_path, capsys):
    _train(str(tmp_path), epochs=2)
    for number in (1, 2):
        (tmp_path / f"ckpt-{number}.index").write_bytes(b"")
    with pytest.raises(CheckpointError, match="No intact checkpoint left in"):
        restore_latest(_model(), str(tmp_path), [Counter()])
    assert capsys.readouterr().err.count("warning: checkpoint") == 2


def test_garbage_checkpoint_state_file_is_rebuilt(tmp_path):
    kernels = _train(str(tmp_path))
    (tmp_path / "checkpoint").write_text("this is { not a state file")
    model = _model()
    assert restore_latest(model, str(tmp_path), [Counter()]) == 3
    np.testing.assert_array_equal(model.layers[1].kernel.numpy(), kernels[2])


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(DEFAULT_DIR), reason=f"Fashion-MNIST not installed at {DEFAULT_DIR}")
def test_binary_resumes_past_a_damaged_checkpoint_to_the_same_result(tmp_path):
    args = [
        "--config=configs/fashion_mnist_rigl.py", "--config.train_examples=256", "--config.batch_size=64",
        "--config.width=0.25", "--config.epochs=2", "--config.sparse.update_every=3", "--config.deterministic=True",
        f"--workdir={tmp_path}",
    ]  # fmt: skip
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")

    def train():
        command = [sys.executable, "-m", "tf_freetickets.train", *args]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)

    def member_weights():
        import tf_freetickets  # noqa: F401  (registers the masked layers)

        return [w.numpy() for w in keras.models.load_model(tmp_path / "members" / "member_0.keras").weights]

    first = train()
    assert first.returncode == 0, first.stderr[-3000:]
    expected = member_weights()
    checkpoints = tmp_path / "checkpoints" / "member_0"
    _flip_bytes(checkpoints / "ckpt-2.data-00000-of-00001")
    (checkpoints / "ckpt-3_temp").mkdir()
    again = train()
    assert again.returncode == 0, again.stderr[-3000:]
    warnings = [line for line in again.stderr.splitlines() if line.startswith("warning: checkpoint")]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: checkpoint ckpt-2 in {checkpoints} is damaged")
    assert "Resuming member_0 after epoch 1" in again.stdout
    assert not (checkpoints / "ckpt-3_temp").exists()
    for a, b in zip(expected, member_weights()):
        np.testing.assert_array_equal(a, b)  # epoch 2 retrained from ckpt-1: bit for bit the same member
