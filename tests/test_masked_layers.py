"""Masked layers: forward uses kernel * mask, masks save and load in safe mode."""

import keras
import numpy as np
import pytest

from tf_freetickets.sparse import layers as masking

CASES = [
    (masking.MaskedDense, (5,), dict(units=3)),
    (masking.MaskedEinsumDense, (5,), dict(equation="ab,bc->ac", output_shape=3)),
    (masking.MaskedConv1D, (7, 2), dict(filters=3, kernel_size=3)),
    (masking.MaskedConv2D, (6, 6, 2), dict(filters=3, kernel_size=3)),
    (masking.MaskedConv3D, (4, 4, 4, 2), dict(filters=2, kernel_size=2)),
    (masking.MaskedDepthwiseConv1D, (7, 2), dict(kernel_size=3)),
    (masking.MaskedDepthwiseConv2D, (6, 6, 2), dict(kernel_size=3)),
    (masking.MaskedConv2DTranspose, (4, 4, 2), dict(filters=3, kernel_size=3)),
]


def _model(cls, shape, kwargs):
    inputs = keras.Input(shape)
    layer = cls(**kwargs)
    return keras.Model(inputs, layer(inputs)), layer


def _dense_twin(cls, shape, kwargs, masked_layer):
    """The unmasked Keras layer with the effective (kernel * mask) weights."""
    base = cls.__mro__[2]
    inputs = keras.Input(shape)
    layer = base(**kwargs)
    model = keras.Model(inputs, layer(inputs))
    kernel = masked_layer.kernel_variable.numpy() * masked_layer.kernel_mask.numpy()
    layer.set_weights([kernel] + [w.numpy() for w in masked_layer.weights[1:-1]])
    return model


@pytest.mark.parametrize("cls,shape,kwargs", CASES, ids=[c[0].__name__ for c in CASES])
def test_forward_equals_dense_layer_with_masked_kernel(cls, shape, kwargs):
    model, layer = _model(cls, shape, kwargs)
    rng = np.random.default_rng(0)
    layer.kernel_mask.assign((rng.random(layer.kernel_mask.shape) < 0.4).astype("float32"))
    x = rng.normal(size=(3, *shape)).astype("float32")
    np.testing.assert_allclose(model(x), _dense_twin(cls, shape, kwargs, layer)(x), rtol=1e-5, atol=1e-6)
    # The raw kernel variable is still dense here: the mask, not the variable, is applied.
    assert np.count_nonzero(layer.kernel_variable.numpy()) > np.count_nonzero(layer.kernel_mask.numpy())


@pytest.mark.parametrize("cls,shape,kwargs", CASES, ids=[c[0].__name__ for c in CASES])
def test_mask_round_trips_through_keras_file_in_safe_mode(cls, shape, kwargs, tmp_path):
    model, layer = _model(cls, shape, kwargs)
    mask = (np.random.default_rng(1).random(layer.kernel_mask.shape) < 0.5).astype("float32")
    layer.kernel_mask.assign(mask)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    loaded_layer = loaded.layers[-1]
    assert type(loaded_layer) is cls
    np.testing.assert_array_equal(loaded_layer.kernel_mask.numpy(), mask)
    x = np.random.default_rng(2).normal(size=(2, *shape)).astype("float32")
    np.testing.assert_allclose(loaded(x), model(x), rtol=1e-6)


def test_mask_is_non_trainable_and_kernel_is_trainable():
    layer = masking.MaskedDense(2, name="masked_dense")
    layer.build((None, 4))
    paths = lambda weights: [w.path for w in weights]  # noqa: E731
    assert paths(layer.trainable_weights) == ["masked_dense/kernel", "masked_dense/bias"]
    assert paths(layer.non_trainable_weights) == ["masked_dense/kernel_mask"]


def test_gradient_reaching_kernel_is_zero_where_masked():
    import tensorflow as tf

    model, layer = _model(masking.MaskedDense, (4,), dict(units=3))
    mask = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]], "float32")
    layer.kernel_mask.assign(mask)
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(model(np.ones((2, 4), "float32")) ** 2)
    grad = tape.gradient(loss, layer.kernel_variable).numpy()
    assert np.all(grad[mask == 0] == 0)
    assert np.all(grad[mask == 1] != 0)


def test_unmasked_kernels_gives_dense_gradient_of_effective_weights():
    import tensorflow as tf

    model, layer = _model(masking.MaskedDense, (2,), dict(units=2, use_bias=False))
    layer.kernel_mask.assign(np.array([[1, 0], [0, 1]], "float32"))
    layer.kernel_variable.assign(np.array([[2.0, 0.0], [0.0, 3.0]], "float32"))
    x = np.array([[1.0, 2.0]], "float32")
    with masking.unmasked_kernels(model):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(model(x))
        grad = tape.gradient(loss, layer.kernel_variable).numpy()
    # d sum(x W) / dW_ij = x_i for every entry, pruned ones included.
    np.testing.assert_array_equal(grad, [[1.0, 1.0], [2.0, 2.0]])
    assert layer._apply_kernel_mask  # restored on exit


def test_masked_class_for_user_layer_with_kernel():
    class Scale(keras.layers.Layer):
        def build(self, input_shape):
            self.kernel = self.add_weight(shape=(input_shape[-1],), initializer="ones")

        def call(self, x):
            return x * self.kernel

    masked = masking.masked_class_for(Scale)
    assert masking.masked_class_for(Scale) is masked
    layer = masked()
    layer.build((None, 3))
    layer.kernel_mask.assign(np.array([1.0, 0.0, 1.0], "float32"))
    np.testing.assert_array_equal(layer(np.array([[2.0, 3.0, 4.0]], "float32")), [[2.0, 0.0, 4.0]])


def test_masked_class_for_rejects_non_layers():
    with pytest.raises(TypeError, match="keras Layer class"):
        masking.masked_class_for(int)
