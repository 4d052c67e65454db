"""FusedBatchNormalization computes Keras 3's BatchNormalization, through TensorFlow's fused kernel."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_freetickets import models
from tf_freetickets.models import FusedBatchNormalization, with_fused_batchnorm


def _pair(shape, **kwargs):
    """A Keras BatchNormalization and a FusedBatchNormalization of the same config and (random) weights."""
    reference, fused = keras.layers.BatchNormalization(**kwargs), FusedBatchNormalization(**kwargs)
    reference.build(shape)
    fused.build(shape)
    rng = np.random.RandomState(1)
    weights = [rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in reference.get_weights()]
    reference.set_weights(weights)
    fused.set_weights(weights)
    return reference, fused


def _inputs(shape, seed=0):
    return tf.constant(np.random.RandomState(seed).randn(*shape).astype("float32") * 3.0 + 1.0)


@pytest.mark.parametrize("kwargs", [{"momentum": 0.9, "epsilon": 1e-5}, {"center": False}, {"scale": False}])
def test_training_step_matches_keras_outputs_statistics_and_gradients(kwargs):
    x = _inputs((8, 5, 5, 3))
    reference, fused = _pair(x.shape, **kwargs)
    assert fused.fuses(x)
    results = []
    for layer in (reference, fused):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, training=True)
            loss = tf.reduce_sum(tf.sin(y) * tf.range(1.0, 4.0))  # weights the channels differently
        grads = tape.gradient(loss, [x] + layer.trainable_weights)
        results.append((y, grads, [v.numpy() for v in (layer.moving_mean, layer.moving_variance)]))
    (y_ref, g_ref, stats_ref), (y_fused, g_fused, stats_fused) = results
    np.testing.assert_allclose(y_fused, y_ref, atol=2e-6)
    for a, b in zip(g_fused, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-5)
    # the moving variance follows Keras' biased batch variance, not the fused kernel's Bessel-corrected one
    for a, b in zip(stats_fused, stats_ref):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    momentum = kwargs.get("momentum", 0.99)
    biased = np.var(x.numpy().reshape(-1, 3), axis=0)
    assert np.allclose(stats_fused[1], _start_variance(kwargs) * momentum + biased * (1 - momentum), rtol=1e-5)


def _start_variance(kwargs):
    """The moving variance `_pair` set before the step (its last weight)."""
    layer = keras.layers.BatchNormalization(**kwargs)
    layer.build((8, 5, 5, 3))
    rng = np.random.RandomState(1)
    return [rng.uniform(0.5, 1.5, w.shape).astype("float32") for w in layer.get_weights()][-1]


def test_inference_uses_the_moving_statistics_as_keras():
    x = _inputs((4, 3, 3, 6))
    reference, fused = _pair(x.shape, epsilon=1e-5)
    np.testing.assert_allclose(fused(x, training=False), reference(x, training=False), atol=2e-6)


@pytest.mark.parametrize("shape,kwargs", [((16, 6), {}), ((4, 3, 5, 5), {"axis": 1})])
def test_inputs_the_kernel_does_not_take_go_through_keras_path(shape, kwargs):
    x = _inputs(shape)
    reference, fused = _pair(x.shape, **kwargs)
    assert not fused.fuses(x)
    np.testing.assert_allclose(fused(x, training=True), reference(x, training=True), atol=1e-6)
    np.testing.assert_allclose(fused.moving_variance.numpy(), reference.moving_variance.numpy(), rtol=1e-6)


def test_mixed_precision_keeps_the_compute_dtype():
    x = _inputs((8, 4, 4, 3))
    reference, fused = _pair(x.shape, dtype="mixed_float16")
    y_fused, y_ref = fused(tf.cast(x, "float16"), training=True), reference(tf.cast(x, "float16"), training=True)
    assert y_fused.dtype == tf.float16
    np.testing.assert_allclose(y_fused.numpy().astype("float32"), y_ref.numpy().astype("float32"), atol=4e-3)
    assert fused.moving_mean.dtype == "float32"


def test_with_fused_batchnorm_copies_the_model_and_trains_to_the_same_weights(tmp_path):
    keras.utils.set_random_seed(0)
    model = models.build_model("small_cnn", (12, 12, 1), 4, width=0.25, weight_decay=5e-4, fused_batchnorm=False)
    fused = with_fused_batchnorm(model)
    bn = [layer for layer in fused.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert len(bn) == 4 and all(isinstance(layer, FusedBatchNormalization) for layer in bn)
    assert not any(isinstance(layer, FusedBatchNormalization) for layer in model.layers)  # the original is unchanged
    x = np.random.RandomState(2).rand(16, 12, 12, 1).astype("float32")
    y = np.arange(16) % 4
    np.testing.assert_allclose(fused.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    for m in (model, fused):
        m.compile(keras.optimizers.SGD(0.1, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        m.fit(x, y, batch_size=8, epochs=2, shuffle=False, verbose=0)
    for a, b in zip(fused.get_weights(), model.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-5)
    path = str(tmp_path / "fused.keras")
    fused.save(path)
    reloaded = keras.models.load_model(path)
    assert isinstance(reloaded.get_layer("bn1_1"), FusedBatchNormalization)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), fused.predict(x, verbose=0), atol=1e-6)


def test_build_model_and_the_config_switch_fuse_every_batchnorm():
    import types

    from tf_freetickets.experiments.config import fashion_mnist_defaults
    from tf_freetickets.experiments.plan import RunPlan
    from tf_freetickets.experiments.run_context import RunContext

    model = models.build_model("cifar_resnet", (8, 8, 3), 10, depth=8, width=0.25)  # fused by default
    norms = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(isinstance(layer, FusedBatchNormalization) for layer in norms)
    plain = models.build_model("cifar_resnet", (8, 8, 3), 10, depth=8, width=0.25, fused_batchnorm=False)
    assert not any(isinstance(layer, FusedBatchNormalization) for layer in plain.layers)
    config = fashion_mnist_defaults()
    assert config.fused_batchnorm is True  # on by default (the committed studies state their setting)
    source = types.SimpleNamespace(input_shape=(28, 28, 1), num_classes=10)
    built = RunContext(RunPlan.from_config(config), "unused", source, None).build()
    norms = [layer for layer in built.layers if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(isinstance(layer, FusedBatchNormalization) for layer in norms)
