"""`group_ensemble`: M tickets of one CNN architecture as one model of grouped convolutions and batched heads."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from plain_keras_load import max_abs_diff_loaded_without_library

import tf_freetickets as tft
from tf_freetickets.deploy.grouped import group_ensemble
from tf_freetickets.deploy.saved_model import export_member

SHAPE = (28, 28, 1)


def _ticket(seed, width=0.25, zero_channel=False):
    """A 80% ERK small_cnn ticket with random BatchNorm statistics; optionally conv1_2's channel 0 all zero."""
    keras.utils.set_random_seed(seed)
    model = tft.models.small_cnn(input_shape=SHAPE, width=width)
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.3, n), rng.normal(0, 0.3, n), rng.uniform(0.5, 2, n)])
    ticket = tft.sparsify(model, 0.8, distribution="erk", seed=seed)
    if zero_channel:
        layer = next(la for la in tft.sparse.layers.masked_layers(ticket) if la.name.startswith("conv1_2"))
        for variable in (layer.kernel_mask, layer.kernel_variable):
            value = variable.numpy()
            value[..., 0] = 0.0
            variable.assign(value)
    return ticket


@pytest.fixture(scope="module")
def tickets():
    return [_ticket(0), _ticket(1, zero_channel=True), _ticket(2)]


def _mean_probabilities(members, x):
    return np.mean([keras.ops.convert_to_numpy(keras.ops.softmax(m(x, training=False))) for m in members], axis=0)


def _inputs(n=5, seed=0):
    return np.random.default_rng(seed).random((n, *SHAPE), dtype=np.float32)


@pytest.mark.parametrize("count", [1, 2, 3])
def test_grouped_equals_the_members_mean_probability(tickets, count):
    members = tickets[1 : 1 + count] if count < 3 else tickets  # every M includes the zero-channel ticket
    grouped = group_ensemble(members)
    kinds = {type(layer).__name__ for layer in grouped.layers}
    assert "EinsumDense" in kinds and not tft.sparse.layers.masked_layers(grouped)
    convs = [layer for layer in grouped.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [c.groups for c in convs] == [1] + [count] * 3  # the first fused over the shared input, then grouped
    assert convs[0].filters == count * 8
    x = _inputs()
    got = keras.ops.convert_to_numpy(grouped(x, training=False))
    assert got.shape == (5, 10)
    assert np.abs(got - _mean_probabilities(members, x)).max() <= 1e-5


def test_grouped_saved_model_serves_the_mean(tickets, tmp_path):
    loaded = tf.saved_model.load(export_member(group_ensemble(tickets), str(tmp_path / "grouped")))
    x = _inputs(3, seed=1)
    assert np.abs(loaded.serve(tf.constant(x)).numpy() - _mean_probabilities(tickets, x)).max() <= 1e-5


def test_probability_members_are_averaged_as_they_are():
    keras.utils.set_random_seed(4)
    members = []
    for _ in range(2):
        inputs = keras.Input(SHAPE)
        x = keras.layers.Conv2D(4, 3, activation="relu")(inputs)
        x = keras.layers.GlobalAveragePooling2D()(x)
        members.append(keras.Model(inputs, keras.layers.Dense(10, activation="softmax")(x)))
    x = _inputs(4)
    want = np.mean([keras.ops.convert_to_numpy(m(x)) for m in members], axis=0)
    got = keras.ops.convert_to_numpy(group_ensemble(members, from_logits=False)(x))
    assert np.abs(got - want).max() <= 1e-6


def test_differing_architectures_are_refused_with_the_first_difference(tickets):
    with pytest.raises(ValueError, match=r"member 1 .* layer 0 after the input \('conv1_1', Conv2D\): filters 16, "
                                         r"member 0 has 8; the non-grouped .*stack_ensemble\(members\) serves them"):  # fmt: skip
        group_ensemble([tickets[0], _ticket(5, width=0.5)])
    resnet = tft.models.cifar_resnet(8, width=0.25, input_shape=SHAPE)
    with pytest.raises(ValueError, match=r"layer 'stage1_block1_add' is not fed .* skip\); .*stack_ensemble\(members\)"):
        group_ensemble([resnet, resnet])


def test_loads_with_plain_keras_without_the_library(tickets, tmp_path):
    path, x = tmp_path / "grouped.keras", _inputs(4)
    group_ensemble(tickets).save(path)
    assert max_abs_diff_loaded_without_library(path, x, _mean_probabilities(tickets, x), tmp_path) <= 1e-5
