"""NaN/Inf never reaches a mask, a checkpoint or a member; non-binary masks are counted and named."""

import os
import subprocess
import sys
import warnings

import keras
import numpy as np
import pytest

import tf_freetickets as tft
from tf_freetickets.data import DEFAULT_DIR
from tf_freetickets.experiments.guards import FiniteTrainingGuard, NonFiniteTrainingError
from tf_freetickets.sparse.mask_engine import MaskEngine

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(hidden))
    model = tft.sparsify(model, 0.5, distribution="uniform", seed=seed)
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _data(n=32):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 6)).astype("float32"), rng.integers(0, 3, n)


@pytest.mark.parametrize("updater", [tft.SET(update_every=1), tft.RigL(update_every=1)])
def test_mask_update_refuses_non_finite_scores_and_leaves_the_masks(updater):
    model = _model()
    x, y = _data()
    updater.schedule = updater.schedule.resolved(10)
    engine = MaskEngine(model, updater, gradient_data=(x, y), gradient_batch_size=16)
    layer = tft.sparse.masked_layers(model)[0]
    masks_before = [m.kernel_mask.numpy().copy() for m in tft.sparse.masked_layers(model)]
    kernel = layer.kernel_variable.numpy()
    kernel[np.nonzero(layer.kernel_mask.numpy())[0][0], np.nonzero(layer.kernel_mask.numpy())[1][0]] = np.nan
    layer.kernel_variable.assign(kernel)
    expected = r"Mask update after step 1: layer 'hidden' has NaN/Inf (weights|dense gradients)"
    with pytest.raises(FloatingPointError, match=expected):
        engine.update(1)
    for before, masked in zip(masks_before, tft.sparse.masked_layers(model)):
        np.testing.assert_array_equal(masked.kernel_mask.numpy(), before)


def test_sparsity_counts_nonzero_mask_entries_and_flags_non_binary_masks():
    model = _model()
    hidden = tft.sparse.masked_layers(model)[0]
    mask = hidden.kernel_mask.numpy()  # 6x8, 24 active
    assert int(mask.sum()) == 24
    mask[mask == 1] = 2.0  # summing would report 48 active of 48 (density 1.0)
    hidden.kernel_mask.assign(mask)
    table = tft.sparsity_table(model)
    row = next(line for line in table.splitlines() if line.startswith("hidden"))
    assert row.split()[1:5] == ["6x8", "0.5000", "24", "48"] and row.endswith("NOT 0/1")
    assert "NOT 0/1" not in next(line for line in table.splitlines() if line.startswith("out"))
    with pytest.warns(UserWarning, match=r"Masks of \['hidden'\] are not 0/1"):
        assert tft.global_sparsity(model) == pytest.approx(1 - (24 + 12) / (48 + 24))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hidden.kernel_mask.assign(np.where(mask != 0, 1.0, 0.0))
        tft.global_sparsity(model)  # binary again: no warning


def test_guard_stops_fit_at_the_first_non_finite_loss():
    model = _model()
    x, y = _data()
    sample_weight = np.ones(len(x), "float32")
    sample_weight[20] = np.nan  # batch 3 of 8-example batches has a NaN loss

    class Recorder(keras.callbacks.Callback):
        batches = []

        def on_train_batch_end(self, batch, logs=None):
            self.batches.append(batch)

    recorder = Recorder()
    with pytest.raises(NonFiniteTrainingError, match=r"model: the loss became nan in epoch 1, batch 3 \(optimizer step 3\)"):
        model.fit(
            x, y, sample_weight=sample_weight, batch_size=8, epochs=2, shuffle=False, verbose=0,
            callbacks=[FiniteTrainingGuard("model"), recorder],
        )  # fmt: skip
    assert recorder.batches == [0, 1]  # the later callbacks never saw the bad batch


def test_guard_stops_at_epoch_end_on_non_binary_masks():
    model = _model()
    x, y = _data()

    class Breaker(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            layer = tft.sparse.masked_layers(self.model)[1]
            layer.kernel_mask.assign(layer.kernel_mask * 3.0)

    with pytest.raises(NonFiniteTrainingError, match=r"masks of out are no longer 0/1 after epoch 1"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[FiniteTrainingGuard("model"), Breaker()])


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(DEFAULT_DIR), reason=f"Fashion-MNIST not installed at {DEFAULT_DIR}")
def test_binary_stops_a_diverging_run_with_the_last_good_checkpoint_newest(tmp_path):
    # lr 0.01 in epoch 1, then x1e6 (1e4) from the middle of training: epoch 2 diverges.
    args = [
        "--config=configs/fashion_mnist_rigl.py", "--config.train_examples=256", "--config.batch_size=64",
        "--config.width=0.25", "--config.epochs=2", "--config.sparse.update_every=2",
        "--config.optimizer.learning_rate=0.01", "--config.optimizer.schedule=step", "--config.optimizer.gamma=1000000",
    ]  # fmt: skip
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, "-m", "tf_freetickets.train", *args, f"--workdir={tmp_path}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env=env,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr
    assert "error: member_0: " in errors[0] and "in epoch 2" in errors[0]
    checkpoints = tmp_path / "checkpoints" / "member_0"
    assert f"the newest checkpoint ({checkpoints}, after epoch 1) is the last good one" in errors[0]
    assert sorted(p.name for p in checkpoints.glob("ckpt-*.index")) == ["ckpt-1.index"]
    assert not list((tmp_path / "members").glob("*.keras")) and not (tmp_path / "results.json").exists()
    # The kept checkpoint is finite with 0/1 masks.
    import tensorflow as tf

    reader = tf.train.load_checkpoint(str(checkpoints / "ckpt-1"))
    for name in reader.get_variable_to_shape_map():
        value = reader.get_tensor(name)
        if isinstance(value, np.ndarray) and value.dtype.kind == "f":
            assert np.all(np.isfinite(value)), name
    masks = [n for n in reader.get_variable_to_shape_map() if "kernel_mask" in n and "OPTIMIZER" not in n]
    assert masks and all(set(np.unique(reader.get_tensor(n))) <= {0.0, 1.0} for n in masks)


def _batchnorm_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    hidden = keras.layers.BatchNormalization(name="bn")(keras.layers.Dense(8, name="hidden")(inputs))
    model = tft.sparsify(keras.Model(inputs, keras.layers.Dense(3, name="out")(hidden)), 0.5, distribution="uniform")
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_guard_stops_at_non_finite_batchnorm_statistics_with_a_finite_loss():
    # At a huge learning rate the BatchNorm moving variance overflows while the loss stays finite (issue 28).
    model = _batchnorm_model()
    x, y = _data()

    class Overflow(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            bn = self.model.get_layer("bn")
            bn.moving_variance.assign(np.full(8, np.inf, "float32"))

    class Recorder(keras.callbacks.Callback):
        ends = []

        def on_epoch_end(self, epoch, logs=None):
            self.ends.append(epoch)

    with pytest.raises(NonFiniteTrainingError, match=r"model: variables became NaN/Inf in epoch 1 \(bn/moving_variance\)"):
        model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[FiniteTrainingGuard("model"), Overflow(), Recorder()])
    assert Recorder.ends == []  # the checkpoint callback (after the guard) never ran


def test_check_finite_names_optimizer_slots_too():
    from tf_freetickets.experiments.guards import check_finite, non_finite_variables

    model = _batchnorm_model()
    x, y = _data()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert non_finite_variables(model) == []
    check_finite(model, "member_0")  # finite: no error
    slot = next(v for v in model.optimizer.variables if "momentum" in v.path and "hidden" in v.path)
    slot.assign(np.full(slot.shape, np.nan, "float32"))
    model.get_layer("bn").moving_mean.assign(np.full(8, np.inf, "float32"))
    with pytest.raises(NonFiniteTrainingError, match=r"member_0: 2 saved variable\(s\) hold NaN/Inf") as error:
        check_finite(model, "member_0")
    assert "bn/moving_mean" in str(error.value) and slot.path in str(error.value)
