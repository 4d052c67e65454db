"""N:M structured sparsity (tfmot's `sparsity_m_by_n`): exact counts per group through training,
updates and strip, and one-line refusals."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_freetickets as tft
from tf_freetickets.experiments.config import ConfigError, fashion_mnist_defaults, validate
from tf_freetickets.experiments.plan import RunPlan
from tf_freetickets.sparse import layers as masking
from tf_freetickets.sparse import structured


def _model(sparsity, in_channels=4):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, in_channels))
    h = keras.layers.Conv2D(4, 3, activation="relu", name="conv")(inputs)  # groups along its 4 input channels
    h = keras.layers.Flatten()(h)  # 64 features
    h = keras.layers.Dense(8, activation="relu", name="fc")(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(h))
    model = tft.sparsify(model, sparsity, distribution="uniform", seed=0)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _data(steps=12, batch=8, in_channels=4):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * batch, 6, 6, in_channels)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, rng.integers(0, 3, steps * batch))).batch(batch)


class _GroupCounts(keras.callbacks.Callback):
    """The set of per-group active counts over all masked layers after every batch."""

    def __init__(self):
        super().__init__()
        self.counts = []

    def on_train_batch_end(self, batch, logs=None):
        values = set()
        for layer in masking.masked_layers(self.model):
            values |= set(structured.group_counts(layer.kernel_mask.numpy(), 4).tolist())
        self.counts.append(values)


def _assert_2_of_4_after_strip(model, exact=True):
    """The stripped kernels hold the pattern: 2 nonzeros per group (at most 2 when a grown weight is still 0)."""
    plain = tft.strip_masks(model)
    for name in ("conv", "fc", "logits"):
        kernel = plain.get_layer(name).kernel.numpy()
        masked = model.get_layer(name)
        np.testing.assert_array_equal(kernel, masked.kernel_variable.numpy() * masked.kernel_mask.numpy())
        counts = set(structured.group_counts(kernel, 4).tolist())
        assert counts == {2} if exact else counts <= {0, 1, 2}, name


def test_groups_run_along_the_input_dimension_as_tfmot():
    kernel = np.arange(2 * 2 * 8 * 3).reshape(2, 2, 8, 3)
    groups = np.asarray(structured.to_groups(tf.constant(kernel), 4))
    np.testing.assert_array_equal(groups[0], kernel[0, 0, 0:4, 0])  # 4 input channels of one filter tap
    np.testing.assert_array_equal(groups[1], kernel[0, 0, 4:8, 0])
    dense = np.arange(8 * 2).reshape(8, 2)
    np.testing.assert_array_equal(np.asarray(structured.to_groups(tf.constant(dense), 4))[1], dense[4:8, 0])


def test_gmp_reaches_exactly_2_of_4_gradually_and_keeps_it_through_strip():
    model = _model(0.0)
    counts = _GroupCounts()
    schedule = tft.PolynomialDecay(0.0, 0.5, begin_step=1, end_step=7, frequency=2)
    update = tft.MaskUpdate(tft.GradualMagnitudePruning(schedule, n_m=(2, 4)))
    model.fit(_data(), epochs=1, verbose=0, callbacks=[update, counts])
    # Each pruning keeps 4 - floor(4 s) per group: every group holds the same count at every step.
    assert all(len(c) == 1 for c in counts.counts)
    # After optimizer step 3 the last pruning was schedule step 3 (tfmot's convention): 4 - floor(1.75) = 3.
    assert counts.counts[2] == {4 - math.floor(4 * schedule.sparsity(3))} == {3} and counts.counts[-1] == {2}
    _assert_2_of_4_after_strip(model)


@pytest.mark.parametrize("updater_class", [tft.SET, tft.RigL])
def test_dst_updates_keep_exactly_2_of_4_in_every_group(updater_class):
    model = _model(0.5)
    counts = _GroupCounts()
    options = {"growth_gradient": "step_batch"} if updater_class is tft.RigL else {}
    updater = updater_class(update_every=2, drop_fraction=0.5, end_step=10, seed=3, n_m=(2, 4), **options)
    update = tft.MaskUpdate(updater)
    before = [layer.kernel_mask.numpy().copy() for layer in masking.masked_layers(model)]
    model.fit(_data(), epochs=1, verbose=0, callbacks=[update, counts])
    assert all(c == {2} for c in counts.counts)  # after every batch, updates included
    assert len(update.history) == 5 and sum(sum(changed) for _, _, changed in update.history) > 0
    after = [layer.kernel_mask.numpy() for layer in masking.masked_layers(model)]
    assert any(np.any(a != b) for a, b in zip(after, before))  # masks moved
    _assert_2_of_4_after_strip(model, exact=False)  # RigL/SET grow weights at 0


def test_a_layer_whose_input_dim_m_does_not_divide_is_refused_in_one_line():
    model = _model(0.0, in_channels=3)
    update = tft.MaskUpdate(tft.GradualMagnitudePruning(tft.ConstantSparsity(0.5, 0, frequency=2), n_m=(2, 4)))
    with pytest.raises(
        ValueError, match=r"^N:M sparsity 2:4 needs each layer's input dimension divisible by 4; layer 'conv' has 3\.$"
    ):
        model.fit(_data(in_channels=3), epochs=1, verbose=0, callbacks=[update])


def test_a_sparsity_that_conflicts_with_n_m_is_refused():
    with pytest.raises(
        ValueError, match="N:M sparsity 2:4 keeps 2/4 of every layer, so the schedule's final_sparsity must be 0.5"
    ):
        tft.GradualMagnitudePruning(tft.ConstantSparsity(0.8, 0), n_m=(2, 4)).bind(masking.masked_layers(_model(0.0)))
    with pytest.raises(ValueError, match="layer 'conv' has 80 of 144 weights active; sparsify with sparsity=0.5"):
        _model(0.45).fit(_data(), epochs=1, verbose=0, callbacks=[tft.MaskUpdate(tft.SET(n_m=(2, 4), end_step=4))])
    with pytest.raises(ValueError, match=r"n_m must be a pair \(N, M\) of integers with 1 <= N < M, got \(4, 4\)"):
        tft.SET(n_m=(4, 4))


def test_config_field_builds_the_pattern_and_refuses_conflicts():
    config = fashion_mnist_defaults()
    config.sparse.method, config.sparse.sparsity, config.sparse.distribution, config.sparse.n_m = "rigl", 0.5, "uniform", "2:4"
    assert RunPlan.from_config(validate(config)).sparsity.make_updater(0).n_m == (2, 4)
    config.sparse.sparsity = 0.8
    with pytest.raises(ConfigError, match="so config.sparse.sparsity must be 0.5, got 0.8"):
        validate(config)
    config.sparse.method, config.sparse.sparsity = "cigl", 0.5
    with pytest.raises(ConfigError, match="n_m"):
        validate(config)
