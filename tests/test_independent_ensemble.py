"""Independent-run ensembles: DST ensemble and dense deep ensemble through one driver."""

import os

import keras
import numpy as np
import pytest

import tf_freetickets as tft
from tf_freetickets.sparse.report import mask_overlap


def _data():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 10)).astype("float32")
    return x, (x[:, :3].argmax(1)).astype("int64")


def _make(sparse):
    def make_model(seed):
        inputs = keras.Input((10,))
        x = keras.layers.Dense(32, activation="relu", name="fc")(inputs)
        model = keras.Model(inputs, keras.layers.Dense(3, name="logits")(x))
        if sparse:
            model = tft.sparsify(model, 0.8, seed=seed)
        model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model

    return make_model


def test_dst_ensemble_members_differ_and_are_exported(tmp_path):
    x, y = _data()
    members = tft.train_independent_ensemble(
        _make(sparse=True), x, epochs=2, num_members=3, seeds=[5, 6, 7], y=y, batch_size=16, verbose=0,
        make_callbacks=lambda seed: [tft.MaskUpdate(tft.SET(update_every=2, end_step=8, seed=seed))],
        export_dir=str(tmp_path),
    )  # fmt: skip
    assert len(members) == 3
    assert sorted(os.listdir(tmp_path)) == [f"member_{i}{ext}" for i in range(3) for ext in ("", ".keras")]
    for i in range(3):
        for j in range(i + 1, 3):
            assert mask_overlap(members[i], members[j]) < 0.6  # different random masks
    for member in members:
        assert tft.global_sparsity(member) == pytest.approx(0.8, abs=0.01)
    ensemble = tft.EnsembleModel.from_saved_models(str(tmp_path))
    expected = np.mean([keras.ops.softmax(m(x)).numpy() for m in members], axis=0)
    np.testing.assert_allclose(ensemble(x), expected, rtol=1e-5, atol=1e-6)


def test_dense_ensemble_same_seed_same_member():
    x, y = _data()
    a, b = tft.train_independent_ensemble(_make(sparse=False), x, epochs=1, num_members=2, seeds=[3, 3], y=y, verbose=0)
    for wa, wb in zip(a.get_weights(), b.get_weights()):
        np.testing.assert_array_equal(wa, wb)


def test_seed_count_must_match():
    with pytest.raises(ValueError, match=r"Got 2 seeds \[1, 2\] for num_members=3"):
        tft.train_independent_ensemble(_make(False), None, epochs=1, num_members=3, seeds=[1, 2])
