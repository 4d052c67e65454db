"""MaskEngine and the MaskUpdate callback: exact counts, zeros, slots, RigL by hand."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_freetickets as tft
from tf_freetickets.sparse import layers as masking
from tf_freetickets.sparse.optimizer_slots import slots_for


def small_model(batch_norm=True):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(inputs)
    if batch_norm:
        x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu", name="fc")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))


def toy_data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8, 8, 1)).astype("float32"), rng.integers(0, 4, n)


class InvariantChecker(keras.callbacks.Callback):
    """After every batch: exact active counts, zeros outside masks, zero slots."""

    def __init__(self):
        super().__init__()
        self.checked = 0

    def on_train_begin(self, logs=None):
        self.counts = {layer.name: layer.kernel_mask.numpy().sum() for layer in masking.masked_layers(self.model)}

    def on_train_batch_end(self, batch, logs=None):
        for layer in masking.masked_layers(self.model):
            mask = layer.kernel_mask.numpy()
            assert mask.sum() == self.counts[layer.name], layer.name
            assert np.all(layer.kernel_variable.numpy()[mask == 0] == 0), layer.name
            slots = slots_for(self.model.optimizer, layer.kernel_variable)
            assert slots, "optimizer slots were not found"
            for slot in slots:
                assert np.all(slot.numpy()[mask == 0] == 0), slot.path
        self.checked += 1


@pytest.mark.parametrize("optimizer", ["sgd_momentum", "adam"])
@pytest.mark.parametrize("updater_name", ["Static", "SET", "RigL", "SNFS"])
def test_fit_keeps_counts_zeros_and_slots_exact(updater_name, optimizer):
    x, y = toy_data()
    model = tft.sparsify(small_model(), 0.8, seed=1)
    opt = keras.optimizers.SGD(0.05, momentum=0.9) if optimizer == "sgd_momentum" else keras.optimizers.Adam(1e-2)
    model.compile(opt, keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    before = {layer.name: layer.kernel_mask.numpy().copy() for layer in masking.masked_layers(model)}
    if updater_name == "Static":
        updater = tft.Static()
    else:
        updater = getattr(tft, updater_name)(update_every=2, drop_fraction=0.5, end_step=10, seed=4)
    checker = InvariantChecker()
    update = tft.MaskUpdate(updater, gradient_data=(x, y), gradient_batch_size=16)
    history = model.fit(x, y, batch_size=16, epochs=3, shuffle=False, verbose=0, callbacks=[update, checker])
    assert checker.checked == 12
    changed = sum(not np.array_equal(before[layer.name], layer.kernel_mask.numpy()) for layer in masking.masked_layers(model))
    if updater_name == "Static":
        assert changed == 0 and update.history == []
    else:
        assert [step for step, _, _ in update.history] == [2, 4, 6, 8, 10]
        assert changed == 3
        assert sum(history.history["mask_changes"]) == sum(sum(c) for _, _, c in update.history) > 0
    assert history.history["sparsity"][-1] == pytest.approx(tft.global_sparsity(model))


def _tiny_linear(kernel, mask, momentum):
    inputs = keras.Input((3,))
    layer = masking.MaskedDense(4, use_bias=False, name="w")
    model = keras.Model(inputs, layer(inputs))
    layer.kernel_mask.assign(mask)
    layer.kernel_variable.assign(kernel * mask)
    model.compile(keras.optimizers.SGD(0.0, momentum=momentum), "mse")
    model.optimizer.build(model.trainable_variables)
    return model, layer


def test_rigl_update_matches_hand_computation():
    rng = np.random.default_rng(7)
    mask = np.zeros(12, "float32")
    mask[[0, 2, 5, 7, 8, 11]] = 1
    mask = mask.reshape(3, 4)
    kernel = rng.normal(size=(3, 4)).astype("float32")
    x = rng.normal(size=(5, 3)).astype("float32")
    t = rng.normal(size=(5, 4)).astype("float32")
    model, layer = _tiny_linear(kernel, mask, momentum=0.9)
    momentum = slots_for(model.optimizer, layer.kernel_variable)[0]
    momentum.assign(np.ones((3, 4), "float32") * mask)

    updater = tft.RigL(update_every=1, drop_fraction=0.5, decay="constant", end_step=10)
    engine = tft.sparse.MaskEngine(model, updater, gradient_data=tf.data.Dataset.from_tensors((x, t)))
    result = engine.update(1)

    # By hand: effective W = kernel * mask, y = x W, loss = mean((y - t)^2).
    w = kernel * mask
    dense_grad = 2.0 / t.size * x.T @ (x @ w - t)
    active = np.flatnonzero(mask)
    num_drop = int(np.floor(0.5 * active.size))  # 3
    kept = active[np.argsort(-np.abs(w.ravel()[active]))][: active.size - num_drop]
    candidates = np.setdiff1d(np.arange(12), kept)
    grown = candidates[np.argsort(-np.abs(dense_grad.ravel()[candidates]))][:num_drop]
    want_mask = np.zeros(12)
    want_mask[np.concatenate([kept, grown])] = 1

    np.testing.assert_array_equal(layer.kernel_mask.numpy().ravel(), want_mask)
    assert result["changed"] == [int(np.sum(want_mask * (1 - mask.ravel())))]
    # Survivors (kept, or dropped and regrown at once) keep weight and slot;
    # new connections start at zero with zero slots.
    survivors = np.intersect1d(np.flatnonzero(want_mask), active)
    new_connections = np.setdiff1d(grown, active)
    assert new_connections.size > 0
    new_kernel = layer.kernel_variable.numpy().ravel()
    np.testing.assert_array_equal(new_kernel[survivors], w.ravel()[survivors])
    assert np.all(new_kernel[new_connections] == 0)
    assert np.all(new_kernel[want_mask == 0] == 0)
    slot = momentum.numpy().ravel()
    assert np.all(slot[survivors] == 1) and np.all(slot[new_connections] == 0) and np.all(slot[want_mask == 0] == 0)


def test_snfs_grows_by_momentum_of_dense_gradients():
    rng = np.random.default_rng(3)
    mask = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1]], "float32")
    kernel = rng.normal(size=(3, 4)).astype("float32")
    batches = [(rng.normal(size=(4, 3)).astype("float32"), rng.normal(size=(4, 4)).astype("float32")) for _ in range(2)]
    model, layer = _tiny_linear(kernel, mask, momentum=0.0)
    updater = tft.SNFS(update_every=1, drop_fraction=0.5, decay="constant", end_step=5, gradient_batches=2, momentum=0.9)
    data = tf.data.Dataset.from_tensor_slices(tuple(np.stack(p) for p in zip(*batches)))
    engine = tft.sparse.MaskEngine(model, updater, gradient_data=data)
    engine.update(1)

    w = kernel * mask
    grads = [2.0 / t.size * x.T @ (x @ w - t) for x, t in batches]
    signal = 0.9 * grads[0] + grads[1]
    active = np.flatnonzero(mask)
    kept = active[np.argsort(-np.abs(w.ravel()[active]))][:2]
    candidates = np.setdiff1d(np.arange(12), kept)
    grown = candidates[np.argsort(-np.abs(signal.ravel()[candidates]))][:2]
    assert sorted(np.flatnonzero(layer.kernel_mask.numpy())) == sorted(np.concatenate([kept, grown]))


def test_set_growth_is_random_but_seeded():
    def run(seed):
        model, layer = _tiny_linear(np.ones((3, 4), "float32"), np.eye(3, 4, dtype="float32"), 0.0)
        engine = tft.sparse.MaskEngine(model, tft.SET(update_every=1, drop_fraction=1.0, decay="constant", end_step=9, seed=seed))
        masks = []
        for step in (1, 2, 3):
            engine.update(step)
            masks.append(layer.kernel_mask.numpy().copy())
        return masks

    a, b, c = run(5), run(5), run(6)
    for m in a:
        assert m.sum() == 3
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert not np.array_equal(a[0], a[1])


def test_dense_gradient_pass_leaves_batchnorm_statistics_alone():
    x, y = toy_data()
    model = tft.sparsify(small_model(), 0.5, seed=0)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.optimizer.build(model.trainable_variables)
    engine = tft.sparse.MaskEngine(model, tft.RigL(end_step=10), gradient_data=(x, y))
    before = [v.numpy().copy() for v in model.get_layer("bn").non_trainable_weights]
    grads = engine.dense_gradients()
    after = [v.numpy() for v in model.get_layer("bn").non_trainable_weights]
    for b, a in zip(before, after):
        np.testing.assert_array_equal(a, b)
    # Dense: nonzero gradient at pruned positions too.
    fc = model.get_layer("fc")
    assert np.count_nonzero(grads[1].numpy()[fc.kernel_mask.numpy() == 0]) > 0


def test_gradient_updaters_require_data():
    model = tft.sparsify(small_model(), 0.5)
    model.compile("sgd", "mse")
    with pytest.raises(ValueError, match="RigL grows by dense gradients; pass gradient_data"):
        tft.sparse.MaskEngine(model, tft.RigL(end_step=10))
    with pytest.raises(TypeError, match="gradient_data must be"):
        tft.sparse.MaskEngine(model, tft.RigL(end_step=10), gradient_data="train")


def test_engine_rejects_dense_model():
    model = small_model()
    with pytest.raises(ValueError, match="no masked layers"):
        tft.sparse.MaskEngine(model, tft.SET())


def test_set_drops_the_smallest_magnitudes():
    kernel = np.array([[0.9, -0.05, 0.0, 0.0], [0.0, 0.3, -0.7, 0.0], [0.01, 0.0, 0.0, 0.2]], "float32")
    mask = (kernel != 0).astype("float32")
    model, layer = _tiny_linear(kernel, mask, 0.0)
    engine = tft.sparse.MaskEngine(model, tft.SET(update_every=1, drop_fraction=0.5, decay="constant", end_step=9, seed=0))
    engine.update(1)
    new_mask = layer.kernel_mask.numpy()
    # 6 active, drop floor(0.5 * 6) = 3 smallest |w|: -0.05, 0.01, 0.2; keep 0.9, 0.3, -0.7.
    assert new_mask.sum() == 6
    assert new_mask[0, 0] == new_mask[1, 1] == new_mask[1, 2] == 1
    assert layer.kernel_variable.numpy()[0, 0] == np.float32(0.9)


def test_sparsity_and_mask_changes_reach_tensorboard(tmp_path):
    x, y = toy_data(32)
    model = tft.sparsify(small_model(), 0.7, seed=2)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    update = tft.MaskUpdate(tft.SET(update_every=1, end_step=4, seed=0))
    board = keras.callbacks.TensorBoard(str(tmp_path))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[update, board])
    scalars = {}
    for path in (tmp_path / "train").glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag.startswith("epoch_"):
                    scalars[value.tag] = float(tf.make_ndarray(value.tensor))
    assert scalars["epoch_sparsity"] == pytest.approx(tft.global_sparsity(model))
    assert scalars["epoch_mask_changes"] == sum(sum(c) for _, _, c in update.history) > 0


@pytest.mark.parametrize("optimizer_cls", [keras.optimizers.Adam, keras.optimizers.RMSprop])
def test_slots_of_same_named_layers_in_two_members_are_kept_apart(optimizer_cls):
    def member(name):
        inputs = keras.Input((4,))
        return keras.Model(inputs, keras.layers.Dense(2, name="fc")(inputs), name=name)

    a, b = member("a"), member("b")
    assert a.layers[1].kernel.path == b.layers[1].kernel.path  # same path: names alone cannot tell them apart
    optimizer = optimizer_cls(momentum=0.5) if optimizer_cls is keras.optimizers.RMSprop else optimizer_cls()
    optimizer.build(a.trainable_variables + b.trainable_variables)
    slots_a = slots_for(optimizer, a.layers[1].kernel)
    slots_b = slots_for(optimizer, b.layers[1].kernel)
    assert len(slots_a) == len(slots_b) == 2
    assert not {id(s) for s in slots_a} & {id(s) for s in slots_b}
    index = optimizer._get_variable_index(b.layers[1].kernel)
    assert any(s is optimizer._velocities[index] for s in slots_b)


def test_layer_sparsity_logger_writes_density_and_turnover_per_layer(tmp_path):
    from tf_freetickets.sparse.tensorboard import LayerSparsityLogger

    x, y = toy_data(32)
    model = tft.sparsify(small_model(), 0.7, seed=2)
    model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    update = tft.MaskUpdate(tft.SET(update_every=1, drop_fraction=0.5, end_step=3, seed=0))
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[update, LayerSparsityLogger(str(tmp_path))])
    scalars = {}
    for path in tmp_path.glob("events.out.tfevents.*"):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                scalars[(value.tag, event.step)] = float(tf.make_ndarray(value.tensor))
    layers = masking.masked_layers(model)
    for index, layer in enumerate(layers):
        tag = f"{index}_{layer.name}"
        assert scalars[(f"density/{tag}", 1)] == pytest.approx(layer.kernel_mask.numpy().mean())
    # Updates at steps 1-3 (epoch 1) move weights; none after end_step, so epoch 2 has no turnover.
    assert scalars[("mask_turnover/1_fc", 0)] > 0
    assert scalars[("mask_turnover/1_fc", 1)] == 0
