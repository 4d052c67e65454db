"""Divide-and-Co-training: width/regularization division, views, JS term, sparse members, export."""

import functools
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_freetickets as tft
from tf_freetickets.ensembles import (
    CoTrainingModel,
    build_divided_members,
    divided_dropout,
    divided_weight_decay,
    divided_widen_factor,
    js_divergence,
)
from tf_freetickets.sparse import layers as masking


@pytest.mark.parametrize("num_splits,widen_factor", [(2, 7), (4, 5)])
def test_divided_wrn_28_10_keeps_the_parameter_count(num_splits, widen_factor):
    whole = tft.models.wide_resnet(28, 10).count_params()
    assert whole == 36_497_146  # WRN-28-10, 10 classes: the paper's 36.5M
    assert divided_widen_factor(10, num_splits) == widen_factor
    members = build_divided_members(
        tft.models.wide_resnet, num_splits, 10, width_arg="widen_factor", width_fn=divided_widen_factor, depth=28
    )
    total = sum(m.count_params() for m in members)
    assert abs(total / whole - 1) < 0.03, (total, whole)


def test_regularization_division_follows_the_official_formulas():
    assert divided_weight_decay(5e-4, 1) == 5e-4
    assert divided_weight_decay(5e-4, 2) == pytest.approx(5e-4 * math.exp(-0.5))  # 3.03e-4
    assert divided_weight_decay(5e-4, 4) == pytest.approx(5e-4 * math.exp(-0.75))  # 2.36e-4
    assert divided_dropout(0.3, 2) == pytest.approx(0.15)
    members = build_divided_members(tft.models.small_cnn, 2, 1.0, weight_decay=5e-4, dropout=0.2)
    fc = members[0].get_layer("fc")
    assert fc.kernel_regularizer.weight_decay == pytest.approx(5e-4 * math.exp(-0.5))
    assert members[0].get_layer("conv1_1").filters == round(32 / math.sqrt(2))
    assert [m.name for m in members] == ["member_0", "member_1"]
    with pytest.raises(ValueError, match="num_splits"):
        divided_weight_decay(5e-4, 0)


def test_undivided_weight_decay_keeps_the_wide_networks_decay():
    # The paper's CIFAR-100 runs (Table II caption): members decay with the undivided 5e-4.
    members = build_divided_members(tft.models.small_cnn, 4, 1.0, weight_decay=5e-4, divide_weight_decay=False)
    for member in members:
        assert member.get_layer("fc").kernel_regularizer.weight_decay == pytest.approx(5e-4)
    assert members[0].get_layer("conv1_1").filters == round(32 / math.sqrt(4))  # the width is still divided


@pytest.mark.parametrize("dataset, expected", [("cifar10", 5e-4 * math.exp(-0.5)), ("cifar100", 5e-4)])
def test_the_runner_builds_paper_config_members_with_the_datasets_decay(dataset, expected):
    from tf_freetickets.experiments.paper_configs import divide_and_cotrain
    from tf_freetickets.experiments.runner import dnc_members

    config = divide_and_cotrain(dataset, num_splits=2)
    config.model, config.width = "small_cnn", 1.0  # a small network; the decay rule is the config's
    build = functools.partial(tft.models.small_cnn, input_shape=(28, 28, 1), num_classes=10)
    members = dnc_members(config, build)
    assert [m.get_layer("fc").kernel_regularizer.weight_decay for m in members] == pytest.approx([expected] * 2)


def test_js_divergence_zero_when_members_agree_positive_otherwise():
    agree = np.array([[[0.7, 0.2, 0.1]], [[0.7, 0.2, 0.1]]])
    np.testing.assert_allclose(js_divergence(agree), [0.0], atol=1e-7)
    # Hand: p1 = (1, 0), p2 = (0, 1): H(mean) = ln 2, member entropies 0 -> ln 2.
    np.testing.assert_allclose(js_divergence(np.array([[[1.0, 0.0]], [[0.0, 1.0]]])), [math.log(2)], rtol=1e-6)
    # Hand: p1 = (0.5, 0.5), p2 = (0.9, 0.1): H(0.7, 0.3) - (ln 2 + H(0.9, 0.1)) / 2.
    h = lambda p: -sum(q * math.log(q) for q in p)  # noqa: E731
    want = h((0.7, 0.3)) - (h((0.5, 0.5)) + h((0.9, 0.1))) / 2
    np.testing.assert_allclose(js_divergence(np.array([[[0.5, 0.5]], [[0.9, 0.1]]])), [want], rtol=1e-6)
    assert want > 0


def _members(num=2, sparse=False):
    members = build_divided_members(tft.models.small_cnn, num, 0.5, input_shape=(12, 12, 1), num_classes=3)
    return [tft.sparsify(m, 0.7, seed=i) for i, m in enumerate(members)] if sparse else members


def _data(n=32):
    rng = np.random.default_rng(0)
    return rng.random((n, 12, 12, 1)).astype("float32"), rng.integers(0, 3, n)


def test_members_receive_different_views_in_training_only():
    keras.utils.set_random_seed(0)
    model = CoTrainingModel(_members(3))
    x, _ = _data(4)
    views = [v.numpy() for v in model.member_views(x, training=True)]
    for i in range(3):
        for j in range(i + 1, 3):
            assert not np.array_equal(views[i], views[j])
    for view in model.member_views(x, training=False):
        np.testing.assert_array_equal(view, x)


def test_loss_is_members_ce_plus_weighted_js_and_warmup_ramps():
    x, y = _data()
    model = CoTrainingModel(_members(), cotraining_weight=0.5, warmup_steps=10)
    model.compile(keras.optimizers.SGD(0.0))
    model.optimizer.build(model.trainable_variables)
    assert float(model.current_cotraining_weight()) == 0.0
    model.optimizer.iterations.assign(5)
    assert float(model.current_cotraining_weight()) == pytest.approx(0.25)
    model.optimizer.iterations.assign(50)
    assert float(model.current_cotraining_weight()) == pytest.approx(0.5)
    keras.utils.set_random_seed(1)
    total, ce, js, probs = model.cotraining_losses(x, y)
    assert float(total) == pytest.approx(float(ce) + 0.5 * float(js), rel=1e-6)
    assert float(js) == pytest.approx(float(np.mean(js_divergence(probs))), rel=1e-6)
    assert tuple(probs.shape) == (2, 32, 3)


def test_official_ramp_rises_once_per_epoch_with_a_floor():
    # model/splitnet.py: weight = max(0.5 * epoch / 40, 0.005) for 0-based epoch < 40, then 0.5.
    spe, warmup_epochs = 7, 40
    model = CoTrainingModel(
        _members(), cotraining_weight=0.5, warmup_steps=warmup_epochs * spe, steps_per_epoch=spe, min_weight=0.005
    )
    model.compile(keras.optimizers.SGD(0.0))
    model.optimizer.build(model.trainable_variables)
    for step in (0, 6, 7, 13, 14, 39 * spe + 6, 40 * spe, 100 * spe):
        model.optimizer.iterations.assign(step)
        epoch = step // spe
        expected = max(0.5 * epoch / warmup_epochs, 0.005) if epoch < warmup_epochs else 0.5
        assert float(model.current_cotraining_weight()) == pytest.approx(expected), step
    with pytest.raises(ValueError, match="min_weight must be in"):
        CoTrainingModel(_members(), cotraining_weight=0.5, min_weight=0.6)


def test_fit_with_sparse_members_keeps_each_member_exact_and_exports(tmp_path):
    x, y = _data(64)
    model = CoTrainingModel(_members(sparse=True), warmup_steps=4)
    counts = [layer.kernel_mask.numpy().sum() for layer in masking.masked_layers(model)]
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    update = tft.MaskUpdate(tft.RigL(update_every=2, end_step=8), gradient_data=(x, y), gradient_batch_size=16)
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[update])
    assert {"loss", "ce", "cotraining_js", "cotraining_weight", "accuracy", "sparsity"} <= set(history.history)
    assert [layer.kernel_mask.numpy().sum() for layer in masking.masked_layers(model)] == counts
    assert len(update.history) == 4
    for layer in masking.masked_layers(model):
        assert np.all(layer.kernel_variable.numpy()[layer.kernel_mask.numpy() == 0] == 0)
    model.export(str(tmp_path / "dnc"))
    loaded = tf.saved_model.load(str(tmp_path / "dnc"))  # keep a reference: its variables live in it
    served = loaded.serve(x).numpy()
    np.testing.assert_allclose(served, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)


def test_members_on_separate_devices_give_the_same_predictions():
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("needs two logical CPU devices (conftest.py)")
    members = _members()
    x, _ = _data(8)
    plain = tft.EnsembleModel(members)
    placed = tft.EnsembleModel(members, member_devices=[d.name for d in devices[:2]])
    np.testing.assert_allclose(placed.predict(x, verbose=0), plain.predict(x, verbose=0), rtol=1e-6)
    with pytest.raises(ValueError, match="1 member_devices for 2 members"):
        tft.EnsembleModel(members, member_devices=["/cpu:0"])
