"""CigL: deterministic part = RigL, random part density/redraw/replicas, exact counts."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_freetickets as tft
from tf_freetickets.sparse import layers as masking
from tf_freetickets.sparse.methods.cigl import random_keep_mask


def _model(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((16,))
    x = keras.layers.Dense(64, activation="relu", name="fc1")(inputs)
    x = keras.layers.Dense(64, activation="relu", name="fc2")(x)
    model = tft.sparsify(keras.Model(inputs, keras.layers.Dense(4, name="logits")(x)), 0.8, seed=seed)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _data(n=64):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(n, 16)).astype("float32")
    return x, x[:, :4].argmax(1).astype("int64")


def test_deterministic_update_equals_rigl_on_same_weights_and_gradients():
    x, y = _data()
    masks = []
    for cls in (tft.RigL, tft.CigL):
        model = _model()
        model.optimizer.build(model.trainable_variables)
        updater = cls(update_every=1, drop_fraction=0.4, end_step=10)
        engine = tft.sparse.MaskEngine(model, updater, gradient_data=tf.data.Dataset.from_tensors((x, y)).repeat())
        engine.update(1)
        masks.append([layer.kernel_mask.numpy() for layer in masking.masked_layers(model)])
    for rigl, cigl in zip(*masks):
        np.testing.assert_array_equal(rigl, cigl)


def test_random_mask_density_scale_and_redraw():
    rate = 0.1
    a = random_keep_mask((400, 500), seed=3, layer_index=0, step=tf.constant(7), drop_rate=rate).numpy()
    assert set(np.unique(a)) == {0.0, np.float32(1 / 0.9)}
    dropped = np.mean(a == 0)
    assert abs(dropped - rate) < 0.005  # 200k Bernoulli(0.1) draws: std 0.0007
    again = random_keep_mask((400, 500), seed=3, layer_index=0, step=tf.constant(7), drop_rate=rate).numpy()
    np.testing.assert_array_equal(a, again)  # reproducible from (seed, layer, step)
    for other in (dict(step=tf.constant(8)), dict(layer_index=1), dict(seed=4)):
        kwargs = dict(seed=3, layer_index=0, step=tf.constant(7), drop_rate=rate) | other
        redrawn = random_keep_mask((400, 500), **kwargs).numpy()
        assert 0.15 < np.mean((redrawn == 0) != (a == 0)) < 0.21  # 2 * 0.1 * 0.9 = 0.18 expected


def test_random_mask_only_in_training_forward_and_never_in_stored_weights():
    x, _ = _data(8)
    model = _model()
    updater = tft.CigL(random_drop_rate=0.5, seed=0, end_step=10)
    model.optimizer.build(model.trainable_variables)
    assert updater.attach(model)
    eval_out = model(x, training=False).numpy()
    train_a = model(x, training=True).numpy()
    model.optimizer.iterations.assign(1)
    train_b = model(x, training=True).numpy()
    assert not np.allclose(train_a, eval_out) and not np.allclose(train_a, train_b)
    updater.detach(model)
    np.testing.assert_allclose(model(x, training=True).numpy(), eval_out, rtol=1e-5, atol=1e-6)


def test_fit_keeps_exact_counts_and_zeros_and_removes_random_mask_after():
    x, y = _data()
    model = _model()
    before = {layer.name: layer.kernel_mask.numpy().sum() for layer in masking.masked_layers(model)}
    update = tft.MaskUpdate(tft.CigL(update_every=2, drop_fraction=0.5, end_step=8, random_drop_rate=0.2, seed=1), (x, y))
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False, callbacks=[update])
    assert [s for s, _, _ in update.history] == [2, 4, 6, 8]
    for layer in masking.masked_layers(model):
        mask = layer.kernel_mask.numpy()
        assert mask.sum() == before[layer.name]
        assert np.all(layer.kernel_variable.numpy()[mask == 0] == 0)
        assert layer.training_kernel_transform is None


def test_random_mask_never_writes_zeros_into_the_kernel():
    x, y = _data(16)
    model = _model()
    model.compile(keras.optimizers.SGD(0.0), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = [layer.kernel_variable.numpy().copy() for layer in masking.masked_layers(model)]
    update = tft.MaskUpdate(tft.CigL(update_every=100, end_step=100, random_drop_rate=0.5, seed=1), (x, y))
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[update])
    for layer, kernel in zip(masking.masked_layers(model), before):
        np.testing.assert_array_equal(layer.kernel_variable.numpy(), kernel)


def test_same_seed_same_run():
    x, y = _data()
    weights = []
    for _ in range(2):
        model = _model()
        update = tft.MaskUpdate(tft.CigL(update_every=2, end_step=6, random_drop_rate=0.3, seed=5), (x, y))
        model.fit(x, y, batch_size=16, epochs=1, verbose=0, shuffle=False, callbacks=[update])
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_array_equal(a, b)


def test_random_masks_identical_on_every_replica():
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("needs two logical CPU devices (conftest.py)")
    strategy = tf.distribute.MirroredStrategy([d.name for d in devices[:2]])

    @tf.function
    def draw(step):
        def replica_fn():
            return random_keep_mask((32, 32), seed=9, layer_index=2, step=step, drop_rate=0.25)

        return strategy.experimental_local_results(strategy.run(replica_fn))

    first, second = draw(tf.constant(3, tf.int64))
    np.testing.assert_array_equal(first.numpy(), second.numpy())


def test_bad_rate_is_named():
    with pytest.raises(ValueError, match="random_drop_rate must be in"):
        tft.CigL(random_drop_rate=1.0)
