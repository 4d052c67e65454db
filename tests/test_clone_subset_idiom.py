"""tfmot's subset idiom: `clone_model` with a clone_function returning a masked layer built from config."""

import keras
import numpy as np
import pytest

import tf_freetickets as tft
from tf_freetickets.sparse import layers as masking


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((5,))
    h = keras.layers.Dense(7, activation="relu", name="fc")(inputs)
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(h))


def test_the_masked_layer_keeps_the_original_weights():
    model = _model()

    def apply_masking(layer):
        if layer.name == "fc":
            return masking.masked_class_for(type(layer)).from_config(layer.get_config())
        return layer

    clone = keras.models.clone_model(model, clone_function=apply_masking)
    fc = clone.get_layer("fc")
    assert tft.sparse.is_masked(fc)
    for new, old in zip(fc.get_weights()[:2], model.get_layer("fc").get_weights()):
        np.testing.assert_array_equal(new, old)
    assert fc.kernel_mask.numpy().min() == 1.0  # dense start, as tfmot's wrapper
    x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    np.testing.assert_allclose(clone.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def test_a_shape_mismatch_warns_naming_the_layer():
    model = _model()

    def wider(layer):
        if layer.name == "fc":
            return masking.MaskedDense.from_config({**layer.get_config(), "units": 9})
        if layer.name == "logits":
            return keras.layers.Dense(3, name="logits")
        return layer

    with pytest.warns(UserWarning, match="'fc' was rebuilt from the config of 'fc'.*freshly initialised"):
        keras.models.clone_model(model, clone_function=wider)


def test_keras_default_clone_still_reinitialises():
    model = tft.sparsify(_model(), 0.5, distribution="uniform", seed=0)
    clone = keras.models.clone_model(model)
    assert not np.array_equal(clone.get_layer("fc").kernel_variable.numpy(), model.get_layer("fc").kernel_variable.numpy())
