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
