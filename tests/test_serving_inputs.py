"""Serving contract: float32 inputs in range, NaN/Inf and raw 0..255 pixels rejected, empty batches answered."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_freetickets as tft
from tf_freetickets.deploy.saved_model import export_member


@pytest.fixture(scope="module")
def member():
    keras.utils.set_random_seed(0)
    return tft.sparsify(tft.models.small_cnn(width=0.25), 0.8, seed=0)


@pytest.fixture(scope="module")
def exported(member, tmp_path_factory):
    folder = tmp_path_factory.mktemp("export")
    ensemble = tft.EnsembleModel([member])
    ensemble.export(str(folder / "ensemble"), input_range=(0.0, 1.0))
    export_member(member, str(folder / "member"))
    return tf.saved_model.load(str(folder / "ensemble")), tf.saved_model.load(str(folder / "member"))


def test_masked_convolution_answers_an_empty_batch(member):
    empty = np.zeros((0, 28, 28, 1), np.float32)
    assert tuple(member(empty).shape) == (0, 10)
    conv = tft.sparse.layers.MaskedConv2D(5, 3, padding="same", use_bias=False)
    assert tuple(conv(np.zeros((0, 6, 6, 2), np.float32)).shape) == (0, 6, 6, 5)


def test_exported_endpoints_answer_valid_and_empty_batches(member, exported):
    ensemble, single = exported
    x = np.random.default_rng(0).random((3, 28, 28, 1)).astype("float32")
    expected = tf.nn.softmax(member(x)).numpy()
    np.testing.assert_allclose(ensemble.serve(x).numpy(), expected, atol=1e-6)
    np.testing.assert_allclose(single.serve(x).numpy(), member(x).numpy(), atol=1e-6)
    empty = np.zeros((0, 28, 28, 1), np.float32)
    assert tuple(ensemble.serve(empty).shape) == (0, 10)
    assert tuple(ensemble.member_probabilities(empty).shape) == (1, 0, 10)
    assert tuple(single.serve(empty).shape) == (0, 10)


@pytest.mark.parametrize("endpoint", ["serve", "member_probabilities", "uncertainty"])
def test_raw_pixels_are_rejected_not_misread(exported, endpoint):
    ensemble, _ = exported
    raw = np.full((2, 28, 28, 1), 200, np.uint8)  # converted to float32 200.0 by the signature
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"inputs must be float32 values in \[0, 1\] \(raw 0..255 pixels"):
        getattr(ensemble, endpoint)(raw)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_inputs_are_rejected(exported, bad):
    ensemble, single = exported
    x = np.full((2, 28, 28, 1), 0.5, np.float32)
    x[1, 3, 4, 0] = bad
    for model in (ensemble, single):  # the member has no range but still refuses NaN/Inf
        with pytest.raises(tf.errors.InvalidArgumentError, match="inputs hold NaN or Inf"):
            model.serve(x)


def test_export_refuses_non_finite_weights(member, tmp_path):
    clone = keras.models.clone_model(member)
    clone.set_weights(member.get_weights())
    layer = tft.sparse.masked_layers(clone)[0]
    kernel = layer.kernel_variable.numpy()
    kernel[np.nonzero(layer.kernel_mask.numpy())] = np.nan
    layer.kernel_variable.assign(kernel)
    with pytest.raises(ValueError, match=r"has NaN/Inf weights in \['conv1_1/kernel'\]: its training diverged"):
        export_member(clone, str(tmp_path / "m"))
