"""`stack_ensemble`: M CNN members (different widths, compacted tickets, a ResNet) as one plain Keras model."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from plain_keras_load import max_abs_diff_loaded_without_library

import tf_freetickets as tft
from tf_freetickets.deploy.saved_model import export_member
from tf_freetickets.deploy.stacked import stack_ensemble

SHAPE = (28, 28, 1)
RNG = np.random.default_rng(0)


def _randomize_batchnorm(model, seed):
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.3, n), rng.normal(0, 0.3, n), rng.uniform(0.5, 2, n)])


def _compacted_ticket(width, fraction, seed):
    """A small_cnn ERK ticket with `fraction` of every hidden layer's output channels zeroed, then `tft.compact`."""
    keras.utils.set_random_seed(seed)
    ticket = tft.sparsify(tft.models.small_cnn(input_shape=SHAPE, width=width), 0.8, distribution="erk", seed=seed)
    rng = np.random.default_rng(seed)
    for layer in tft.sparse.layers.masked_layers(ticket)[:-1]:
        chosen = rng.choice(layer.kernel_mask.shape[-1], int(round(fraction * layer.kernel_mask.shape[-1])), replace=False)
        for variable in (layer.kernel_mask, layer.kernel_variable):
            value = variable.numpy()
            value[..., chosen] = 0.0
            variable.assign(value)
    small, report = tft.compact(ticket)
    assert report.params_after < report.params_before  # the ticket really lost channels
    return small


@pytest.fixture(scope="module")
def members():
    keras.utils.set_random_seed(3)
    cnn = tft.models.small_cnn(input_shape=SHAPE, width=0.25)
    resnet = tft.models.cifar_resnet(8, width=0.25, input_shape=SHAPE)
    for seed, model in enumerate((cnn, resnet)):
        _randomize_batchnorm(model, seed)
    return [cnn, _compacted_ticket(0.5, 0.5, seed=1), resnet]


def _mean_probabilities(members, x):
    return np.mean([keras.ops.convert_to_numpy(keras.ops.softmax(m(x, training=False))) for m in members], axis=0)


def _inputs(n=6):
    return RNG.random((n, *SHAPE), dtype=np.float32)


@pytest.mark.parametrize("count", [1, 3])
def test_stacked_equals_mean_probability_keras_and_saved_model(members, count, tmp_path):
    chosen = members[:count] if count == 3 else members[1:2]  # M = 1: the compacted ticket
    stacked = stack_ensemble(chosen)
    x = _inputs()
    want = _mean_probabilities(chosen, x)
    assert np.abs(keras.ops.convert_to_numpy(stacked(x, training=False)) - want).max() <= 1e-5
    path = export_member(stacked, str(tmp_path / "stacked"))
    loaded = tf.saved_model.load(path)  # kept: a temporary's variables are freed before its call
    served = loaded.serve(tf.constant(x)).numpy()
    assert served.shape == (6, 10)
    assert np.abs(served - want).max() <= 1e-5
    np.testing.assert_allclose(served.sum(axis=1), 1.0, atol=1e-5)  # probabilities, not softmaxed again
    with pytest.raises(tf.errors.InvalidArgumentError, match="in \\[0, 1\\]"):  # export_member's contract holds
        loaded.serve(tf.constant(x * 255.0))


def test_masked_ticket_is_stripped_and_probabilities_members_averaged(members):
    keras.utils.set_random_seed(5)
    ticket = tft.sparsify(tft.models.small_cnn(input_shape=SHAPE, width=0.25), 0.9, distribution="erk", seed=5)
    stacked = stack_ensemble([ticket, members[0]])
    assert not tft.sparse.layers.masked_layers(stacked)
    x = _inputs()
    assert np.abs(keras.ops.convert_to_numpy(stacked(x)) - _mean_probabilities([ticket, members[0]], x)).max() <= 1e-5
    softmaxed = keras.Sequential([keras.Input(SHAPE), keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    probs = stack_ensemble([softmaxed, softmaxed], from_logits=False)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(probs(x)), keras.ops.convert_to_numpy(softmaxed(x)), atol=1e-6)


def test_loads_with_plain_keras_without_the_library(members, tmp_path):
    path, x = tmp_path / "stacked.keras", _inputs(4)
    stack_ensemble(members).save(path)
    assert max_abs_diff_loaded_without_library(path, x, _mean_probabilities(members, x), tmp_path) <= 1e-5


def _tiny(shape=SHAPE, classes=10, activation=None):
    return keras.Sequential([keras.Input(shape), keras.layers.Flatten(), keras.layers.Dense(classes, activation=activation)])


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.dense = keras.layers.Dense(10)

    def call(self, x):
        return self.dense(keras.ops.reshape(x, (-1, 784)))


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: [], "at least one member; got an empty list"),
        (lambda: [_tiny(), _tiny((32, 32, 3))], r"member 1 .* has input shape \(32, 32, 3\), but member 0 .* has \(28, 28, 1\)"),
        (lambda: [_tiny(), _tiny(classes=5)], r"member 1 .* has output shape \(classes\) \(5,\), but member 0 .* has \(10,\)"),
        (lambda: [_tiny(), _tiny(activation="softmax")], "member 1 .* ends in a softmax .* from_logits=False"),
    ],
)
def test_refusals(make, message):
    with pytest.raises(ValueError, match=message):
        stack_ensemble(make())


def test_subclassed_member_refused():
    model = _Subclassed()
    model(np.zeros((1, *SHAPE), "float32"))
    with pytest.raises(ValueError, match="member 1 .* is a _Subclassed; .* Functional or Sequential"):
        stack_ensemble([_tiny(), model])
