"""MirroredStrategy over two logical CPUs (set up in conftest.py)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_freetickets as tft
from tf_freetickets.sparse import layers as masking


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu", name="fc")(x)
    return tft.sparsify(keras.Model(inputs, keras.layers.Dense(4, name="logits")(x)), 0.8, seed=1)


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 4, 64)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(32)


@pytest.fixture(scope="module")
def mirrored():
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("needs two logical CPU devices (configured in conftest.py before TF starts)")
    return tf.distribute.MirroredStrategy([d.name for d in devices[:2]])


def _replica_values(variable):
    return [v.numpy() for v in variable.value.values]


@pytest.mark.parametrize("updater_cls", [tft.SET, tft.RigL])
def test_masks_identical_on_every_replica_after_updates(mirrored, updater_cls):
    with mirrored.scope():
        model = _model()
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = _data()
    update = tft.MaskUpdate(updater_cls(update_every=2, drop_fraction=0.5, end_step=8, seed=3), gradient_data=data)
    model.fit(data.repeat(4), epochs=1, verbose=0, callbacks=[update])
    assert [step for step, _, _ in update.history] == [2, 4, 6, 8]
    for layer in masking.masked_layers(model):
        copies = _replica_values(layer.kernel_mask)
        assert len(copies) == 2
        np.testing.assert_array_equal(copies[0], copies[1])
        kernels = _replica_values(layer.kernel_variable)
        np.testing.assert_array_equal(kernels[0], kernels[1])
        assert np.all(kernels[0][copies[0] == 0] == 0)


@pytest.mark.parametrize("updater_cls", [tft.SET, tft.RigL])
def test_update_under_strategy_equals_single_device(mirrored, updater_cls):
    results = []
    for strategy in (tf.distribute.get_strategy(), mirrored):
        with strategy.scope():
            model = _model()
            model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            model.optimizer.build(model.trainable_variables)
        updater = updater_cls(update_every=1, drop_fraction=0.5, end_step=8, seed=3)
        engine = tft.sparse.MaskEngine(model, updater, gradient_data=_data().take(1).repeat())
        gradients = [g.numpy() for g in engine.dense_gradients()] if updater.uses_gradients else []
        engine.update(1)
        results.append(([layer.kernel_mask.numpy() for layer in masking.masked_layers(model)], gradients))
    (single_masks, single_grads), (mirrored_masks, mirrored_grads) = results
    for single, distributed in zip(single_masks, mirrored_masks):
        np.testing.assert_array_equal(single, distributed)
    # The global-batch gradient, not one replica's half nor a mean of sums.
    for single, distributed in zip(single_grads, mirrored_grads):
        np.testing.assert_allclose(single, distributed, rtol=1e-4, atol=1e-7)


def test_freetickets_official_rules_under_strategy_equal_single_device(mirrored):
    # Dense-gradient momentum, the re-mask after each step and the step-batch growth gradient
    # (summed over replicas by its on-read buffers) give the single-device masks and weights.
    results = []
    for strategy in (tf.distribute.get_strategy(), mirrored):
        with strategy.scope():
            model = _model()
            model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        updater = tft.sparse.freetickets_official(tft.RigL, update_every=2, drop_fraction=0.5, end_step=4, seed=3)
        update = tft.MaskUpdate(updater)
        model.fit(_data().take(1).repeat(4), epochs=1, verbose=0, callbacks=[update])
        assert [step for step, _, _ in update.history] == [2, 4]
        results.append([(layer.kernel_mask.numpy(), layer.kernel_variable.numpy()) for layer in masking.masked_layers(model)])
        if strategy is mirrored:
            for layer in masking.masked_layers(model):
                copies = _replica_values(layer.kernel_mask)
                np.testing.assert_array_equal(copies[0], copies[1])
    for (single_mask, single_kernel), (mirrored_mask, mirrored_kernel) in zip(*results):
        np.testing.assert_array_equal(single_mask, mirrored_mask)
        np.testing.assert_allclose(single_kernel, mirrored_kernel, rtol=1e-4, atol=1e-6)
        assert np.all(mirrored_kernel[mirrored_mask == 0] == 0)


def test_cigl_random_mask_and_restored_weights_under_strategy_equal_single_device(mirrored):
    # CigL as its code applies the random mask: unscaled, dropped weights restored after each update (a wrapper
    # around the optimizer's apply that keeps no state), growth by the step's gradient at the masked kernel, the
    # randomly dropped weights pruned first. Every replica draws the same masks, so the runs agree.
    results = []
    for strategy in (tf.distribute.get_strategy(), mirrored):
        with strategy.scope():
            model = _model()
            model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        updater = tft.CigL(update_every=2, drop_fraction=0.5, end_step=4, random_drop_rate=0.2, seed=3,
                           growth_gradient="step_batch")  # fmt: skip
        update = tft.MaskUpdate(updater)
        model.fit(_data().take(1).repeat(4), epochs=1, verbose=0, callbacks=[update])
        assert [step for step, _, _ in update.history] == [2, 4]
        results.append([(layer.kernel_mask.numpy(), layer.kernel_variable.numpy()) for layer in masking.masked_layers(model)])
        if strategy is mirrored:
            for layer in masking.masked_layers(model):
                for variable in (layer.kernel_mask, layer.kernel_variable):
                    copies = _replica_values(variable)
                    np.testing.assert_array_equal(copies[0], copies[1])
    for (single_mask, single_kernel), (mirrored_mask, mirrored_kernel) in zip(*results):
        np.testing.assert_array_equal(single_mask, mirrored_mask)
        np.testing.assert_allclose(single_kernel, mirrored_kernel, rtol=1e-4, atol=1e-6)
        assert np.all(mirrored_kernel[mirrored_mask == 0] == 0)
