"""Per-layer control of sparsify: opt-in layers and per-layer sparsity on top of a distribution."""

import math
import zipfile

import keras
import numpy as np
import pytest

import tf_freetickets as tft
from tf_freetickets.sparse import layers as masking
from tf_freetickets.sparse.layer_targets import layer_sparsities


def _model():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(6, 3, activation="relu", name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(16, activation="relu", name="fc")(x)
    return keras.Model(inputs, keras.layers.Dense(4, name="logits")(x))


def _counts(model):
    return {layer.name: int(layer.kernel_mask.numpy().sum()) for layer in masking.masked_layers(model)}


def test_dict_override_is_exact_and_the_rest_keep_the_global_sparsity():
    sparse = tft.sparsify(_model(), 0.9, distribution="uniform", layer_sparsity={"conv": 0.5}, seed=0)
    # conv 54 weights at 0.5, fc 3456 and logits 64 at 0.9 (floor of the pruned count, RigL's rule).
    assert _counts(sparse) == {"conv": 27, "fc": 3456 - 3110, "logits": 64 - 57}


def test_callable_override_with_erk_solves_erk_over_the_other_layers():
    shapes = [("conv", (3, 3, 1, 6)), ("fc", (216, 16)), ("logits", (16, 4))]
    sparse = tft.sparsify(_model(), 0.8, distribution="erk", layer_sparsity=lambda name, shape: 0.0 if len(shape) == 4 else None)
    counts = _counts(sparse)
    assert counts["conv"] == 54  # masked but fully dense
    rest = tft.layer_densities(shapes[1:], 0.8, "erk")
    for name, size in (("fc", 3456), ("logits", 64)):
        assert counts[name] == size - math.floor(round((1 - rest[name]) * size, 6))
    # The layers without an override keep 20% of their own weights together.
    assert counts["fc"] + counts["logits"] == pytest.approx(0.2 * (3456 + 64), abs=2)


def test_include_masks_only_the_named_layers():
    sparse = tft.sparsify(_model(), 0.75, distribution="uniform", include=["fc"], seed=0)
    assert [layer.name for layer in masking.masked_layers(sparse)] == ["fc"]
    assert _counts(sparse) == {"fc": 3456 - 2592}
    assert np.count_nonzero(sparse.get_layer("conv").kernel.numpy()) == 54


def test_sparsity_zero_gives_all_ones_masks():
    for distribution in ("uniform", "erk"):
        sparse = tft.sparsify(_model(), 0.0, distribution=distribution)
        assert _counts(sparse) == {"conv": 54, "fc": 3456, "logits": 64}


@pytest.mark.parametrize(
    "kwargs,message",
    [
        (dict(include=["nope"]), "not maskable"),
        (dict(include=["fc"], exclude=["fc"]), "keeps dense"),
        (dict(include=[]), "include is empty"),
        (dict(include="fc"), "list of layer names"),
        (dict(layer_sparsity={"nope": 0.5}), "nope"),
        (dict(layer_sparsity={"fc": 1.0}), r"layer_sparsity\['fc'\]"),
        (dict(layer_sparsity=[("fc", 0.5)]), "dict"),
        (dict(layer_sparsity=lambda name, shape: 2.0), "layer_sparsity"),
    ],
)
def test_bad_per_layer_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tft.sparsify(_model(), 0.8, **kwargs)


def test_layer_sparsities_without_overrides_match_the_distribution():
    shapes = [("a", (3, 3, 8, 16)), ("b", (128, 10))]
    assert layer_sparsities(shapes, 0.9, "uniform") == {"a": 0.9, "b": 0.9}
    erk = tft.layer_densities(shapes, 0.9, "erk")
    assert layer_sparsities(shapes, 0.9, "erk") == {name: 1.0 - d for name, d in erk.items()}


def test_strip_masks_gives_plain_layers_with_the_same_outputs(tmp_path):
    sparse = tft.sparsify(_model(), 0.8, distribution="erk", seed=0)
    stripped = tft.strip_masks(sparse)
    assert not masking.masked_layers(stripped)
    assert [type(layer).__name__ for layer in stripped.layers] == ["InputLayer", "Conv2D", "Flatten", "Dense", "Dense"]
    x = np.random.default_rng(0).normal(size=(5, 8, 8, 1)).astype("float32")
    np.testing.assert_allclose(stripped.predict(x, verbose=0), sparse.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    for name, count in _counts(sparse).items():
        assert np.count_nonzero(stripped.get_layer(name).kernel.numpy()) <= count
    path = str(tmp_path / "plain.keras")
    stripped.save(path)
    with zipfile.ZipFile(path) as archive:
        assert "tf_freetickets" not in archive.read("config.json").decode()  # loads without this library
    reloaded = keras.models.load_model(path)
    np.testing.assert_allclose(reloaded.predict(x, verbose=0), sparse.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
