"""CigL: deterministic part = RigL, random part density/redraw/replicas, exact counts."""

import functools

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_freetickets as tft
from tf_freetickets.sparse import layers as masking
from tf_freetickets.sparse.methods.cigl import random_keep_mask
from tf_freetickets.sparse.optimizer_slots import slots_for


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
    # Without the code's prune-first rule for randomly dropped weights, CigL's update is RigL's.
    x, y = _data()
    masks = []
    for make in (tft.RigL, functools.partial(tft.CigL, random_mask_prune_dropped=False)):
        model = _model()
        model.optimizer.build(model.trainable_variables)
        updater = make(update_every=1, drop_fraction=0.4, end_step=10)
        engine = tft.sparse.MaskEngine(model, updater, gradient_data=tf.data.Dataset.from_tensors((x, y)).repeat())
        engine.update(1)
        masks.append([layer.kernel_mask.numpy() for layer in masking.masked_layers(model)])
    for rigl, cigl in zip(*masks):
        np.testing.assert_array_equal(rigl, cigl)


def test_random_mask_density_scale_and_redraw():
    rate = 0.1
    a = random_keep_mask((400, 500), seed=3, layer_index=0, step=tf.constant(7), drop_rate=rate).numpy()
    assert set(np.unique(a)) == {0.0, 1.0}  # the code does not rescale the kept weights
    scaled = random_keep_mask((400, 500), seed=3, layer_index=0, step=tf.constant(7), drop_rate=rate, rescale=True).numpy()
    np.testing.assert_array_equal(scaled, a / np.float32(0.9))
    dropped = np.mean(a == 0)
    assert abs(dropped - rate) < 0.005  # 200k Bernoulli(0.1) draws: std 0.0007
    again = random_keep_mask((400, 500), seed=3, layer_index=0, step=tf.constant(7), drop_rate=rate).numpy()
    np.testing.assert_array_equal(a, again)  # reproducible from (seed, layer, step)
    for other in (dict(step=tf.constant(8)), dict(layer_index=1), dict(seed=4)):
        kwargs = dict(seed=3, layer_index=0, step=tf.constant(7), drop_rate=rate) | other
        redrawn = random_keep_mask((400, 500), **kwargs).numpy()
        assert 0.15 < np.mean((redrawn == 0) != (a == 0)) < 0.21  # 2 * 0.1 * 0.9 = 0.18 expected


# A 2x2 linear model y = x W (W flattened row-major: W00, W01, W10, W11), loss mean((y - t)^2), every weight
# active. Random masks of rate 0.5 for seed 1, layer 0: step 0 [0, 1, 1, 1], step 1 [1, 0, 0, 1], step 2 [0, 1, 0, 1].
W0 = np.array([0.5, -0.3, 0.8, 0.1])
X = np.array([[1.0, 0.5]], "float32")
T = np.array([[2.0, -3.0]], "float32")


def _linear(learning_rate=0.1, momentum=0.9):
    inputs = keras.Input((2,))
    layer = masking.MaskedDense(2, use_bias=False, name="w")
    model = keras.Model(inputs, layer(inputs))
    layer.target_density = 1.0  # a dense mask on purpose: declared, so MaskUpdate does not refuse it as never set
    layer.kernel_variable.assign(W0.reshape(2, 2).astype("float32"))
    model.compile(keras.optimizers.SGD(learning_rate, momentum=momentum), "mse")
    return model, layer


def _gradient(effective):
    """dL/dW_effective of the mean squared error at the effective kernel (flattened)."""
    return (2.0 / T.size * X.T @ (X @ effective.reshape(2, 2) - T)).ravel()


def _keep(step):
    return random_keep_mask((2, 2), 1, 0, tf.constant(step, tf.int64), 0.5).numpy().ravel()


def _two_steps(**switches):
    model, layer = _linear()
    updater = tft.CigL(update_every=100, end_step=100, random_drop_rate=0.5, seed=1, **switches)
    model.fit(np.repeat(X, 2, 0), np.repeat(T, 2, 0), batch_size=1, epochs=1, shuffle=False, verbose=0,
              callbacks=[tft.MaskUpdate(updater, gradient_data=(X, T))])  # fmt: skip
    momentum = slots_for(model.optimizer, layer.kernel_variable)[0].numpy().ravel()
    return layer.kernel_variable.numpy().ravel(), momentum, (model, layer)


def test_dropped_weights_keep_their_values_and_take_the_gradient_into_momentum():
    # CigL's Masking.step: apply_w_raw, apply_dropout (restore from w_raw, draw the next mask, zero what it drops),
    # optimizer.step on the dense weight.grad, apply_mask. The weights the next step's mask drops do not take this
    # step's update; every momentum entry takes its gradient. Keras SGD: m <- 0.9 m - 0.1 g; w <- w + m.
    np.testing.assert_array_equal([_keep(0), _keep(1), _keep(2)], [[0, 1, 1, 1], [1, 0, 0, 1], [0, 1, 0, 1]])
    kernel, momentum, (model, layer) = _two_steps()
    w, m, history = W0.copy(), np.zeros(4), [W0.copy()]
    for step in range(2):
        g = _gradient(w * _keep(step))  # forward at the randomly masked kernel, dense gradient (no chain factor)
        m = 0.9 * m - 0.1 * g
        w = np.where(_keep(step + 1) > 0, w + m, w)
        history.append(w)
    np.testing.assert_allclose(kernel, w, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(momentum, m, rtol=1e-5, atol=1e-7)
    # W01 and W10, dropped by step 1's mask, equal their values before step 0 after it; W00 and W10 likewise
    # through step 1 (step 2's mask drops them), while all four momentum entries moved.
    np.testing.assert_array_equal(history[1][[1, 2]], W0[[1, 2]])
    assert np.all(history[1][[0, 3]] != W0[[0, 3]]) and np.all(momentum != 0)
    np.testing.assert_allclose(kernel[[0, 2]], history[1][[0, 2]], rtol=1e-6)
    assert layer.training_kernel_transform is None and "apply" not in vars(model.optimizer)  # unhooked after fit


def test_dropconnect_switches_give_the_previous_behaviour():
    # random_mask_restore_dropped=False, random_mask_rescale=True: DropConnect, survivors scaled by 1/(1 - 0.5),
    # the chain rule zeroes the dropped weights' gradient and every weight moves with its momentum.
    kernel, momentum, _ = _two_steps(random_mask_restore_dropped=False, random_mask_rescale=True)
    w, m = W0.copy(), np.zeros(4)
    for step in range(2):
        scaled = 2.0 * _keep(step)
        g = scaled * _gradient(w * scaled)
        m = 0.9 * m - 0.1 * g
        w = w + m
    np.testing.assert_allclose(kernel, w, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(momentum, m, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("rescale", [False, True])
def test_training_forward_uses_the_unscaled_random_mask_by_default(rescale):
    model, _ = _linear()
    updater = tft.CigL(end_step=10, random_drop_rate=0.5, seed=1, random_mask_rescale=rescale)
    updater.attach(model)
    scale = 2.0 if rescale else 1.0
    np.testing.assert_allclose(model(X, training=True).numpy(), X @ (W0 * _keep(0) * scale).reshape(2, 2), rtol=1e-6)
    np.testing.assert_allclose(model(X, training=False).numpy(), X @ W0.reshape(2, 2), rtol=1e-6)
    updater.detach(model)


def test_the_update_prunes_the_weights_the_update_steps_random_mask_dropped_first():
    # The code prunes by |weight.data|, where the weights its random mask dropped hold ~0. An update after step 2
    # follows the forward pass of step 1, whose mask [1, 0, 0, 1] dropped W01 and W10. Active: W00 (|w| 0.05),
    # W01 (0.3), W10 (0.8); W11 is inactive and has the largest growth gradient; ties grow the lower index.
    mask = np.array([[1.0, 1.0], [1.0, 0.0]], "float32")
    weights = np.array([[0.05, 0.3], [0.8, 0.0]], "float32")
    gradient = np.array([[0.0, 0.0], [0.0, 1.0]], "float32")
    step = tf.constant(2, tf.int64)
    kwargs = dict(update_every=1, decay="constant", end_step=10, random_drop_rate=0.5, seed=1)

    def update(drop_fraction, **switches):
        updater = tft.CigL(drop_fraction=drop_fraction, **kwargs, **switches)
        new_mask, _ = updater.new_mask(0, mask, weights, gradient, step, tf.constant(drop_fraction))
        return np.asarray(new_mask).ravel().tolist()

    # One drop (floor(0.5 * 3)): the smaller of the randomly dropped, W01, not the smallest |w|, W00; W11 grows.
    assert update(0.5) == [1, 0, 1, 1]
    assert update(0.5, random_mask_prune_dropped=False) == [0, 1, 1, 1]  # RigL's drop: W00
    # Two drops (floor(0.7 * 3)): both randomly dropped, W01 and W10, although |W10| = 0.8; W11 and W01 grow.
    assert update(0.7) == [1, 1, 0, 1]
    assert update(0.7, random_mask_prune_dropped=False) == [1, 0, 1, 1]  # RigL: W00, W01 drop; W11, W00 grow


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


def test_a_run_continued_in_a_second_fit_equals_the_uninterrupted_run():
    # The random masks and the restore of dropped weights depend on (seed, layer, optimizer step) only, so a run
    # that stops and continues from its variables (as a checkpoint resume does) takes the same steps.
    x, y = _data()
    gradient_data = tf.data.Dataset.from_tensors((x[:16], y[:16])).repeat()

    def updater():
        return tft.CigL(update_every=3, drop_fraction=0.5, end_step=12, random_drop_rate=0.3, seed=4)

    straight = _model()
    straight.fit(x, y, batch_size=16, epochs=4, verbose=0, shuffle=False,
                 callbacks=[tft.MaskUpdate(updater(), gradient_data)])  # fmt: skip
    continued = _model()
    continued.fit(x, y, batch_size=16, epochs=2, verbose=0, shuffle=False, callbacks=[tft.MaskUpdate(updater(), gradient_data)])
    update = tft.MaskUpdate(updater(), gradient_data)
    continued.fit(x, y, batch_size=16, epochs=4, initial_epoch=2, verbose=0, shuffle=False, callbacks=[update])
    assert [step for step, _, _ in update.history] == [9, 12]
    for a, b in zip(straight.get_weights(), continued.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)


def test_random_mask_switches_are_checked_config_fields():
    from tf_freetickets.experiments.config import ConfigError, fashion_mnist_defaults, validate

    config = fashion_mnist_defaults()
    config.sparse.method = "cigl"
    validate(config)
    config.sparse.random_mask_growth_gradient = "through"
    with pytest.raises(ConfigError, match="random_mask_growth_gradient='through' is unknown"):
        validate(config)
    config = fashion_mnist_defaults()
    config.sparse.random_mask_rescale = True  # a CigL field, set under RigL
    with pytest.raises(ConfigError, match="random_mask_rescale"):
        validate(config)
    with pytest.raises(ValueError, match="random_mask_growth_gradient must be one of"):
        tft.CigL(random_mask_growth_gradient="through")
