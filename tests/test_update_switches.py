"""FreeTickets' update rules as switches, each on a hand-computed case (tiny linear model, known numbers).

Model: y = x W with W of shape (2, 2) (flattened row-major: W00, W01, W10, W11), loss = mean((y - t)^2),
so dL/dW = 2 / (batch * 2) * x^T (x W - t).
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_freetickets as tft
from tf_freetickets.sparse import layers as masking
from tf_freetickets.sparse.optimizer_slots import slots_for


def _tiny(kernel, mask, learning_rate=0.0, momentum=0.9):
    inputs = keras.Input((2,))
    layer = masking.MaskedDense(2, use_bias=False, name="w")
    model = keras.Model(inputs, layer(inputs))
    layer.kernel_mask.assign(np.reshape(mask, (2, 2)).astype("float32"))
    layer.kernel_variable.assign((np.reshape(kernel, (2, 2)) * np.reshape(mask, (2, 2))).astype("float32"))
    model.compile(keras.optimizers.SGD(learning_rate, momentum=momentum), "mse")
    model.optimizer.build(model.trainable_variables)
    return model, layer


def _dense_gradient(w, x, t):
    return (2.0 / t.size * x.T @ (x @ w.reshape(2, 2) - t)).ravel()


# Mask [1, 1, 0, 0], W = [0.1, 3, 0, 0]; with x = [1, 0], t = [-5, 3] the dense gradient is
# [5.1, 0, 0, 0]. Dropping half the 2 active weights drops W00 (|0.1| < |3|); the candidates for
# growth are W00, W10, W11 with |gradient| 5.1, 0, 0, so W00 is regrown in the same update.
MASK = np.array([1.0, 1.0, 0.0, 0.0])
KERNEL = np.array([0.1, 3.0, 0.0, 0.0])
X = np.array([[1.0, 0.0]], "float32")
T = np.array([[-5.0, 3.0]], "float32")


def _update_same_position(**switches):
    model, layer = _tiny(KERNEL, MASK)
    momentum = slots_for(model.optimizer, layer.kernel_variable)[0]
    momentum.assign(np.array([[0.7, 0.2], [0.3, -0.1]], "float32"))
    updater = tft.RigL(update_every=1, drop_fraction=0.5, decay="constant", end_step=10, **switches)
    engine = tft.sparse.MaskEngine(model, updater, gradient_data=tf.data.Dataset.from_tensors((X, T)))
    np.testing.assert_allclose(_dense_gradient(KERNEL * MASK, X, T), [5.1, 0, 0, 0], rtol=1e-6)
    result = engine.update(1)
    np.testing.assert_array_equal(layer.kernel_mask.numpy().ravel(), MASK)
    assert result["changed"] == [0]
    return layer.kernel_variable.numpy().ravel(), momentum.numpy().ravel()


def test_default_keeps_value_and_slot_of_a_weight_regrown_in_the_same_update():
    kernel, slot = _update_same_position()
    np.testing.assert_allclose(kernel, [0.1, 3.0, 0.0, 0.0])
    # Slots of the pruned positions are zeroed (RigL); W00 and W01 keep theirs.
    np.testing.assert_allclose(slot, [0.7, 0.2, 0.0, 0.0])


def test_reinit_when_same_restarts_the_regrown_weight_and_its_slot_at_zero():
    kernel, slot = _update_same_position(reinit_when_same=True)
    np.testing.assert_allclose(kernel, [0.0, 3.0, 0.0, 0.0])
    np.testing.assert_allclose(slot, [0.0, 0.2, 0.0, 0.0])


def test_dense_gradient_momentum_leaves_every_slot_alone_at_the_update():
    kernel, slot = _update_same_position(reinit_when_same=True, dense_gradient_momentum=True)
    np.testing.assert_allclose(kernel, [0.0, 3.0, 0.0, 0.0])
    np.testing.assert_allclose(slot, [0.7, 0.2, 0.3, -0.1], rtol=1e-6)


@pytest.mark.parametrize("dense_momentum", [False, True])
def test_dense_gradient_momentum_in_training_by_hand(dense_momentum):
    # Two SGD steps (lr 0.1, momentum 0.9, Keras: m <- 0.9 m - lr g; w <- w + m), no mask update.
    mask = np.array([1.0, 0.0, 1.0, 0.0])
    kernel = np.array([0.5, 0.0, -0.4, 0.0])
    x = np.array([[1.0, 2.0], [0.5, -1.0]], "float32")
    t = np.array([[1.0, 0.0], [0.0, 1.0]], "float32")
    model, layer = _tiny(kernel, mask, learning_rate=0.1)
    updater = tft.SET(update_every=100, end_step=100, dense_gradient_momentum=dense_momentum, seed=0)
    model.fit(x, t, batch_size=2, epochs=2, shuffle=False, verbose=0, callbacks=[tft.MaskUpdate(updater)])

    w, m = kernel * mask, np.zeros(4)
    for _ in range(2):
        g = _dense_gradient(w, x, t)
        if not dense_momentum:
            g = g * mask  # the library's default: pruned weights get no gradient
        m = 0.9 * m - 0.1 * g
        w = (w + m) * mask  # FreeTickets' apply_mask after optimizer.step
    np.testing.assert_allclose(layer.kernel_variable.numpy().ravel(), w, rtol=1e-5, atol=1e-7)
    slot = slots_for(model.optimizer, layer.kernel_variable)[0].numpy().ravel()
    np.testing.assert_allclose(slot, m, rtol=1e-5, atol=1e-7)
    assert np.all(layer.kernel_variable.numpy().ravel()[mask == 0] == 0)
    if dense_momentum:
        assert np.all(slot[mask == 0] != 0)  # pruned weights carry the momentum of their dense gradient
    else:
        assert np.all(slot[mask == 0] == 0)
    # Training over, the hooks are gone: the next fit is the plain masked model.
    assert layer.training_kernel_transform is None and layer.kernel_variable.constraint is None


def _gradient_mode_run(growth_gradient, steps):
    # Active W00, W11; gradient mode decides which batch (and which weights) growth sees.
    mask = np.array([1.0, 0.0, 0.0, 1.0])
    kernel = np.array([0.2, 0.0, 0.0, -1.5])
    x = np.array([[1.0, 0.5]], "float32")
    t = np.array([[2.0, -3.0]], "float32")
    model, layer = _tiny(kernel, mask, learning_rate=0.1, momentum=0.0)
    updater = tft.RigL(update_every=steps, drop_fraction=0.5, decay="constant", end_step=steps, growth_gradient=growth_gradient)
    model.fit(np.repeat(x, steps, 0), np.repeat(t, steps, 0), batch_size=1, epochs=1, shuffle=False, verbose=0,
              callbacks=[tft.MaskUpdate(updater)])  # fmt: skip
    return model, layer, updater, (mask, kernel * mask, x, t)


def _hand_update(mask, w, gradient):
    """Drop the smaller of the two active weights, grow the largest |gradient| among the rest."""
    active = np.flatnonzero(mask)
    kept = active[np.argmax(np.abs(w[active]))]
    candidates = [i for i in range(4) if i != kept]
    grown = candidates[int(np.argmax(np.abs(gradient[candidates])))]
    new_mask = np.zeros(4)
    new_mask[[kept, grown]] = 1
    return new_mask


def test_step_batch_grows_by_the_update_steps_own_gradient_after_its_optimizer_update():
    model, layer, updater, (mask, w0, x, t) = _gradient_mode_run("step_batch", steps=1)
    g0 = _dense_gradient(w0, x, t)  # the step's batch at the weights before its update
    np.testing.assert_allclose(updater.tap.gradients()[0].numpy().ravel(), g0, rtol=1e-6)
    w1 = w0 - 0.1 * g0 * mask  # the optimizer update is applied
    new_mask = _hand_update(mask, w1, g0)
    np.testing.assert_array_equal(layer.kernel_mask.numpy().ravel(), new_mask)
    np.testing.assert_allclose(layer.kernel_variable.numpy().ravel(), w1 * new_mask * mask, rtol=1e-6)
    assert int(model.optimizer.iterations.numpy()) == 1


def test_step_batch_skip_update_grows_at_the_weights_the_gradient_was_taken_at():
    # Step 1 is a plain step; step 2 is the update step: its optimizer update is skipped.
    model, layer, updater, (mask, w0, x, t) = _gradient_mode_run("step_batch_skip_update", steps=2)
    w1 = w0 - 0.1 * _dense_gradient(w0, x, t) * mask
    g1 = _dense_gradient(w1, x, t)
    np.testing.assert_allclose(updater.tap.gradients()[0].numpy().ravel(), g1, rtol=1e-6)
    new_mask = _hand_update(mask, w1, g1)
    np.testing.assert_array_equal(layer.kernel_mask.numpy().ravel(), new_mask)
    np.testing.assert_allclose(layer.kernel_variable.numpy().ravel(), w1 * new_mask * mask, rtol=1e-6)
    assert int(model.optimizer.iterations.numpy()) == 2  # the skipped step still counts
    assert "apply" not in vars(model.optimizer)  # unwrapped after training


def test_step_batch_modes_refuse_what_they_cannot_do():
    with pytest.raises(ValueError, match="growth_gradient"):
        tft.RigL(growth_gradient="next_batch")
    with pytest.raises(ValueError, match="gradient_batches"):
        tft.RigL(growth_gradient="step_batch", gradient_batches=2)
    model, _ = _tiny(KERNEL, MASK)
    model.compile(keras.optimizers.SGD(0.1), "mse", steps_per_execution=2)
    updater = tft.RigL(update_every=1, end_step=4, growth_gradient="step_batch")
    with pytest.raises(ValueError, match="steps_per_execution=1"):
        model.fit(np.repeat(X, 4, 0), np.repeat(T, 4, 0), batch_size=1, verbose=0, callbacks=[tft.MaskUpdate(updater)])
    # No training step yet: there is no step gradient to grow by.
    model, _ = _tiny(KERNEL, MASK)
    updater = tft.RigL(update_every=1, end_step=4, growth_gradient="step_batch")
    updater.attach(model)
    engine = tft.sparse.MaskEngine(model, updater)
    with pytest.raises(RuntimeError, match="last training batch"):
        engine.update(1)


def test_freetickets_official_preset_sets_the_three_switches():
    rigl = tft.sparse.freetickets_official(tft.RigL, update_every=1000, drop_fraction=0.5, decay="constant")
    assert (rigl.reinit_when_same, rigl.dense_gradient_momentum, rigl.growth_gradient) == (True, True, "step_batch")
    assert not rigl.needs_gradient_data and rigl.schedule.update_every == 1000
    random_growth = tft.sparse.freetickets_official(tft.SET)
    assert (random_growth.reinit_when_same, random_growth.dense_gradient_momentum) == (True, True)


@pytest.mark.parametrize("growth", ["dense", "masked"])
def test_cigl_step_batch_gradient_is_taken_at_that_steps_random_mask(growth):
    # CigL's code grows by weight.grad of the update step's batch and skips that step's optimizer update. The
    # random mask is written into the weights, so weight.grad is the gradient at the masked kernel, dense: nonzero
    # where the mask dropped ("dense"). "masked" zeroes it there (DropConnect's chain rule). The random mask of
    # step 0 is random_keep_mask(seed=5, layer 0, step 0) = [1, 0, 1, 1]: it drops W01.
    from tf_freetickets.sparse.methods.cigl import random_keep_mask

    mask = np.array([1.0, 0.0, 0.0, 1.0])
    w0 = np.array([0.2, 0.0, 0.0, -1.5]) * mask
    x = np.array([[1.0, 0.5]], "float32")
    t = np.array([[2.0, -3.0]], "float32")
    model, layer = _tiny(w0, mask, learning_rate=0.1, momentum=0.0)
    updater = tft.CigL(
        update_every=1, drop_fraction=0.5, decay="constant", end_step=1, random_drop_rate=0.5, seed=5,
        growth_gradient="step_batch_skip_update", random_mask_growth_gradient=growth,
    )  # fmt: skip
    model.fit(x, t, batch_size=1, epochs=1, shuffle=False, verbose=0, callbacks=[tft.MaskUpdate(updater)])
    keep = random_keep_mask((2, 2), 5, 0, tf.constant(0, tf.int64), 0.5).numpy().ravel()
    np.testing.assert_array_equal(keep, [1, 0, 1, 1])
    g = _dense_gradient(w0 * keep, x, t)  # the gradient at the randomly masked kernel
    np.testing.assert_allclose(g, [-1.8, 2.25, -0.9, 1.125], rtol=1e-6)
    np.testing.assert_allclose(updater.tap.gradients()[0].numpy().ravel(), g, rtol=1e-6)
    scores = np.abs(g) * (keep if growth == "masked" else 1.0)
    new_mask = _hand_update(mask, w0, scores)  # W00 dropped; grown: W01 (dense, |2.25|) or W00 again (masked, 1.8)
    np.testing.assert_array_equal(new_mask, [0, 1, 0, 1] if growth == "dense" else [1, 0, 0, 1])
    np.testing.assert_array_equal(layer.kernel_mask.numpy().ravel(), new_mask)
    np.testing.assert_allclose(layer.kernel_variable.numpy().ravel(), w0 * new_mask, rtol=1e-6)  # no SGD step


def test_adjust_prune_rate_caps_the_drop_of_nearly_dense_layers_with_many_active_weights():
    # CigL's Masking.adjust_prune_rate (sparselearning/core.py; FreeTickets' ImageNet/core.py alike): a layer of
    # sparsity s < 0.2 whose share of the active weights exceeds 1/L drops min(s, f).
    # Active counts 90 (of 100, s = 0.1), 100 (of 1000) and 10 (of 10, s = 0): mean 66.7, so only the first is capped.
    masks = [np.repeat([1.0, 0.0], [90, 10]), np.repeat([1.0, 0.0], [100, 900]), np.ones(10)]
    masks = [tf.constant(m.astype("float32")) for m in masks]
    f = tf.constant(0.3)
    fractions = tft.RigL(adjust_prune_rate=True).layer_drop_fractions(f, masks)
    np.testing.assert_allclose([float(x) for x in fractions], [0.1, 0.3, 0.3], rtol=1e-6)
    np.testing.assert_allclose([float(x) for x in tft.RigL().layer_drop_fractions(f, masks)], [0.3, 0.3, 0.3])
    small = tft.RigL(adjust_prune_rate=True).layer_drop_fractions(tf.constant(0.05), masks)
    np.testing.assert_allclose([float(x) for x in small], [0.05, 0.05, 0.05], rtol=1e-6)  # min(0.1, 0.05)


def test_the_engine_hands_each_layer_its_adjusted_drop_fraction():
    seen = [tf.Variable(-1.0), tf.Variable(-1.0)]  # written inside the compiled update

    class Recording(tft.RigL):
        def new_mask(self, layer_index, old_mask, weights, scores, step, drop_fraction):
            seen[layer_index].assign(drop_fraction)
            return super().new_mask(layer_index, old_mask, weights, scores, step, drop_fraction)

    keras.utils.set_random_seed(0)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(40, name="wide")(inputs)  # 160 weights at density 0.9: 144 active, s = 0.1
    model = keras.Model(inputs, keras.layers.Dense(2, name="out")(hidden))  # 80 weights at density 0.5: 40 active
    model = tft.sparsify(model, 0.5, layer_sparsity={"wide": 0.1, "out": 0.5}, seed=0)
    model.compile(keras.optimizers.SGD(0.1), "mse")
    model.optimizer.build(model.trainable_variables)
    data = tf.data.Dataset.from_tensors((np.ones((4, 4), "float32"), np.zeros((4, 2), "float32"))).repeat()
    for adjust, expected in ((True, [0.1, 0.3]), (False, [0.3, 0.3])):
        updater = Recording(update_every=1, drop_fraction=0.3, decay="constant", end_step=10, adjust_prune_rate=adjust)
        tft.sparse.MaskEngine(model, updater, gradient_data=data).update(1)
        np.testing.assert_allclose([float(v.numpy()) for v in seen], expected, rtol=1e-6)
