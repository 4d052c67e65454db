"""Block sparsity for gradual magnitude pruning (tfmot's `block_size`, `block_pooling_type`):
whole blocks through training and strip, scheduled block counts, avg vs max pooling, refusals."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_freetickets as tft
from tf_freetickets.experiments.config import ConfigError, fashion_mnist_defaults, validate
from tf_freetickets.experiments.plan import RunPlan
from tf_freetickets.sparse import layers as masking


def _model(conv=False):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2) if conv else (10,))
    h = inputs
    if conv:
        h = keras.layers.Flatten()(keras.layers.Conv2D(2, 3, name="conv")(h))
    h = keras.layers.Dense(7, activation="relu", name="fc")(h)  # (10, 7): partial blocks of (4, 2) at both edges
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(h))
    model = tft.sparsify(model, 0.0, distribution="uniform", seed=0)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _data(steps=10, batch=8):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * batch, 10)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, rng.integers(0, 3, steps * batch))).batch(batch)


def _blocks(kernel, size):
    """Nonzero count and entry count of each block, by plain slicing (blocks from index 0, partial at the end)."""
    (rows, cols), (r, c) = kernel.shape, size
    cells = [(kernel[i : i + r, j : j + c]) for i in range(0, rows, r) for j in range(0, cols, c)]
    return [(int(np.count_nonzero(cell)), cell.size) for cell in cells]


@pytest.mark.parametrize("pooling", ["avg", "max"])
def test_whole_blocks_are_pruned_to_the_scheduled_count_through_strip(pooling):
    model = _model()
    schedule = tft.PolynomialDecay(0.0, 0.6, begin_step=1, end_step=7, frequency=2)
    updater = tft.GradualMagnitudePruning(schedule, block_size=(4, 2), block_pooling=pooling)
    model.fit(_data(), epochs=1, verbose=0, callbacks=[tft.MaskUpdate(updater)])
    plain = tft.strip_masks(model)
    for name, zeros in zip(("fc", "logits"), updater.target_zero_blocks(10)):
        kernel = plain.get_layer(name).kernel.numpy()
        masked = model.get_layer(name)
        np.testing.assert_array_equal(kernel, masked.kernel_variable.numpy() * masked.kernel_mask.numpy())
        blocks = _blocks(kernel, (4, 2))
        assert all(count in (0, size) for count, size in blocks), name  # all zero or all kept, exactly
        assert sum(count == 0 for count, _ in blocks) == zeros, name
    # (10, 7) has 3 x 4 = 12 blocks: floor(0.6 * 12) = 7 zero; (7, 3): 2 x 2 = 4 blocks, floor(2.4) = 2.
    assert updater.target_zero_blocks(10) == [7, 2]


def test_avg_and_max_pooling_pick_the_blocks_a_hand_computation_says():
    # One 4 x 2 kernel, blocks of (2, 2): rows 0-1 hold |w| {0.9, 0, 0, 0} (avg 0.225, max 0.9);
    # rows 2-3 hold {0.4, 0.4, 0.4, 0.4} (avg 0.4, max 0.4). Pruning one of two blocks:
    # avg drops the first block, max drops the second.
    kernel = np.array([[0.9, 0.0], [0.0, 0.0], [0.4, -0.4], [0.4, 0.4]], "float32")
    for pooling, expect in (("avg", [[0, 0], [0, 0], [1, 1], [1, 1]]), ("max", [[1, 1], [1, 1], [0, 0], [0, 0]])):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, use_bias=False, name="fc")])
        model = tft.sparsify(model, 0.0, distribution="uniform", seed=0)
        model.get_layer("fc").kernel_variable.assign(kernel)
        model.compile(keras.optimizers.SGD(0.0), "mse")
        updater = tft.GradualMagnitudePruning(
            tft.ConstantSparsity(0.5, 0, frequency=1), block_size=(2, 2), block_pooling=pooling, step_convention="after_step"
        )
        model.fit(np.zeros((2, 4), "float32"), np.zeros((2, 2), "float32"), verbose=0, callbacks=[tft.MaskUpdate(updater)])
        np.testing.assert_array_equal(model.get_layer("fc").kernel_mask.numpy(), expect, err_msg=pooling)


def test_a_conv_kernel_is_refused_in_one_line():
    update = tft.MaskUpdate(tft.GradualMagnitudePruning(tft.ConstantSparsity(0.5, 0, frequency=2), block_size=(1, 4)))
    with pytest.raises(
        tft.sparse.StructureError,  # a ValueError the binaries report in one line
        match=r"^Block sparsity \(1, 4\) applies to rank-2 \(Dense\) kernels as in tfmot; layer 'conv' \(MaskedConv2D\) "
        r"has kernel shape \(3, 3, 2, 2\)\.$",
    ):
        _model(conv=True).fit(np.zeros((8, 6, 6, 2), "float32"), np.zeros(8), verbose=0, callbacks=[update])


def test_block_size_with_n_m_or_bad_values_is_refused():
    schedule = tft.ConstantSparsity(0.5, 0)
    with pytest.raises(ValueError, match=r"^block_size=\(1, 4\) cannot be combined with n_m \(N:M sparsity\)"):
        tft.GradualMagnitudePruning(schedule, n_m=(2, 4), block_size=(1, 4))
    with pytest.raises(ValueError, match=r"^block_size must be a pair \(rows, cols\) of positive integers, got \(0, 4\)\.$"):
        tft.GradualMagnitudePruning(schedule, block_size=(0, 4))
    with pytest.raises(ValueError, match=r"^block_pooling must be one of \('avg', 'max'\), got 'sum'\.$"):
        tft.GradualMagnitudePruning(schedule, block_size=(1, 4), block_pooling="sum")


def test_config_field_builds_blocks_and_refuses_n_m_together():
    config = fashion_mnist_defaults()
    config.sparse.method, config.sparse.distribution, config.sparse.block_size = "gmp", "uniform", "1,4"
    config.sparse.block_pooling = "max"
    updater = RunPlan.from_config(validate(config)).sparsity.make_updater(0)
    assert (updater.block_size, updater.block_pooling) == ((1, 4), "max")
    config.sparse.sparsity, config.sparse.n_m = 0.5, "2:4"
    with pytest.raises(ConfigError, match="block_size='1,4' cannot be combined with sparse.n_m"):
        validate(config)
    config.sparse.n_m, config.sparse.block_size = "", "1x4"
    with pytest.raises(ConfigError, match="block_size must be written 'rows,cols'"):
        validate(config)


def test_a_partly_masked_start_is_refused():
    model = tft.sparsify(keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="fc")]), 0.5, seed=0)
    model.compile(keras.optimizers.SGD(0.01), "mse")
    updater = tft.GradualMagnitudePruning(tft.ConstantSparsity(0.5, 0), block_size=(2, 2))
    with pytest.raises(ValueError, match="^Layer 'fc' has blocks of \\(2, 2\\) that are partly masked"):
        updater.attach(model, masking.masked_layers(model))
