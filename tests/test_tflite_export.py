"""TFLite export of masked models: same predictions as Keras, sparse weight encoding, smaller files."""

import keras
import numpy as np
import pytest

import tf_freetickets as tft
from tf_freetickets.deploy import tflite


def _with_batchnorm_statistics(model, seed):
    """Non-trivial BatchNorm moving statistics, so the converter's BatchNorm folding is exercised."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            gamma, beta, mean, variance = layer.get_weights()
            layer.set_weights(
                [
                    rng.uniform(0.5, 1.5, gamma.shape).astype("float32"),
                    rng.normal(0, 0.1, beta.shape).astype("float32"),
                    rng.normal(0, 0.1, mean.shape).astype("float32"),
                    rng.uniform(0.5, 2.0, variance.shape).astype("float32"),
                ]
            )
    return model


@pytest.fixture(scope="module")
def models():
    keras.utils.set_random_seed(0)
    dense = _with_batchnorm_statistics(tft.models.small_cnn(), seed=0)
    sparse = tft.sparsify(dense, 0.9, distribution="erk", seed=0)
    return dense, sparse


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(1).random((4, 28, 28, 1), dtype=np.float32)


@pytest.fixture(scope="module")
def sparse_file(models, tmp_path_factory):
    path = tmp_path_factory.mktemp("tflite") / "sparse90.tflite"
    size = tflite.export_tflite(models[1], str(path), sparse=True)
    return path, size


def test_sparse_model_predicts_like_keras_and_is_stored_sparse(models, images, sparse_file):
    path, size = sparse_file
    assert size == path.stat().st_size > 0
    expected = models[1].predict(images, verbose=0)
    got = tflite.tflite_predict(str(path), images)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    stored_sparse = tflite.sparse_tensors(str(path))
    # conv1_2, conv2_1, conv2_2 and fc are 90%-sparse enough to be encoded; each keeps ~10% of its weights.
    assert len(stored_sparse) >= 3
    for tensor in stored_sparse:
        assert tensor["format"][-1] == 1  # the innermost dimension is stored as CSR indices
        assert tensor["nonzeros"] < 0.2 * np.prod(tensor["shape"])
    assert "DENSIFY" in tflite.op_names(str(path))


def test_90_percent_sparse_file_is_smaller_than_dense(models, sparse_file, tmp_path):
    dense_size = tflite.export_tflite(models[0], str(tmp_path / "dense.tflite"), sparse=False)
    _, sparse_size = sparse_file
    ratio = sparse_size / dense_size
    assert ratio < 1.0
    assert ratio <= 0.35  # the target; about 0.15 for this model
    # Without the sparse encoding the masked model's file is as large as the dense one.
    unencoded = tflite.export_tflite(models[1], str(tmp_path / "unencoded.tflite"), sparse=False)
    assert unencoded == pytest.approx(dense_size, rel=0.02)
    assert tflite.sparse_tensors(str(tmp_path / "unencoded.tflite")) == []


def test_ensemble_is_one_file_with_the_ensemble_predictions(images, tmp_path):
    keras.utils.set_random_seed(2)
    members = [tft.sparsify(tft.models.small_cnn(width=0.5), 0.8, seed=s) for s in range(2)]
    ensemble = tft.EnsembleModel(members)
    path = str(tmp_path / "ensemble.tflite")
    tflite.export_tflite(ensemble, path)
    np.testing.assert_allclose(tflite.tflite_predict(path, images), ensemble.predict(images, verbose=0), rtol=1e-4, atol=1e-5)
    assert len(tflite.sparse_tensors(path)) >= 2 * 3


def test_latency_is_measured_for_one_example(sparse_file, images):
    path, _ = sparse_file
    seconds = tflite.tflite_latency(str(path), images[:1], runs=3, warmup=1, num_threads=1)
    assert 0.0 < seconds < 1.0


def test_sparse_int8_model_runs_without_xnnpack(models, images, tmp_path):
    path = str(tmp_path / "sparse_int8.tflite")
    size = tflite.export_tflite(models[1], path, sparse=True, quantize=True)
    assert size < 0.7 * tflite.export_tflite(models[1], str(tmp_path / "f32.tflite"), sparse=True)
    assert tflite.sparse_tensors(path)
    got = tflite.tflite_predict(path, images, default_delegates=False)
    expected = models[1].predict(images, verbose=0)
    assert np.max(np.abs(got - expected)) < 0.05 * max(np.max(np.abs(expected)), 1e-3) + 1e-3


def test_nonzero_pruned_weight_is_refused(tmp_path):
    keras.utils.set_random_seed(3)
    model = tft.sparsify(tft.models.small_cnn(width=0.25), 0.9, seed=0)
    layer = model.get_layer("fc")
    kernel = layer.kernel_variable.numpy()
    kernel[layer.kernel_mask.numpy() == 0] = 1.0
    layer.kernel_variable.assign(kernel)
    with pytest.raises(ValueError, match="outside its mask"):
        tflite.export_tflite(model, str(tmp_path / "bad.tflite"))


def _dead_channel_ticket(seed):
    """A small 80% ERK small_cnn ticket with BatchNorm statistics and conv1_2's first two channels all zero."""
    keras.utils.set_random_seed(seed)
    ticket = tft.sparsify(_with_batchnorm_statistics(tft.models.small_cnn(width=0.25), seed), 0.8, seed=seed)
    layer = ticket.get_layer("conv1_2")
    for variable in (layer.kernel_mask, layer.kernel_variable):
        value = variable.numpy()
        value[..., :2] = 0.0
        variable.assign(value)
    return ticket


def _with_offsets(ticket):
    """`tft.compact` with offset maps: conv1_2's two dead channels hold constants that conv2_1 reads."""
    small, _ = tft.compact(ticket, padded_constants="offset")
    assert "conv2_1_offset" in [layer.name for layer in small.layers]
    return small


@pytest.mark.parametrize("form", ["stacked", "grouped", "compacted", "compacted with offsets", "stacked compacted"])
def test_one_graph_serving_forms_convert_exactly(form, images):
    """stack_ensemble, group_ensemble and tft.compact outputs as TFLite: within 1e-5 of Keras."""
    from tf_freetickets.deploy.grouped import group_ensemble
    from tf_freetickets.deploy.stacked import stack_ensemble

    tickets = [_dead_channel_ticket(seed) for seed in range(3)]
    compacted = [tft.compact(ticket)[0] for ticket in tickets]
    assert compacted[0].get_layer("conv1_2").filters < 8  # the dead channels are really gone
    build = {
        "stacked": lambda: stack_ensemble(tickets),
        "grouped": lambda: group_ensemble(tickets),
        "compacted": lambda: compacted[0],
        "compacted with offsets": lambda: _with_offsets(tickets[0]),
        "stacked compacted": lambda: stack_ensemble(compacted),
    }
    model = build[form]()
    content = tflite.convert_to_tflite(model)
    got = tflite.tflite_predict(content, images)
    want = model.predict(images, verbose=0)
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) <= 1e-5
