"""tfmot 0.8's step semantics for the ported schedules (the default `step_convention="tfmot"`).

tfmot's `UpdatePruningStep` sets each wrapper's `pruning_step` to the optimizer's `iterations`
at every batch start, and the wrapper's training call increments it before
`conditional_mask_update` runs: batch b (1-based) prunes with pruning_step b, before its
gradient update, and step 0 is never pruned. tfmot is not installed here (it needs Keras 2), so
the expected masks come from that rule computed by hand.
"""

import math

import keras
import numpy as np
import tensorflow as tf

import tf_freetickets as tft
from tf_freetickets.metrics import gmp_training_flops
from tf_freetickets.sparse import layers as masking


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    h = keras.layers.Dense(10, activation="relu", name="fc")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(h))
    model = tft.sparsify(model, 0.0, distribution="uniform")
    model.compile(keras.optimizers.SGD(0.05), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _data(steps, batch=4):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(steps * batch, 6)).astype("float32")
    return tf.data.Dataset.from_tensor_slices((x, rng.integers(0, 3, steps * batch))).batch(batch)


class _MaskAtBatchStart(keras.callbacks.Callback):
    """Active counts and kernels in force when each batch starts (after any pruning before it)."""

    def __init__(self):
        super().__init__()
        self.counts, self.kernels = [], []

    def on_train_batch_begin(self, batch, logs=None):
        layers = masking.masked_layers(self.model)
        self.counts.append([int(layer.kernel_mask.numpy().sum()) for layer in layers])
        self.kernels.append([layer.kernel_variable.numpy().copy() for layer in layers])


def _tfmot_sparsity_in_batch(schedule, batch):
    """The sparsity tfmot's masks hold during 1-based `batch`: the last pruning_step p <= batch that prunes."""
    pruned = [p for p in range(1, batch + 1) if schedule(p)[0]]
    return schedule(pruned[-1])[1] if pruned else None


def _run(schedule, steps, **kwargs):
    model = _model()
    recorder = _MaskAtBatchStart()
    updater = tft.GradualMagnitudePruning(schedule, prune_at_end_step=False, **kwargs)
    model.fit(_data(steps), epochs=1, verbose=0, shuffle=False, callbacks=[tft.MaskUpdate(updater), recorder])
    return model, recorder, updater


def test_constant_sparsity_first_prunes_at_step_frequency_as_tfmot():
    schedule = tft.ConstantSparsity(0.5, begin_step=0, frequency=4)
    _, recorder, _ = _run(schedule, 10)
    sizes = [60, 30]
    for batch in range(1, 11):
        sparsity = _tfmot_sparsity_in_batch(schedule, batch)
        expected = sizes if sparsity is None else [size - math.floor(sparsity * size) for size in sizes]
        assert recorder.counts[batch - 1] == expected, batch
    assert recorder.counts[:3] == [sizes] * 3  # dense for batches 1-3: tfmot first prunes at step 4 = frequency


def test_polynomial_decay_values_and_steps_match_tfmot_batch_for_batch():
    schedule = tft.PolynomialDecay(0.0, 0.8, begin_step=1, end_step=9, frequency=2)
    _, recorder, updater = _run(schedule, 12)
    sizes = [60, 30]
    for batch in range(1, 13):
        sparsity = _tfmot_sparsity_in_batch(schedule, batch)
        expected = sizes if sparsity is None else [size - math.floor(round(sparsity * size, 6)) for size in sizes]
        assert recorder.counts[batch - 1] == expected, batch
    # Pruning step 1 happens before the first batch, on the initial weights (tfmot's batch 1 forward).
    assert recorder.counts[0] == [60 - math.floor(schedule.sparsity(1) * 60), 30 - math.floor(schedule.sparsity(1) * 30)]
    assert updater.schedule.prunes_before_first_batch()


class _KernelsAfterUpdate(keras.callbacks.Callback):
    """Kernels after each optimizer update, before `MaskUpdate` prunes (listed before it)."""

    def __init__(self):
        super().__init__()
        self.kernels = []

    def on_train_batch_end(self, batch, logs=None):
        self.kernels.append([layer.kernel_variable.numpy().copy() for layer in masking.masked_layers(self.model)])


def test_pruning_of_step_s_reads_the_weights_after_s_minus_1_updates():
    model = _model()
    after_update, at_start = _KernelsAfterUpdate(), _MaskAtBatchStart()
    update = tft.MaskUpdate(tft.GradualMagnitudePruning(tft.ConstantSparsity(0.5, begin_step=3, frequency=3)))
    model.fit(_data(4), epochs=1, verbose=0, shuffle=False, callbacks=[after_update, update, at_start])
    assert at_start.counts[1] == [60, 30]  # dense in batch 2
    for kernel, pruned in zip(after_update.kernels[1], at_start.kernels[2]):  # batch 3 = tfmot's pruning step 3
        keep = kernel.size - math.floor(0.5 * kernel.size)
        largest = np.argsort(-np.abs(kernel).ravel(), kind="stable")[:keep]
        expected = np.zeros(kernel.size)
        expected[largest] = kernel.ravel()[largest]
        np.testing.assert_array_equal(pruned.ravel(), expected)


def test_the_gmp_config_keeps_its_own_convention_and_flops_follow_the_convention():
    model = _model()
    for convention, first in (("tfmot", 3), ("after_step", 4)):
        updater = tft.GradualMagnitudePruning(tft.ConstantSparsity(0.5, begin_step=0, frequency=4), step_convention=convention)
        steps = updater.schedule
        assert [s for s in range(1, 13) if steps.is_update_step(s)] == [first, first + 4, first + 8]
        assert steps.prunes_before_first_batch() == (convention == "after_step")
        cost = gmp_training_flops(updater, model, total_steps=8, batch_size=1)
        dense_steps = first if convention == "tfmot" else 0
        dense, sparse = 3 * 2 * (60 + 30), 3 * 2 * (30 + 15)
        assert cost.step_flops == dense_steps * dense + (8 - dense_steps) * sparse, convention
