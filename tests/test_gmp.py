"""GradualMagnitudePruning: exact scheduled counts, masks only shrink, zero slots, resume, replicas."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_freetickets as tft
from tf_freetickets.sparse import layers as masking
from tf_freetickets.sparse import optimizer_slots

# The library's own step convention (the method="gmp" configs): these tests pin it; the tfmot
# convention (the default) is tested in tests/test_gmp_tfmot_steps.py.
AFTER = "after_step"


def _dense_model(sparsity=0.0, **sparsify_kwargs):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu", name="fc")(x)
    model = keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))
    return tft.sparsify(model, sparsity, distribution="uniform", seed=1, **sparsify_kwargs)


def _compile(model):
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _data(n=64, batch=8):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 4, n)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def _sizes(model):
    return [int(np.prod(layer.kernel_mask.shape)) for layer in masking.masked_layers(model)]


def _counts(model):
    return [int(layer.kernel_mask.numpy().sum()) for layer in masking.masked_layers(model)]


class _Recorder(keras.callbacks.Callback):
    """Masks after every batch (after MaskUpdate has run at that step)."""

    def __init__(self):
        super().__init__()
        self.masks = {}

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        self.masks[step] = [layer.kernel_mask.numpy().copy() for layer in masking.masked_layers(self.model)]


def _polynomial(step, initial, final, begin, end, power=3):
    p = min(1.0, max(0.0, (step - begin) / (end - begin)))
    return final + (initial - final) * (1 - p) ** power


def test_reaches_exact_uniform_counts_on_schedule_and_keeps_them():
    model = _compile(_dense_model())
    sizes = _sizes(model)
    assert _counts(model) == sizes  # sparsity 0: a dense start
    schedule = tft.PolynomialDecay(0.0, 0.8, begin_step=4, end_step=40, frequency=4)
    recorder = _Recorder()
    update = tft.MaskUpdate(tft.GradualMagnitudePruning(schedule, step_convention=AFTER))
    model.fit(_data().repeat(), steps_per_epoch=8, epochs=8, verbose=0, callbacks=[update, recorder])  # 64 steps
    assert [step for step, _, _ in update.history] == list(range(4, 41, 4))
    last = None
    for step in range(1, 65):
        if update.updater.schedule.is_update_step(step):
            last = step
        expected_sparsity = 0.0 if last is None else _polynomial(last, 0.0, 0.8, 4, 40)
        expected = [size - math.floor(expected_sparsity * size + 1e-9) for size in sizes]
        counts = [int(m.sum()) for m in recorder.masks[step]]
        assert counts == expected, step
        if step > 1:  # masks only shrink: every active weight was active before
            for before, after in zip(recorder.masks[step - 1], recorder.masks[step]):
                assert np.all(after <= before)
    # At end_step and after: exactly size - floor(0.8 * size) per layer.
    assert _counts(model) == [size - math.floor(0.8 * size) for size in sizes] == [11, 692, 13]
    for layer in masking.masked_layers(model):
        pruned = layer.kernel_mask.numpy() == 0
        assert np.all(layer.kernel_variable.numpy()[pruned] == 0)
        slots = optimizer_slots.slots_for(model.optimizer, layer.kernel_variable)
        assert slots, "SGD with momentum has a momentum slot"
        for slot in slots:
            assert np.all(slot.numpy()[pruned] == 0)
    assert all(changed == [0, 0, 0] for _, _, changed in update.history)  # nothing grows


def test_compiled_counts_equal_the_host_formula_at_every_step():
    model = _compile(_dense_model())
    schedule = tft.PolynomialDecay(0.05, 0.93, begin_step=3, end_step=83, power=3, frequency=1)
    updater = tft.GradualMagnitudePruning(schedule, step_convention=AFTER)
    updater.bind(masking.masked_layers(model))
    for index, layer in enumerate(masking.masked_layers(model)):
        mask, weights = layer.kernel_mask.numpy(), layer.kernel_variable.numpy()
        for step in range(0, 90):
            new_mask = updater.pruned_mask(mask, weights, index, tf.constant(step, tf.int64)).numpy()
            assert int(new_mask.sum()) == updater.target_active_counts(step)[index], (layer.name, step)
            kept = np.abs(weights[new_mask == 1])
            dropped = np.abs(weights[new_mask == 0])
            if dropped.size and kept.size:
                assert dropped.max() <= kept.min()  # magnitude pruning


def test_end_step_off_the_frequency_grid():
    sizes = None
    finals = {}
    for prune_at_end in (True, False):
        model = _compile(_dense_model())
        sizes = _sizes(model)
        schedule = tft.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=25, frequency=10)
        update = tft.MaskUpdate(tft.GradualMagnitudePruning(schedule, prune_at_end_step=prune_at_end, step_convention=AFTER))
        model.fit(_data().repeat(), steps_per_epoch=30, epochs=1, verbose=0, callbacks=[update])
        finals[prune_at_end] = (_counts(model), [s for s, _, _ in update.history])
    assert finals[True] == ([size - math.floor(0.8 * size) for size in sizes], [10, 20, 25])
    at_20 = _polynomial(20, 0.0, 0.8, 0, 25)  # tfmot's behaviour: the last grid step before end_step
    assert finals[False] == ([size - math.floor(at_20 * size) for size in sizes], [10, 20])


def test_constant_sparsity_prunes_before_the_first_batch():
    model = _compile(_dense_model())
    recorder = _Recorder()
    schedule = tft.ConstantSparsity(0.5, begin_step=0, frequency=1000)
    update = tft.MaskUpdate(tft.GradualMagnitudePruning(schedule, step_convention=AFTER))
    model.fit(_data(), epochs=1, verbose=0, callbacks=[update, recorder])
    expected = [size - math.floor(0.5 * size) for size in _sizes(model)]
    assert [int(m.sum()) for m in recorder.masks[1]] == expected
    assert update.history == []  # the step-0 pruning is the only one in this short run


def test_erk_targets_with_per_layer_override_to_the_weight():
    model = _compile(_dense_model())
    shapes = [(layer.name, tuple(layer.kernel_mask.shape)) for layer in masking.masked_layers(model)]
    override = {"fc": 0.5}
    updater = tft.GradualMagnitudePruning(
        tft.PolynomialDecay(0.0, 0.9, 0, 20, frequency=5), distribution="erk", layer_sparsity=override
    )
    model.fit(_data().repeat(), steps_per_epoch=24, epochs=1, verbose=0, callbacks=[tft.MaskUpdate(updater)])
    counts = dict(zip([n for n, _ in shapes], _counts(model)))
    sizes = {name: int(np.prod(shape)) for name, shape in shapes}
    assert counts["fc"] == sizes["fc"] - math.floor(0.5 * sizes["fc"]) == 1728
    rest = tft.layer_densities([s for s in shapes if s[0] != "fc"], 0.9, "erk")
    for name, density in rest.items():
        assert counts[name] == sizes[name] - math.floor(round((1 - density) * sizes[name], 6)), name
    assert updater.layer_final_sparsity["fc"] == 0.5


def test_resume_from_a_saved_model_continues_exactly(tmp_path):
    schedule = tft.PolynomialDecay(0.0, 0.85, begin_step=2, end_step=30, frequency=2)

    def fit(model, epochs, initial_epoch=0):
        update = tft.MaskUpdate(tft.GradualMagnitudePruning(schedule))
        model.fit(_data(), epochs=epochs, initial_epoch=initial_epoch, verbose=0, callbacks=[update], shuffle=False)

    straight = _compile(_dense_model())
    fit(straight, 5)
    interrupted = _compile(_dense_model())
    fit(interrupted, 2)
    path = str(tmp_path / "mid.keras")
    interrupted.save(path)
    resumed = keras.models.load_model(path)
    assert int(resumed.optimizer.iterations.numpy()) == 16
    fit(resumed, 5, initial_epoch=2)
    for a, b in zip(masking.masked_layers(straight), masking.masked_layers(resumed)):
        np.testing.assert_array_equal(a.kernel_mask.numpy(), b.kernel_mask.numpy())
        np.testing.assert_allclose(a.kernel_variable.numpy(), b.kernel_variable.numpy(), rtol=1e-6, atol=1e-7)


def test_masks_that_cannot_follow_the_schedule_are_refused():
    model = _compile(_dense_model(sparsity=0.9))  # random masks at 0.9
    update = tft.MaskUpdate(tft.GradualMagnitudePruning(tft.PolynomialDecay(0.5, 0.95, 0, 10, frequency=5)))
    with pytest.raises(ValueError, match="masks cannot grow"):
        model.fit(_data(), epochs=1, verbose=0, callbacks=[update])


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(schedule="poly"), "PruningSchedule"),
        (dict(schedule=tft.PolynomialDecay(0.9, 0.5, 0, 10)), "only removes weights"),
        (dict(schedule=tft.ConstantSparsity(0.5, 0), distribution="random"), "distribution"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tft.GradualMagnitudePruning(**kwargs)


def test_unknown_override_layer_is_named():
    model = _compile(_dense_model())
    updater = tft.GradualMagnitudePruning(tft.ConstantSparsity(0.5, 0), layer_sparsity={"nope": 0.3})
    with pytest.raises(ValueError, match="nope"):
        updater.attach(model)


def test_schedule_from_the_run_length():
    model = _compile(_dense_model())
    updater = tft.GradualMagnitudePruning(lambda total: tft.PolynomialDecay(0.0, 0.7, 0, total // 2, frequency=2))
    update = tft.MaskUpdate(updater)
    model.fit(_data(), epochs=2, verbose=0, callbacks=[update])  # 16 steps: prune up to step 8
    assert updater.pruning_schedule.end_step == 8
    assert _counts(model) == [size - math.floor(0.7 * size) for size in _sizes(model)]


@pytest.mark.parametrize("distribution", ["uniform", "global"])
def test_masks_identical_on_every_replica(distribution):
    devices = tf.config.list_logical_devices("CPU")
    if len(devices) < 2:
        pytest.skip("needs two logical CPU devices (configured in conftest.py before TF starts)")
    strategy = tf.distribute.MirroredStrategy([d.name for d in devices[:2]])
    with strategy.scope():
        model = _compile(_dense_model())
    schedule = tft.PolynomialDecay(0.0, 0.75, 0, 6, frequency=2)
    update = tft.MaskUpdate(tft.GradualMagnitudePruning(schedule, distribution=distribution))
    model.fit(_data(n=64, batch=16).repeat(2), epochs=1, verbose=0, callbacks=[update])
    sizes = _sizes(model)
    assert sum(_counts(model)) == sum(sizes) - math.floor(0.75 * sum(sizes)) == 894
    for layer, size in zip(masking.masked_layers(model), sizes):
        masks = [v.numpy() for v in layer.kernel_mask.value.values]
        kernels = [v.numpy() for v in layer.kernel_variable.value.values]
        np.testing.assert_array_equal(masks[0], masks[1])
        np.testing.assert_array_equal(kernels[0], kernels[1])
        if distribution == "uniform":
            assert int(masks[0].sum()) == size - math.floor(0.75 * size)
        assert np.all(kernels[0][masks[0] == 0] == 0)


def test_a_drop_fraction_override_is_refused():
    model = _compile(_dense_model())
    updater = tft.GradualMagnitudePruning(tft.ConstantSparsity(0.5, 0))
    updater.attach(model)
    engine = tft.sparse.MaskEngine(model, updater)
    with pytest.raises(ValueError, match="prunes on schedule"):
        engine.update(5, drop_fraction=0.8)  # EDST's global exploration would regrow; GMP never does
    assert engine.update(100)["changed"] == [0, 0, 0]
    assert _counts(model) == [size - math.floor(0.5 * size) for size in _sizes(model)]


def test_global_magnitude_selection_over_all_layers():
    model = _compile(_dense_model())
    layers = masking.masked_layers(model)
    updater = tft.GradualMagnitudePruning(tft.PolynomialDecay(0.0, 0.8, 0, 20, frequency=5), distribution="global")
    updater.bind(layers)
    weights = [layer.kernel_variable.numpy() for layer in layers]
    masks = [updater.pruned_mask(layer.kernel_mask.numpy(), w, i, tf.constant(20, tf.int64)).numpy() for i, (layer, w) in
             enumerate(zip(layers, weights))]  # fmt: skip
    total = sum(_sizes(model))
    assert sum(int(m.sum()) for m in masks) == total - math.floor(0.8 * total) == updater.target_total_active(20)
    kept = np.concatenate([np.abs(w[m == 1]) for w, m in zip(weights, masks)])
    dropped = np.concatenate([np.abs(w[m == 0]) for w, m in zip(weights, masks)])
    assert dropped.max() <= kept.min()  # one threshold across layers
    assert len({round(float(m.mean()), 3) for m in masks}) > 1  # layers end at different densities

    update = tft.MaskUpdate(updater)
    model.fit(_data().repeat(), steps_per_epoch=24, epochs=1, verbose=0, callbacks=[update])
    assert sum(_counts(model)) == total - math.floor(0.8 * total)
    for layer in masking.masked_layers(model):
        assert np.all(layer.kernel_variable.numpy()[layer.kernel_mask.numpy() == 0] == 0)
    with pytest.raises(ValueError, match="recorded masks"):
        tft.metrics.gmp_training_flops(updater, model, total_steps=24, batch_size=8)
    with pytest.raises(ValueError, match="layer_sparsity"):
        tft.GradualMagnitudePruning(tft.ConstantSparsity(0.5, 0), distribution="global", layer_sparsity={"fc": 0.1})


def test_adam_moments_of_pruned_weights_stay_zero():
    model = _dense_model()
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    update = tft.MaskUpdate(tft.GradualMagnitudePruning(tft.PolynomialDecay(0.0, 0.6, 2, 10, frequency=4)))
    model.fit(_data().repeat(), steps_per_epoch=16, epochs=1, verbose=0, callbacks=[update])
    for layer in masking.masked_layers(model):
        pruned = layer.kernel_mask.numpy() == 0
        slots = optimizer_slots.slots_for(model.optimizer, layer.kernel_variable)
        assert len(slots) == 2  # first and second moments
        for slot in slots:
            assert np.all(slot.numpy()[pruned] == 0)
            assert np.any(slot.numpy()[~pruned] != 0)


def test_a_frozen_layer_keeps_its_mask_and_the_others_get_their_own_targets():
    model = _dense_model()
    model.get_layer("conv").trainable = False  # the first masked layer: a target bound by position would shift
    _compile(model)
    frozen_mask = model.get_layer("conv").kernel_mask.numpy().copy()
    schedule = tft.PolynomialDecay(0.0, 0.75, begin_step=2, end_step=16, frequency=2)
    model.fit(_data().repeat(), steps_per_epoch=8, epochs=3, verbose=0,
              callbacks=[tft.MaskUpdate(tft.GradualMagnitudePruning(schedule))])  # fmt: skip
    np.testing.assert_array_equal(model.get_layer("conv").kernel_mask.numpy(), frozen_mask)
    for name in ("fc", "logits"):
        size = int(np.prod(model.get_layer(name).kernel_mask.shape))
        assert int(model.get_layer(name).kernel_mask.numpy().sum()) == size - math.floor(0.75 * size), name
