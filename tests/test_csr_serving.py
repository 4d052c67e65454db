"""CSRPredictor: a Dense-layer ticket or ensemble served as CSR products gives the Keras outputs."""

import keras
import numpy as np
import pytest

import tf_freetickets as tft
from tf_freetickets.deploy.csr import CSRPredictor


def _mlp(seed, softmax=False):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 1))
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(40, activation="relu")(h)
    h = keras.layers.Dropout(0.2)(h)
    h = keras.layers.Dense(24)(h)
    h = keras.layers.ReLU()(h)
    outputs = keras.layers.Dense(5, activation="softmax" if softmax else None)(h)
    return keras.Model(inputs, outputs)


def _ticket(seed, sparsity=0.9, softmax=False):
    return tft.sparsify(_mlp(seed, softmax), sparsity=sparsity, distribution="uniform", seed=seed)


def _inputs(n=7, seed=1):
    return np.random.default_rng(seed).standard_normal((n, 6, 6, 1)).astype(np.float32)


def test_ticket_outputs_equal_keras_and_store_only_the_mask_nonzeros():
    ticket = _ticket(0)
    predictor = CSRPredictor.from_model(ticket)
    x = _inputs()
    np.testing.assert_allclose(predictor.predict(x), keras.ops.convert_to_numpy(ticket(x)), atol=1e-5)
    np.testing.assert_allclose(predictor.predict(x[:1]), keras.ops.convert_to_numpy(ticket(x[:1])), atol=1e-5)
    kept = sum(int(np.sum(keras.ops.convert_to_numpy(layer.kernel_mask))) for layer in tft.sparse.masked_layers(ticket))
    assert predictor.nonzeros == kept
    assert predictor.dense_size == 36 * 40 + 40 * 24 + 24 * 5


def test_hand_computed_two_layer_chain():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, activation="relu"), keras.layers.Dense(1)])
    model.layers[0].set_weights([np.array([[1.0, 0.0], [0.0, -2.0]], np.float32), np.array([0.5, 1.0], np.float32)])
    model.layers[1].set_weights([np.array([[3.0], [1.0]], np.float32), np.array([-1.0], np.float32)])
    # x = (1, 2): first layer relu(1 + 0.5, -4 + 1) = (1.5, 0); output 3 * 1.5 + 0 - 1 = 3.5
    predictor = CSRPredictor.from_model(model)
    np.testing.assert_allclose(predictor.predict(np.array([[1.0, 2.0]])), [[3.5]])
    assert predictor.nonzeros == 4


def test_ensemble_outputs_equal_ensemble_model_and_count_every_member():
    tickets = [_ticket(seed) for seed in range(3)]
    ensemble = tft.EnsembleModel(tickets)
    predictor = CSRPredictor.from_ensemble(ensemble)
    x = _inputs()
    np.testing.assert_allclose(predictor.predict(x), keras.ops.convert_to_numpy(ensemble(x)), atol=1e-6)
    assert predictor.num_members == 3
    assert predictor.nonzeros == sum(CSRPredictor.from_model(t).nonzeros for t in tickets)
    assert predictor.dense_size == 3 * CSRPredictor.from_model(tickets[0]).dense_size


def test_ensemble_of_softmax_members_averages_their_outputs():
    tickets = [_ticket(seed, softmax=True) for seed in range(2)]
    ensemble = tft.EnsembleModel(tickets, from_logits=False)
    predictor = CSRPredictor.from_ensemble(ensemble)
    x = _inputs()
    expected = np.mean([keras.ops.convert_to_numpy(t(x)) for t in tickets], axis=0)
    np.testing.assert_allclose(predictor.predict(x), expected, atol=1e-6)


def test_dense_format_is_the_same_chain():
    ensemble = tft.EnsembleModel([_ticket(seed) for seed in range(2)])
    x = _inputs()
    sparse = CSRPredictor.from_ensemble(ensemble).predict(x)
    dense = CSRPredictor.from_ensemble(ensemble, matrix_format="dense").predict(x)
    np.testing.assert_allclose(dense, sparse, atol=1e-6)


def test_refuses_layers_outside_the_chain_by_name():
    inputs = keras.Input((6, 6, 1))
    h = keras.layers.Conv2D(2, 3, name="conv")(inputs)
    outputs = keras.layers.Dense(3)(keras.layers.Flatten()(h))
    with pytest.raises(ValueError, match="'conv' \\(Conv2D\\)"):
        CSRPredictor.from_model(keras.Model(inputs, outputs))


def test_refuses_branches():
    inputs = keras.Input((4,))
    a = keras.layers.Dense(3, name="a")(inputs)
    b = keras.layers.Dense(3, name="b")(inputs)
    outputs = keras.layers.Dense(2)(keras.layers.Add()([a, b]))
    with pytest.raises(ValueError, match="chain"):
        CSRPredictor.from_model(keras.Model(inputs, outputs))


def test_refuses_members_of_different_architectures():
    other = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(), keras.layers.Dense(5)])
    with pytest.raises(ValueError, match="member 1"):
        CSRPredictor.from_ensemble([_ticket(0), other])


def test_bad_format_and_bad_input_shape_are_named():
    with pytest.raises(ValueError, match="'coo'"):
        CSRPredictor.from_model(_ticket(0), matrix_format="coo")
    predictor = CSRPredictor.from_model(_ticket(0))
    with pytest.raises(ValueError, match=r"\(2, 36\)"):
        predictor.predict(np.zeros((2, 36)))


@pytest.mark.parametrize("matrix_format", ["csr", "dense"])
def test_save_and_load_keep_the_outputs(tmp_path, matrix_format):
    ensemble = tft.EnsembleModel([_ticket(seed) for seed in range(2)])
    predictor = CSRPredictor.from_ensemble(ensemble, matrix_format=matrix_format)
    path = predictor.save(tmp_path / "ensemble")
    assert path.endswith(".npz")
    loaded = CSRPredictor.load(path)
    x = _inputs()
    np.testing.assert_array_equal(loaded.predict(x), predictor.predict(x))
    assert (loaded.nonzeros, loaded.dense_size, loaded.num_members) == (predictor.nonzeros, predictor.dense_size, 2)


def test_load_names_a_missing_or_foreign_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nothing.npz"):
        CSRPredictor.load(str(tmp_path / "nothing.npz"))
    np.savez(tmp_path / "other.npz", weights=np.zeros(3))
    with pytest.raises(ValueError, match="not a CSRPredictor file"):
        CSRPredictor.load(str(tmp_path / "other.npz"))
