"""EnsembleModel: mean of member probabilities, uncertainty by hand, spec checks."""

import keras
import numpy as np
import pytest

import tf_freetickets as tft


def constant_member(probabilities, name, input_dim=3):
    """A model whose logits are log(probabilities) for every input (zero kernel)."""
    inputs = keras.Input((input_dim,))
    layer = keras.layers.Dense(len(probabilities), kernel_initializer="zeros", name="out")
    model = keras.Model(inputs, layer(inputs), name=name)
    layer.bias.assign(np.log(np.asarray(probabilities, "float32")))
    return model


def test_mean_probabilities_and_uncertainty_by_hand():
    a = constant_member([0.7, 0.2, 0.1], "a")
    b = constant_member([0.1, 0.2, 0.7], "b")
    ensemble = tft.EnsembleModel([a, b])
    x = np.zeros((2, 3), "float32")
    np.testing.assert_allclose(ensemble(x), [[0.4, 0.2, 0.4]] * 2, rtol=1e-6)
    members = ensemble.member_probabilities(x)
    assert tuple(members.shape) == (2, 2, 3)
    out = ensemble.uncertainty(x)
    # H(mean) = -(2 * 0.4 ln 0.4 + 0.2 ln 0.2) = 1.0549201679861442
    # H(a) = H(b) = -(0.7 ln 0.7 + 0.2 ln 0.2 + 0.1 ln 0.1) = 0.8018185525433372
    np.testing.assert_allclose(out["predictive_entropy"], [1.0549201679861442] * 2, rtol=1e-5)
    np.testing.assert_allclose(out["mutual_information"], [1.0549201679861442 - 0.8018185525433372] * 2, rtol=1e-4)


def test_agreeing_members_have_zero_mutual_information():
    ensemble = tft.EnsembleModel([constant_member([0.5, 0.3, 0.2], n) for n in "abc"])
    out = ensemble.uncertainty(np.ones((4, 3), "float32"))
    np.testing.assert_allclose(out["mutual_information"], 0.0, atol=1e-6)


def test_probability_members_and_evaluate():
    inputs = keras.Input((3,))
    soft = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    ensemble = tft.EnsembleModel([soft, soft], from_logits=False)
    x = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")
    np.testing.assert_allclose(ensemble(x), soft(x), rtol=1e-6)
    ensemble.compile(loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    loss, accuracy = ensemble.evaluate(x, np.zeros(5, "int64"), verbose=0)
    assert 0.0 <= accuracy <= 1.0 and loss > 0


def test_mismatched_members_are_named():
    a = constant_member([0.5, 0.5], "a")
    wrong_input = constant_member([0.5, 0.5], "wide", input_dim=4)
    wrong_output = constant_member([0.3, 0.3, 0.4], "three")
    with pytest.raises(ValueError, match=r"member 1 \('wide'\) has input \(4,\)"):
        tft.EnsembleModel([a, wrong_input])
    with pytest.raises(ValueError, match=r"member 2 \('three'\).*output \(3,\)"):
        tft.EnsembleModel([a, a, wrong_output])
    with pytest.raises(ValueError, match="at least one member"):
        tft.EnsembleModel([])


def test_from_saved_models_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        tft.EnsembleModel.from_saved_models(str(tmp_path / "missing"))
    with pytest.raises(FileNotFoundError, match="No \\*.keras files or SavedModel folders"):
        tft.EnsembleModel.from_saved_models(str(tmp_path))
    a = constant_member([0.5, 0.5], "a")
    b = constant_member([0.2, 0.3, 0.5], "b")
    a.save(tmp_path / "m_1.keras")
    b.save(tmp_path / "m_2.keras")
    with pytest.raises(ValueError, match="m_2.keras"):
        tft.EnsembleModel.from_saved_models(str(tmp_path))


def test_member_order_is_natural(tmp_path):
    for index in (10, 2, 1):
        constant_member([0.5, 0.5], f"m{index}").save(tmp_path / f"ticket_{index}.keras")
    ensemble = tft.EnsembleModel.from_saved_models(str(tmp_path))
    assert [m.name for m in ensemble.members] == ["m1", "m2", "m10"]
