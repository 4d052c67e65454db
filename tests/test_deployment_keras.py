"""Deployment of sparse Keras models: `strip`, EnsembleModel `.keras` round trip, from_logits checks."""

import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import tf_freetickets as tft
from tf_freetickets.sparse import layers as masking


def conv_attention_model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(16, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.DepthwiseConv2D(3, name="depthwise")(x)
    x = keras.layers.Reshape((16, 16))(x)
    x = keras.layers.MultiHeadAttention(2, 8, name="mha")(x, x)
    x = keras.layers.GlobalAveragePooling1D()(x)
    return keras.Model(inputs, keras.layers.Dense(5, name="logits")(x))


def test_strip_folds_masks_into_a_plain_model_of_dense_size_that_loads_without_the_library(tmp_path):
    dense = conv_attention_model()
    sparse = tft.sparsify(dense, 0.9, seed=0)
    plain = tft.strip(sparse)
    layers = list(plain._flatten_layers(include_self=False))
    assert not any(type(layer).__module__.startswith("tf_freetickets") for layer in layers)
    assert not any("mask" in v.path for v in plain.weights)
    assert len(plain.weights) == len(dense.weights)
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 3)).astype("float32")
    want = keras.ops.convert_to_numpy(sparse(x))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(plain(x)), want)
    kernels = {v.path: v.numpy() for v in plain.weights}
    masks = tft.sparse.report.model_masks(sparse)
    assert sorted(masks) == ["conv", "depthwise", "logits", "mha/attention_output", "mha/key", "mha/query", "mha/value"]
    for name, mask in masks.items():
        assert np.count_nonzero(kernels[f"{name}/kernel"][~mask]) == 0, name
    paths = {kind: str(tmp_path / f"{kind}.keras") for kind in ("dense", "sparse", "plain")}
    for kind, model in (("dense", dense), ("sparse", sparse), ("plain", plain)):
        model.save(paths[kind])
    sizes = {kind: os.path.getsize(path) for kind, path in paths.items()}
    assert sizes["plain"] <= 1.02 * sizes["dense"] < sizes["sparse"]
    np.save(tmp_path / "x.npy", x)
    child = (
        "import sys, keras, numpy as np\n"
        f"m = keras.models.load_model({paths['plain']!r})\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, keras.ops.convert_to_numpy(m(np.load({str(tmp_path / 'x.npy')!r}))))\n"
        "assert not any(name.startswith('tf_freetickets') for name in sys.modules)\n"
    )
    env = dict(os.environ, PYTHONPATH="", TF_CPP_MIN_LOG_LEVEL="3")
    subprocess.run([sys.executable, "-c", child], check=True, env=env, cwd=tmp_path, timeout=300)
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), want)


class Twin(keras.Model):
    def __init__(self, dense_class, **kwargs):
        super().__init__(**kwargs)
        self.hidden = dense_class(6, activation="relu")
        self.out = dense_class(3)

    def call(self, x):
        return self.out(self.hidden(x))


def test_subclassed_models_strip_through_folded_weights():
    keras.utils.set_random_seed(0)
    sparse = Twin(tft.masked_class_for(keras.layers.Dense))
    x = np.random.default_rng(0).normal(size=(2, 4)).astype("float32")
    sparse(x)
    tft.init_masks(sparse, 0.5, distribution="uniform", seed=0)
    with pytest.raises(TypeError, match="folded_weights"):
        tft.strip(sparse)
    plain = Twin(keras.layers.Dense)
    plain(x)
    plain.set_weights(tft.sparse.folded_weights(sparse))
    np.testing.assert_array_equal(plain(x), sparse(x))
    assert np.count_nonzero(plain.hidden.kernel.numpy()) <= 12


def member(seed, softmax=False):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8,))
    x = keras.layers.Dense(16, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(4, activation="softmax" if softmax else None)(x))


@pytest.mark.parametrize("softmax", [False, True])
def test_ensemble_of_sparse_members_round_trips_through_keras_file(tmp_path, softmax):
    members = [tft.sparsify(member(k, softmax), 0.5, seed=k) for k in range(2)]
    ensemble = tft.EnsembleModel(members, from_logits=not softmax)
    x = np.random.default_rng(0).normal(size=(3, 8)).astype("float32")
    ensemble.save(tmp_path / "ensemble.keras")
    loaded = keras.models.load_model(tmp_path / "ensemble.keras")
    assert isinstance(loaded, tft.EnsembleModel) and loaded.from_logits is (not softmax)
    np.testing.assert_array_equal(loaded(x), ensemble(x))
    for original, restored in zip(members, loaded.members):
        for a, b in zip(masking.masked_layers(original), masking.masked_layers(restored)):
            np.testing.assert_array_equal(a.kernel_mask.numpy(), b.kernel_mask.numpy())


def test_ensemble_rejects_softmax_members_with_from_logits_and_logit_members_without():
    with pytest.raises(ValueError, match=r"member 1 .*ends in a softmax.*from_logits=False"):
        tft.EnsembleModel([member(0), member(1, softmax=True)])
    with pytest.raises(ValueError, match=r"member 0 .*linear layer.*from_logits=True"):
        tft.EnsembleModel([member(0)], from_logits=False)
    probabilities = tft.EnsembleModel([member(0, softmax=True)], from_logits=False)
    x = np.ones((2, 8), "float32")
    np.testing.assert_allclose(probabilities(x), probabilities.members[0](x), rtol=1e-6)


def test_stripped_attention_model_converts_to_sparse_tflite_with_the_same_outputs(tmp_path):
    from tf_freetickets.deploy import tflite

    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16))
    x = keras.layers.GlobalAveragePooling1D()(keras.layers.MultiHeadAttention(2, 8, name="mha")(inputs, inputs))
    sparse = tft.sparsify(keras.Model(inputs, keras.layers.Dense(5)(x)), 0.9, seed=0)
    path = str(tmp_path / "plain.tflite")
    tflite.export_tflite(tft.strip(sparse), path, sparse=True)
    x = np.random.default_rng(0).random((2, 16, 16)).astype("float32")
    np.testing.assert_allclose(tflite.tflite_predict(path, x), keras.ops.convert_to_numpy(sparse(x)), atol=1e-6)
    assert len(tflite.sparse_tensors(path)) == 5  # the four projections and the Dense kernel
