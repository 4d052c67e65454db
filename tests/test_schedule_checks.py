"""MaskUpdate refuses what its schedule cannot follow, and warns at the start of fit when the schedule cannot reach its target."""

import keras
import numpy as np
import pytest

import tf_freetickets as tft


def _mlp(seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8,))
    return keras.Model(inputs, keras.layers.Dense(3, name="logits")(keras.layers.Dense(16, name="hidden")(inputs)))


def _data(n=32):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, 8)).astype("float32"), rng.integers(0, 3, n)


def _fit(model, callback, optimizer=None, epochs=2):
    """`epochs` epochs of 4 steps (32 examples, batch 8)."""
    model.compile(optimizer or keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data()
    return model.fit(x, y, batch_size=8, epochs=epochs, verbose=0, callbacks=[callback])


def _set(**kwargs):
    return tft.SET(**{"update_every": 2, "drop_fraction": 0.5, "decay": "constant", "end_fraction": 1.0, "seed": 0, **kwargs})


def test_gradient_accumulation_is_refused_naming_the_option():
    # Keras steps the optimizer every 2nd batch; the schedule counts batches (updates at steps 2, 4, 4, 6, 6, 8).
    update = tft.MaskUpdate(_set())
    optimizer = keras.optimizers.SGD(0.1, gradient_accumulation_steps=2)
    with pytest.raises(ValueError, match=r"^MaskUpdate: the optimizer has gradient_accumulation_steps=2, which mask "):
        _fit(tft.sparsify(_mlp(), 0.5, seed=0), update, optimizer)
    assert update.history == []


def _schedule_warnings(record):
    return [str(w.message) for w in record if str(w.message).startswith("MaskUpdate:")]


def test_an_update_interval_longer_than_the_run_is_warned_about_once():
    update = tft.MaskUpdate(_set(update_every=9))  # 2 epochs x 4 steps: no update at step 9
    with pytest.warns(UserWarning) as record:
        _fit(tft.sparsify(_mlp(), 0.5, seed=0), update)
    assert _schedule_warnings(record) == [
        "MaskUpdate: no mask update falls within the run's 8 steps (update_every=9, updates from step 0 to 8), so the "
        "masks stay as they start; use update_every <= 8."
    ]
    assert update.history == []


def test_a_schedule_that_updates_in_the_run_is_not_warned_about(recwarn):
    update = tft.MaskUpdate(_set(update_every=8))
    _fit(tft.sparsify(_mlp(), 0.5, seed=0), update)
    assert _schedule_warnings(recwarn) == [] and [step for step, _, _ in update.history] == [8]


def test_a_pruning_schedule_ending_after_the_run_names_the_sparsity_it_ends_at():
    schedule = tft.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=16, power=1, frequency=2)
    model = tft.sparsify(_mlp(), 0.0, distribution="uniform", seed=0)
    with pytest.warns(UserWarning) as record:
        _fit(model, tft.MaskUpdate(tft.GradualMagnitudePruning(schedule)))
    assert _schedule_warnings(record) == [
        "MaskUpdate: the pruning schedule runs from step 0 to 16 but the run has 8 steps: it ends at sparsity 0.4, "
        "below its final sparsity 0.8; end the schedule within the run."
    ]
    assert tft.global_sparsity(model) == pytest.approx(0.4, abs=0.01)


class TwoLayerNet(keras.Model):
    def __init__(self):
        super().__init__()
        self.hidden = tft.masked_class_for(keras.layers.Dense)(16, name="hidden")
        self.out = tft.masked_class_for(keras.layers.Dense)(3, name="out")

    def call(self, x):
        return self.out(self.hidden(x))


def test_a_subclassed_model_without_init_masks_is_refused_at_fit():
    model = TwoLayerNet()
    model(np.zeros((1, 8), "float32"))  # built, masks all ones: init_masks skipped
    with pytest.raises(ValueError, match=r"^MaskUpdate: the masks of model .* were never initialised \(all ones\)"):
        _fit(model, tft.MaskUpdate(_set()))
    tft.init_masks(model, 0.5, seed=0)
    _fit(model, tft.MaskUpdate(_set()))
    assert tft.global_sparsity(model) == pytest.approx(0.5, abs=0.01)
