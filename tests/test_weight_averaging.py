"""WeightAveraging: mean of end-of-epoch snapshots, exact sparsity, BN statistics recomputed."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_freetickets as tft
from tf_freetickets.ensembles import recompute_batchnorm_statistics
from tf_freetickets.sparse import layers as masking
from tf_freetickets.sparse.methods.cigl import random_keep_mask


class Snapshots(keras.callbacks.Callback):
    def on_train_begin(self, logs=None):
        self.weights = []

    def on_epoch_end(self, epoch, logs=None):
        self.weights.append([v.numpy().copy() for v in self.model.trainable_variables])


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8,))
    x = keras.layers.Dense(16, name="fc")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    model = tft.sparsify(keras.Model(inputs, keras.layers.Dense(3, name="logits")(keras.layers.ReLU()(x))), 0.5, seed=0)
    model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def test_average_of_last_epochs_with_masks_applied():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8)).astype("float32")
    y = rng.integers(0, 3, 64)
    model = _model()
    snapshots = Snapshots()
    averaging = tft.WeightAveraging(start_fraction=0.6)
    # Snapshots must see the epoch-end weights before averaging replaces them at train end.
    model.fit(x, y, batch_size=16, epochs=5, verbose=0, callbacks=[snapshots, averaging])
    # ceil(0.6 * 5) = 3: the ends of epochs 3, 4, 5 (as CigL's 200 of 250 gives epochs 200..250).
    assert averaging.start_epoch == 2 and averaging.num_averaged == 3
    want = [np.mean([s[i] for s in snapshots.weights[averaging.start_epoch :]], axis=0) for i in range(len(snapshots.weights[0]))]
    for variable, expected in zip(model.trainable_variables, want):
        np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-6, atol=1e-7)
    for layer in masking.masked_layers(model):
        assert np.all(layer.kernel_variable.numpy()[layer.kernel_mask.numpy() == 0] == 0)
    averaging.restore_final()
    for variable, expected in zip(model.trainable_variables, snapshots.weights[-1]):
        np.testing.assert_array_equal(variable.numpy(), expected)


def test_stored_snapshots_are_already_masked_so_averaging_w_or_w_times_mask_is_the_same():
    # Algorithm 1 averages W * Z; a stored kernel is exact zeros outside its mask at every epoch end (masks moving
    # or not), so the average of W is the average of W * Z.
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(64, 8)).astype("float32"), rng.integers(0, 3, 64)
    model = _model()
    snapshots, masks = Snapshots(), []
    layers = masking.masked_layers(model)
    record = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: masks.append([layer.kernel_mask.numpy() for layer in layers])
    )
    update = tft.MaskUpdate(tft.RigL(update_every=2, drop_fraction=0.5, end_step=8), (x, y))
    model.fit(x, y, batch_size=16, epochs=3, verbose=0, shuffle=False, callbacks=[update, snapshots, record])
    position = {id(variable): i for i, variable in enumerate(model.trainable_variables)}
    for weights, epoch_masks in zip(snapshots.weights, masks):
        for layer, mask in zip(layers, epoch_masks):
            kernel = weights[position[id(layer.kernel_variable)]]
            np.testing.assert_array_equal(kernel, kernel * mask)
    assert update.history  # the masks did move


def test_cigl_snapshots_carry_the_next_steps_random_mask():
    # CigL's main.py averages param.data after the epoch's last Masking.step(), which has zeroed the weights the
    # next step's random mask drops: snapshot = kernel * keep(layer, iterations).
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 8)).astype("float32"), rng.integers(0, 3, 64)
    model = _model()
    updater = tft.CigL(update_every=1000, end_step=1000, random_drop_rate=0.3, seed=2)
    snapshots, steps = Snapshots(), []
    record_step = keras.callbacks.LambdaCallback(on_epoch_end=lambda e, logs: steps.append(int(model.optimizer.iterations)))
    averaging = tft.WeightAveraging(start_fraction=0.5, kernel_snapshot=updater.averaging_snapshot)
    model.fit(x, y, batch_size=16, epochs=4, verbose=0, shuffle=False,
              callbacks=[tft.MaskUpdate(updater, (x, y)), snapshots, record_step, averaging])  # fmt: skip
    assert averaging.num_averaged == 3 and steps == [4, 8, 12, 16]  # epochs 2-4 (ceil(0.5 * 4) = 2)
    layers = masking.masked_layers(model)  # fc (index 0), logits (index 1)
    index_of = {id(layer.kernel_variable): i for i, layer in enumerate(layers)}
    for position, variable in enumerate(model.trainable_variables):
        taken = []
        for weights, step in zip(snapshots.weights[1:], steps[1:]):
            value = weights[position]
            if id(variable) in index_of:
                value = value * random_keep_mask(value.shape, 2, index_of[id(variable)], tf.constant(step, tf.int64), 0.3).numpy()
            taken.append(value)
        np.testing.assert_allclose(variable.numpy(), np.mean(taken, axis=0), rtol=1e-6, atol=1e-7)
    fc = layers[0]
    dropped = random_keep_mask((8, 16), 2, 0, tf.constant(16, tf.int64), 0.3).numpy() == 0
    assert np.any(dropped & (fc.kernel_mask.numpy() > 0))  # the last snapshot did drop some active weights


def test_recomputed_batchnorm_statistics_are_the_mean_of_batch_statistics():
    rng = np.random.default_rng(1)
    x = rng.normal(loc=2.0, size=(48, 8)).astype("float32")
    model = _model()
    batches = [x[i : i + 16] for i in range(0, 48, 16)]
    assert recompute_batchnorm_statistics(model, batches) == 3
    fc = model.get_layer("fc")
    hidden = [fc(b).numpy() for b in batches]
    bn = model.get_layer("bn")
    np.testing.assert_allclose(bn.moving_mean.numpy(), np.mean([h.mean(0) for h in hidden], axis=0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bn.moving_variance.numpy(), np.mean([h.var(0) for h in hidden], axis=0), rtol=1e-4)
    assert bn.momentum == 0.99


def test_bad_start_fraction():
    with pytest.raises(ValueError, match="start_fraction"):
        tft.WeightAveraging(start_fraction=1.0)
