"""FusedMLPEnsemble: M MLP tickets served over the union of their supports give the members' Keras probabilities."""

import importlib.util
import sys

import keras
import numpy as np
import pytest

import tf_freetickets as tft
from tf_freetickets.deploy import fused_kernels
from tf_freetickets.deploy.fused import FusedMLPEnsemble

ATOL = 1e-5


@pytest.fixture(autouse=True)
def _numba_or_skip(request):
    """Every test but the ones that simulate a missing numba needs it (CI installs it with .[test])."""
    if not request.node.name.startswith("test_without_numba"):
        pytest.importorskip("numba", reason="FusedMLPEnsemble's kernels need numba: pip install numba")


def _mlp(seed, input_shape=(6, 6, 1), widths=(40, 24), classes=5, softmax=False):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input(input_shape)
    h = keras.layers.Flatten()(inputs) if len(input_shape) > 1 else inputs
    for width in widths:
        h = keras.layers.Dense(width, activation="relu")(h)
    outputs = keras.layers.Dense(classes, activation="softmax" if softmax else None)(h)
    return keras.Model(inputs, outputs)


def _tickets(count, sparsity=0.8, **kwargs):
    return [tft.sparsify(_mlp(seed, **kwargs), sparsity=sparsity, distribution="erk", seed=seed) for seed in range(count)]


def _set_masks(ticket, masks, seed=0):
    """New masks, with fresh nonzero weights on them (sparsify zeroed the kernel outside its own masks)."""
    rng = np.random.default_rng(seed)
    for layer, mask in zip(tft.sparse.masked_layers(ticket), masks):
        mask = np.asarray(mask, np.float32)
        layer.kernel_mask.assign(mask)
        layer.kernel_variable.assign((0.3 * rng.standard_normal(mask.shape) * mask).astype(np.float32))
    return ticket


def _kernel_shapes(ticket):
    return [tuple(layer.kernel_mask.shape) for layer in tft.sparse.masked_layers(ticket)]


def _inputs(n, shape=(6, 6, 1), seed=1):
    return np.random.default_rng(seed).standard_normal((n, *shape)).astype(np.float32)


def _keras_probabilities(models, x, softmax=False):
    outputs = [keras.ops.convert_to_numpy(m.predict(x, verbose=0)) for m in models]
    return np.stack([o if softmax else keras.ops.convert_to_numpy(keras.ops.softmax(o, axis=-1)) for o in outputs])


def _columns(layer):
    return np.concatenate([layer.cols, layer.own_cols])


def _assert_serves(models, x, softmax=False):
    """Both layouts (own parts split off, and every position in the shared part) and every path match Keras."""
    fused, unsplit = FusedMLPEnsemble.from_models(models), FusedMLPEnsemble.from_models(models, split=False)
    expected = _keras_probabilities(models, x, softmax)
    for served, path in [(f, p) for f in (fused, unsplit) for p in ("auto", "vector", "block")]:
        mean, members = served.predict(x, path=path)
        assert mean.shape == (x.shape[0], expected.shape[-1]) and members.shape == expected.shape
        np.testing.assert_allclose(members, expected, atol=ATOL, err_msg=path)
        np.testing.assert_allclose(mean, expected.mean(axis=0), atol=ATOL, err_msg=path)
    assert unsplit.nonzeros == fused.nonzeros and all(layer.own_cols.size == 0 for layer in unsplit.layers)
    return fused


@pytest.mark.parametrize(
    "input_shape, widths, classes, count, batch",
    [((6, 6, 1), (40, 24), 5, 3, 1), ((6, 6, 1), (40, 24), 5, 3, 37), ((12,), (16,), 3, 2, 16),
     ((8, 8, 2), (64, 48, 32), 10, 4, 5), ((20,), (), 4, 3, 17)],
)  # fmt: skip
def test_fused_probabilities_equal_the_members_keras_probabilities(input_shape, widths, classes, count, batch):
    models = _tickets(count, input_shape=input_shape, widths=widths, classes=classes)
    fused = _assert_serves(models, _inputs(batch, input_shape))
    assert fused.num_members == count and fused.num_classes == classes
    kept = sum(int(np.count_nonzero(keras.ops.convert_to_numpy(layer.kernel))) for m in models for layer in
               tft.sparse.masked_layers(m))  # fmt: skip
    assert fused.member_nonzeros == kept
    assert max(kept // count, 1) <= fused.nonzeros <= kept  # the union: at least one ticket, at most all


def test_stripped_tickets_and_an_ensemble_model_serve_the_same():
    masked = _tickets(3)
    stripped = [tft.strip(m) for m in masked]
    x = _inputs(9)
    from_masked = FusedMLPEnsemble.from_models(masked).predict(x)
    from_ensemble = FusedMLPEnsemble.from_models(tft.EnsembleModel(stripped)).predict(x)
    np.testing.assert_allclose(from_ensemble[0], from_masked[0], atol=1e-6)
    np.testing.assert_allclose(from_ensemble[0], keras.ops.convert_to_numpy(tft.EnsembleModel(stripped)(x)), atol=ATOL)


def test_empty_rows_and_columns_and_a_unit_dead_in_every_ticket():
    models = _tickets(3)
    for seed, model in enumerate(models):
        rng = np.random.default_rng(seed)
        masks = [(rng.random(shape) < 0.5).astype(np.float32) for shape in _kernel_shapes(model)]
        masks[0][0, :] = 0  # input feature 0 feeds nothing: an empty column of the first union
        masks[0][:, 3] = 0  # hidden unit 3 has no input in any ticket: an empty row (its output is relu(bias))
        masks[1][3, :] = 0  # ... and feeds nothing: an empty column of the second union
        masks[1][:, 7] = 0  # hidden unit 7 of the second layer: an empty row
        masks[2][:, 2] = 0  # class 2: its logit is the bias alone
        _set_masks(model, masks, seed)
    fused = _assert_serves(models, _inputs(21))
    first, second, last = fused.layers
    assert first.row_nonzeros()[3] == 0 and second.row_nonzeros()[7] == 0 and last.row_nonzeros()[2] == 0
    assert 0 not in _columns(first) and 3 not in _columns(second)
    assert sum(int(layer.row_nonzeros().sum()) for layer in fused.layers) == fused.nonzeros


def test_disjoint_supports_store_every_ticket_and_identical_supports_store_one():
    disjoint, identical = _tickets(3), _tickets(3)
    rng = np.random.default_rng(0)
    owners = [rng.integers(0, 3, size=shape) for shape in _kernel_shapes(disjoint[0])]
    for index, model in enumerate(disjoint):
        _set_masks(model, [owner == index for owner in owners], index)
    shared = [rng.random(shape) < 0.3 for shape in _kernel_shapes(identical[0])]
    for index, model in enumerate(identical):
        _set_masks(model, shared, index)
    apart = _assert_serves(disjoint, _inputs(18))
    assert apart.nonzeros == apart.member_nonzeros  # no index shared: the union holds every ticket's positions
    assert all(layer.cols.size == 0 for layer in apart.layers)  # ... each in its ticket's own part
    together = _assert_serves(identical, _inputs(18))
    assert together.nonzeros * 3 == together.member_nonzeros  # one index for the three tickets
    assert all(layer.own_cols.size == 0 for layer in together.layers)


def test_one_member_is_the_model_itself():
    model = _tickets(1)[0]
    fused = _assert_serves([model], _inputs(19))
    assert fused.num_members == 1 and fused.nonzeros == fused.member_nonzeros


def test_softmax_outputs_folded_activations_dropout_and_rescaling():
    def member(seed):
        keras.utils.set_random_seed(seed)
        return keras.Sequential([
            keras.Input((4, 4, 3)), keras.layers.Rescaling(1 / 255.0, offset=-0.5), keras.layers.Flatten(),
            keras.layers.Dense(32), keras.layers.ReLU(), keras.layers.Dropout(0.3),
            keras.layers.Dense(16), keras.layers.Activation("relu"), keras.layers.Dense(6), keras.layers.Softmax(),
        ])  # fmt: skip

    models = [tft.sparsify(member(seed), sparsity=0.7, seed=seed) for seed in range(2)]
    x = np.random.default_rng(2).uniform(0, 255, (7, 4, 4, 3)).astype(np.float32)
    fused = _assert_serves(models, x, softmax=True)
    np.testing.assert_allclose(fused.predict(x.reshape(7, -1))[0], fused.predict(x)[0], atol=1e-7)  # flat inputs too


def test_index_dtype_is_int16_where_it_fits_and_int32_past_it():
    assert fused_kernels.index_dtype(32768) == np.int16 and fused_kernels.index_dtype(32769) == np.int32
    models = _tickets(2, sparsity=0.9, input_shape=(32769,), widths=(8,), classes=3)
    fused = _assert_serves(models, np.random.default_rng(0).standard_normal((3, 32769)).astype(np.float32))
    assert fused.index_dtypes == [np.int32, np.int16]
    assert int(_columns(fused.layers[0]).max()) > 32767  # indices past int16 are served, not wrapped
    edge = FusedMLPEnsemble.from_models(_tickets(2, sparsity=0.5, input_shape=(32768,), widths=(), classes=2))
    assert edge.index_dtypes == [np.int16] and int(_columns(edge.layers[0]).max()) == 32767
    # The cast is checked: indices that would wrap fall back to int32 whatever the declared width.
    narrow = fused_kernels.column_indices([np.array([5, 7]), np.array([5, 40000])], num_inputs=10)
    assert [a.dtype for a in narrow] == [np.int32, np.int32] and narrow[1][1] == 40000


@pytest.mark.parametrize(
    "layers, match",
    [([keras.layers.Conv2D(4, 3, name="conv"), keras.layers.Flatten(), keras.layers.Dense(3)], r"'conv' \(Conv2D\)"),
     ([keras.layers.Flatten(), keras.layers.Dense(8, activation="tanh", name="hidden"), keras.layers.Dense(3)],
      r"'hidden' \(Dense\).*activation 'tanh'"),
     ([keras.layers.Flatten(), keras.layers.Dense(8), keras.layers.BatchNormalization(name="bn"), keras.layers.Dense(3)],
      r"'bn' \(BatchNormalization\)"),
     ([keras.layers.Flatten(), keras.layers.Dense(8), keras.layers.Rescaling(2.0, name="late"), keras.layers.Dense(3)],
      r"'late' \(Rescaling\).*before the first Dense"),
     ([keras.layers.Flatten(), keras.layers.Dense(8, activation="softmax", name="inner"), keras.layers.Dense(3)],
      r"'inner'.*softmax inside the chain"),
     ([keras.layers.Dense(3, name="wide")], r"'wide' \(Dense\).*rank-4 input")],
)  # fmt: skip
def test_refuses_what_it_cannot_serve_in_one_line_naming_the_layer(layers, match):
    model = keras.Sequential([keras.Input((6, 6, 1)), *layers])
    with pytest.raises(ValueError, match=match) as raised:
        FusedMLPEnsemble.from_models([model])
    assert "\n" not in str(raised.value)


def test_refuses_members_of_different_architectures_and_no_members():
    with pytest.raises(ValueError, match=r"Member 1 .* differs from member 0"):
        FusedMLPEnsemble.from_models([_mlp(0), _mlp(1, widths=(40, 20))])
    with pytest.raises(ValueError, match="at least one model"):
        FusedMLPEnsemble.from_models([])


def test_bad_inputs_raise_one_clear_error_and_an_empty_batch_is_answered():
    fused = FusedMLPEnsemble.from_models(_tickets(2))
    mean, members = fused.predict(np.zeros((0, 6, 6, 1), np.float32))
    assert mean.shape == (0, 5) and members.shape == (2, 0, 5)
    for bad, match in [(np.zeros((2, 35)), r"expects inputs \(N, 6, 6, 1\) or \(N, 36\)"),
                       (np.zeros((6, 6, 1)), "expects inputs"), (np.array(["a"] * 36).reshape(1, 36), "numeric")]:  # fmt: skip
        with pytest.raises(ValueError, match=match):
            fused.predict(bad)
    for value in (np.nan, np.inf):
        x = _inputs(3)
        x[1, 2, 3, 0] = value
        with pytest.raises(ValueError, match="NaN or Inf"):
            fused.predict(x)
    with pytest.raises(ValueError, match="path must be one of"):
        fused.predict(_inputs(1), path="gpu")
    np.testing.assert_allclose(fused.predict(_inputs(2).astype(np.float64))[0], fused.predict(_inputs(2))[0])


def test_without_numba_the_module_imports_and_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` now raises ImportError
    spec = importlib.util.spec_from_file_location("fused_kernels_without_numba", fused_kernels.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.numba is None
    with pytest.raises(ImportError, match=r"pip install numba") as raised:
        module.require_numba()
    assert "\n" not in str(raised.value)


def test_without_numba_from_models_raises_the_install_line(monkeypatch):
    monkeypatch.setattr(fused_kernels, "numba", None)
    with pytest.raises(ImportError, match=r"needs numba: pip install numba"):
        FusedMLPEnsemble.from_models([_mlp(0)])
