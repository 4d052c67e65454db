"""sparsify(): exact per-layer counts, weights kept, clear errors."""

import keras
import numpy as np
import pytest

import tf_freetickets as tft
from tf_freetickets.sparse import densities
from tf_freetickets.sparse import layers as masking


def small_cnn():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, name="conv_a")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = keras.layers.DepthwiseConv2D(3, name="depthwise")(x)
    x = keras.layers.Conv2D(16, 3, name="conv_b")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(32, activation="relu", name="fc1")(x)
    return keras.Model(inputs, keras.layers.Dense(10, name="logits")(x))


@pytest.mark.parametrize("distribution", ["erk", "er", "uniform"])
@pytest.mark.parametrize("sparsity", [0.5, 0.8, 0.9])
def test_exact_active_counts_and_zeros_outside_masks(distribution, sparsity):
    model = small_cnn()
    sparse = tft.sparsify(model, sparsity, distribution=distribution, seed=3)
    layers = masking.masked_layers(sparse)
    assert [layer.name for layer in layers] == ["conv_a", "depthwise", "conv_b", "fc1", "logits"]
    shapes = [(layer.name, tuple(layer.kernel_mask.shape)) for layer in layers]
    want = densities.layer_densities(shapes, sparsity, distribution)
    for layer in layers:
        mask = layer.kernel_mask.numpy()
        assert set(np.unique(mask)) <= {0.0, 1.0}
        assert mask.sum() == densities.active_count(mask.size, want[layer.name]), layer.name
        kernel = layer.kernel_variable.numpy()
        assert np.all(kernel[mask == 0] == 0)
        original = model.get_layer(layer.name).kernel.numpy()
        np.testing.assert_array_equal(kernel[mask == 1], original[mask == 1])


def test_non_kernel_weights_are_copied_and_outputs_follow_the_masks():
    model = small_cnn()
    sparse = tft.sparsify(model, 0.0, distribution="uniform")
    np.testing.assert_array_equal(sparse.get_layer("bn").get_weights()[0], model.get_layer("bn").get_weights()[0])
    x = np.random.default_rng(0).normal(size=(2, 12, 12, 3)).astype("float32")
    np.testing.assert_allclose(sparse(x), model(x), rtol=1e-5, atol=1e-6)


def test_same_seed_same_masks_different_seed_different_masks():
    model = small_cnn()
    a, b, c = (tft.sparsify(model, 0.8, seed=s) for s in (1, 1, 2))
    mask = lambda m: m.get_layer("fc1").kernel_mask.numpy()  # noqa: E731
    np.testing.assert_array_equal(mask(a), mask(b))
    assert not np.array_equal(mask(a), mask(c))


def test_exclude_and_dense_first_last_keep_layers_unmasked():
    model = small_cnn()
    sparse = tft.sparsify(model, 0.8, exclude=["depthwise"], dense_first_last=True)
    assert [layer.name for layer in masking.masked_layers(sparse)] == ["conv_b", "fc1"]
    assert type(sparse.get_layer("logits")) is keras.layers.Dense


def test_sequential_and_nested_models():
    inner = keras.Sequential([keras.Input((6,)), keras.layers.Dense(5, name="inner_fc")], name="inner")
    inputs = keras.Input((6,))
    outer = keras.Model(inputs, keras.layers.Dense(2, name="head")(inner(inputs)))
    sparse = tft.sparsify(outer, 0.5, distribution="uniform")
    assert [layer.name for layer in masking.masked_layers(sparse)] == ["inner_fc", "head"]
    assert sparse.get_layer("inner").get_layer("inner_fc").kernel_mask.numpy().sum() == 15


def test_table_lists_every_masked_layer_and_the_total():
    sparse = tft.sparsify(small_cnn(), 0.9, seed=0)
    table = tft.sparsity_table(sparse)
    lines = table.splitlines()
    assert lines[0].split()[:3] == ["layer", "kernel", "shape"]
    assert [line.split()[0] for line in lines[1:-1]] == ["conv_a", "depthwise", "conv_b", "fc1", "logits"]
    rows = tft.sparse.sparsity_rows(sparse)
    total_active = sum(r.active for r in rows)
    assert lines[-1].split()[-2:] == [str(total_active), str(sum(r.total for r in rows))]
    assert tft.global_sparsity(sparse) == pytest.approx(1 - total_active / sum(r.total for r in rows))
    assert tft.global_sparsity(sparse) == pytest.approx(0.9, abs=2e-3)


def test_errors_name_the_bad_input():
    model = small_cnn()
    with pytest.raises(ValueError, match=r"\['nope'\].*maskable"):
        tft.sparsify(model, 0.5, exclude=["nope"])
    with pytest.raises(ValueError, match="sparsity must be in"):
        tft.sparsify(model, 1.2)
    with pytest.raises(ValueError, match="sparsify it only once"):
        tft.sparsify(tft.sparsify(model, 0.5), 0.5)
    with pytest.raises(ValueError, match="Every maskable layer is excluded"):
        tft.sparsify(model, 0.5, exclude=["conv_a", "depthwise", "conv_b", "fc1", "logits"])

    class Sub(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = keras.layers.Dense(2)

        def call(self, x):
            return self.fc(x)

    sub = Sub()
    sub(np.ones((1, 3), "float32"))
    with pytest.raises(TypeError, match="subclassed"):
        tft.sparsify(sub, 0.5)
    with pytest.raises(TypeError, match="keras.Model"):
        tft.sparsify(keras.layers.Dense(3), 0.5)
