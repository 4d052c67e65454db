"""Chase (Yin et al., NeurIPS 2023): channels of smallest UMM removed on the cubic schedule, exact
counts, removed channels zero everywhere, residual-feeding layers untouched, compaction, config,
resume and the binary."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
from keras import ops

import tf_freetickets as tft
from tf_freetickets.data import DEFAULT_DIR
from tf_freetickets.sparse import layers as masking
from tf_freetickets.sparse import optimizer_slots
from tf_freetickets.sparse.methods.chase import Chase, chase_update, removed_units

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _numpy(value):
    return np.asarray(ops.convert_to_numpy(value))


def _cnn(sparsity=0.5, distribution="uniform"):
    """8x8x1 -> conv1 (8) -> conv2 (8) -> Flatten -> hidden (6) -> out (3): no residual adds."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv1")(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu", name="conv2")(x)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(6, activation="relu", name="hidden")(x)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(x))
    return tft.sparsify(model, sparsity, distribution=distribution, seed=0)


def _data(n=80, shape=(8, 8, 1)):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, *shape)).astype("float32"), rng.integers(0, 3, n)


class _Record(keras.callbacks.Callback):
    """After every batch (the mask update runs first): removed units, counts; checks zeros in kernel and slots."""

    def __init__(self):
        super().__init__()
        self.removed, self.counts = {}, {}

    def on_train_batch_end(self, batch, logs=None):
        step = int(_numpy(self.model.optimizer.iterations))
        self.removed[step] = {layer.name: removed_units(layer) for layer in masking.masked_layers(self.model)}
        self.counts[step] = {layer.name: int(_numpy(ops.sum(layer.kernel_mask))) for layer in masking.masked_layers(self.model)}
        for layer in masking.masked_layers(self.model):
            mask = _numpy(layer.kernel_mask)
            assert np.all(_numpy(layer.kernel_variable)[mask == 0] == 0), layer.name
            for slot in optimizer_slots.slots_for(self.model.optimizer, layer.kernel_variable):
                assert np.all(_numpy(slot)[mask == 0] == 0), (layer.name, slot.name)


def _train(model, updater, steps=10, callbacks=()):
    x, y = _data(8 * steps, tuple(model.input_shape[1:]))
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    record = _Record()
    update = tft.MaskUpdate(updater, gradient_data=(x, y), gradient_batch_size=8)
    model.fit(x, y, batch_size=8, epochs=1, shuffle=False, verbose=0, callbacks=[update, record, *callbacks])
    return record


def _chase(**kwargs):
    options = dict(update_every=1, drop_fraction=0.3, end_fraction=1.0, seed=0, channel_sparsity=0.5, channel_end_fraction=1.0)
    return Chase(**{**options, **kwargs})


def test_removed_channels_follow_the_cubic_schedule_with_exact_counts_and_zero_slots():
    model = _cnn()
    before = {layer.name: int(_numpy(ops.sum(layer.kernel_mask))) for layer in masking.masked_layers(model)}
    record = _train(model, _chase())
    # Hand computation, S(t) = 0.5 (1 - (1 - t / 10)^3), n = min(floor(S U), U - ceil(B / F)):
    # conv1 U=8, F=9, B=36: cap 4; conv2 U=8, F=72, B=288: cap 4; hidden U=6, F=128, B=384: cap 3.
    # t=1: S=0.1355 -> 1, 1, 0; t=3: 0.3285 -> 2, 2, 1; t=5: 0.4375 -> 3, 3, 2; t=10: 0.5 -> 4, 4, 3.
    expected = {1: (1, 1, 0), 3: (2, 2, 1), 5: (3, 3, 2), 10: (4, 4, 3)}
    for step, counts in expected.items():
        removed = record.removed[step]
        assert (removed["conv1"].sum(), removed["conv2"].sum(), removed["hidden"].sum()) == counts, step
        assert removed["out"].sum() == 0  # the classifier never loses units
    for step in range(1, 11):
        assert record.counts[step] == before, step  # the freed budget is regrown in the layer
    for step in range(2, 11):  # a removed channel stays removed
        for name, now in record.removed[step].items():
            assert np.all(now[record.removed[step - 1][name]]), (name, step)


def test_umm_counts_the_masked_zeros_and_the_budget_goes_to_live_units():
    # Unit 0: one active weight of |w| 1.0 (UMM 0.25, mean over its active weights 1.0);
    # unit 1: four of 0.3 (UMM 0.3). UMM removes unit 0, a mean over active weights would remove unit 1.
    mask = np.array([[1, 1, 1, 0], [0, 1, 0, 0], [0, 1, 0, 1], [0, 1, 1, 1]], "float32")
    weights = mask * np.array([[1.0, 0.3, 0.9, 0.0], [0, 0.3, 0, 0], [0, 0.3, 0, 0.8], [0, 0.3, 0.7, 0.6]], "float32")
    gradient = np.arange(16, dtype="float32").reshape(4, 4)  # largest at row 3, column 3
    new, grown = chase_update(mask, weights, gradient, 0.0, 1, need_grown=True)
    new, grown = _numpy(new), _numpy(grown)
    assert np.all(new[:, 0] == 0)  # unit 0 removed
    assert new.sum() == mask.sum()  # its budget regrown elsewhere
    # drop fraction 0: every active weight of the live units kept, one weight grown by |gradient| in a live unit
    assert np.all(new[mask * [0, 1, 1, 1] > 0] == 1)
    np.testing.assert_array_equal(np.argwhere(grown), [[2, 2]])  # inactive in live units: |g| 3, 6, 7, 10


def test_layers_feeding_a_residual_add_or_the_output_keep_their_channels():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6, 6, 2))
    a = keras.layers.ReLU()(keras.layers.Conv2D(4, 3, padding="same", name="c0")(inputs))
    b = keras.layers.Conv2D(4, 3, padding="same", activation="relu", name="c1")(a)
    c = keras.layers.BatchNormalization()(keras.layers.Conv2D(4, 3, padding="same", name="c2")(b))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.Add(name="add")([a, c]))
    model = tft.sparsify(keras.Model(inputs, keras.layers.Dense(3, name="out")(x)), 0.5, distribution="uniform", seed=0)
    updater = _chase()
    record = _train(model, updater)
    plans = dict(zip([layer.name for layer in masking.masked_layers(model)], updater.plans))
    assert [plans[name].prunable for name in ("c0", "c1", "c2", "out")] == [False, True, False, False]
    assert "add" in plans["c0"].reason and "add" in plans["c2"].reason
    removed = record.removed[10]
    assert (removed["c0"].sum(), removed["c1"].sum(), removed["c2"].sum(), removed["out"].sum()) == (0, 2, 0, 0)


def test_compact_removes_exactly_the_channels_chase_removed():
    model = _cnn()
    _train(model, _chase())
    removed = {layer.name: removed_units(layer) for layer in masking.masked_layers(model)}
    assert [int(removed[n].sum()) for n in ("conv1", "conv2", "hidden")] == [4, 4, 3]
    small, report = tft.compact(model)
    for name in ("conv1", "conv2", "hidden"):
        row = report.row(name)
        assert (row.before, row.after) == (len(removed[name]), len(removed[name]) - removed[name].sum()), name
        assert row.dead + row.folded == removed[name].sum() and row.unread == 0, name
    x, _ = _data(16)
    np.testing.assert_allclose(_numpy(small(x)), _numpy(model(x)), atol=1e-5)


def test_compact_removes_the_channels_chase_removed_in_a_residual_block():
    # A CIFAR ResNet block: conv1 (no bias) -> BN -> ReLU -> conv2 ("same") -> BN -> Add. Chase prunes
    # conv1 only; each removed channel outputs relu(BN(0)), a nonzero constant (beta starts at 0.1), into
    # a "same"-padded conv2, where no bias can take it: compact carries them all in one channel, or,
    # with padded_constants="offset", removes them all and adds their share after conv2 as an offset map.
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 2))
    stem = keras.layers.ReLU()(keras.layers.Conv2D(6, 3, padding="same", name="stem")(inputs))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="conv1")(stem)
    x = keras.layers.ReLU()(keras.layers.BatchNormalization(beta_initializer=keras.initializers.Constant(0.1))(x))
    x = keras.layers.BatchNormalization()(keras.layers.Conv2D(6, 3, padding="same", use_bias=False, name="conv2")(x))
    x = keras.layers.GlobalAveragePooling2D()(keras.layers.ReLU()(keras.layers.Add()([stem, x])))
    model = tft.sparsify(keras.Model(inputs, keras.layers.Dense(3, name="out")(x)), 0.5, distribution="uniform", seed=0)
    _train(model, _chase(), steps=12)
    removed = {layer.name: int(removed_units(layer).sum()) for layer in masking.masked_layers(model)}
    assert removed == {"stem": 0, "conv1": 4, "conv2": 0, "out": 0}
    x, _ = _data(16, (8, 8, 2))
    small, report = tft.compact(model, padded_constants="offset")
    row = report.row("conv1")
    assert (row.folded, row.kept_other) == (4, 0)  # nonzero constants: all four go into conv2's offset map
    assert (row.after, report.row("conv2").inputs_after) == (4, 4)
    np.testing.assert_allclose(_numpy(small(x)), _numpy(model(x)), atol=1e-5)
    small, report = tft.compact(model)
    row = report.row("conv1")
    assert (row.folded, row.kept_other) == (3, 1)  # three go, the fourth carries them
    assert (row.after, report.row("conv2").inputs_after) == (5, 5)
    np.testing.assert_allclose(_numpy(small(x)), _numpy(model(x)), atol=1e-5)


def test_a_run_restored_from_its_checkpoint_continues_with_the_same_masks(tmp_path):
    from tf_freetickets.experiments.checkpointing import EpochCheckpoint, restore_latest

    x, y = _data(32)

    def train(directory, epochs):
        model = _cnn(0.7)
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        start = restore_latest(model, str(directory))
        update = tft.MaskUpdate(_chase(end_step=16, channel_end_step=16), gradient_data=(x, y), gradient_batch_size=8)
        model.fit(
            x, y, batch_size=8, epochs=epochs, initial_epoch=start, shuffle=False, verbose=0,
            callbacks=[update, EpochCheckpoint(str(directory))],
        )  # fmt: skip
        return model

    straight = train(tmp_path / "straight", 4)
    train(tmp_path / "resumed", 2)
    resumed = train(tmp_path / "resumed", 4)
    assert removed_units(masking.masked_layers(straight)[0]).sum() > 0
    for a, b in zip(masking.masked_layers(straight), masking.masked_layers(resumed)):
        np.testing.assert_array_equal(_numpy(a.kernel_mask), _numpy(b.kernel_mask))
        np.testing.assert_allclose(_numpy(a.kernel_variable), _numpy(b.kernel_variable), rtol=1e-5, atol=1e-6)


def test_config_fields_are_registered_and_checked():
    from tf_freetickets.experiments.config import ConfigError, config_help, fashion_mnist_defaults, validate
    from tf_freetickets.experiments.plan import RunPlan

    config = fashion_mnist_defaults()
    config.sparse.method = "chase"
    validate(config)
    updater = RunPlan.from_config(config).sparsity.make_updater(seed=0)
    schedule = updater.schedule
    assert (type(updater), schedule.channel_sparsity, schedule.channel_begin_fraction, schedule.channel_end_fraction) == (
        Chase, 0.5, 0.0, 0.8125
    )  # fmt: skip
    resolved = schedule.resolved(1000)  # the ramp ends at the last mask update (end_fraction 0.75)
    assert (resolved.channel_begin_step, resolved.channel_end_step, resolved.end_step) == (0, 750, 750)
    assert "config.sparse.chase_channel_sparsity" in config_help(config)
    config.sparse.chase_channel_sparsity = 1.0
    with pytest.raises(ConfigError, match=r"chase_channel_sparsity=1.0 must be a number in \[0, 1\)"):
        validate(config)
    config.sparse.chase_channel_sparsity = 0.5
    config.sparse.chase_end_fraction = 0.0
    with pytest.raises(ConfigError, match="chase_end_fraction=0.0 must be above chase_begin_fraction=0.0"):
        validate(config)
    config.sparse.chase_end_fraction = 0.5
    config.sparse.method = "rigl"  # another method's field away from its default is refused
    with pytest.raises(ConfigError, match="chase_end_fraction"):
        validate(config)


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(DEFAULT_DIR), reason=f"Fashion-MNIST not installed at {DEFAULT_DIR}")
def test_the_binary_trains_chase(tmp_path):
    command = [
        sys.executable, "-m", "tf_freetickets.train", "--config=configs/fashion_mnist_chase.py",
        "--config.train_examples=512", "--config.epochs=1", "--config.verbose=0", "--config.sparse.update_every=1",
        f"--workdir={tmp_path}",
    ]  # fmt: skip
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert 0.89 <= results["results"]["sparsity"] <= 0.91
    model = keras.models.load_model(str(tmp_path / "members" / "member_0.keras"))
    assert sum(int(removed_units(layer).sum()) for layer in masking.masked_layers(model)) > 0


def test_masks_identical_on_both_replicas():
    import tensorflow as tf

    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("needs two logical CPU devices (configured in conftest.py before TF starts)")
    # Reduced through one device, not collectives (as tests/test_srigl.py, for the same reason).
    strategy = tf.distribute.MirroredStrategy(
        [d.name for d in devices[:2]], cross_device_ops=tf.distribute.ReductionToOneDevice()
    )
    with strategy.scope():
        model = _cnn()
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data(64)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    update = tft.MaskUpdate(_chase(update_every=2, end_step=8, channel_end_step=8), gradient_data=data)
    model.fit(data.repeat(2), epochs=1, verbose=0, callbacks=[update])
    assert [step for step, _, _ in update.history] == [2, 4, 6, 8]
    for layer in masking.masked_layers(model):
        masks = [v.numpy() for v in layer.kernel_mask.value.values]
        kernels = [v.numpy() for v in layer.kernel_variable.value.values]
        np.testing.assert_array_equal(masks[0], masks[1])
        np.testing.assert_array_equal(kernels[0], kernels[1])
        assert np.all(kernels[0][masks[0] == 0] == 0)
    assert removed_units(masking.masked_layers(model)[0]).sum() == 4
