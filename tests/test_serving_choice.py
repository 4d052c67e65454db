"""EnsembleModel.export_fastest (ensembles/serving_choice.py): each form checked and timed, the fastest kept."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import tf_freetickets as tft
from tf_freetickets.ensembles import serving_choice


def _member(seed, dead=0):
    keras.utils.set_random_seed(seed)
    model = tft.models.small_cnn(input_shape=(12, 12, 1), num_classes=4, width=0.25)
    model = tft.sparsify(model, 0.5, "uniform", seed=seed)
    if dead:  # a ticket with dead output channels in its first convolution
        layer = tft.sparse.masked_layers(model)[0]
        mask = layer.kernel_mask.numpy()
        mask[..., :dead] = 0.0
        layer.kernel_mask.assign(mask)
        layer.kernel_variable.assign(layer.kernel_variable.numpy() * mask)  # pruned weights are zero, as training keeps them
    return model


def test_the_fastest_form_is_written_and_serves_the_members_mean(tmp_path, capsys):
    ensemble = tft.EnsembleModel([_member(0, dead=4), _member(1, dead=4), _member(2)])
    example = np.random.default_rng(0).random((1, 12, 12, 1)).astype(np.float32)
    chosen, timings = ensemble.export_fastest(str(tmp_path / "served"), example, repeats=3, calls=5)
    assert [t.form for t in timings] == list(serving_choice.SERVING_FORMS)
    measured = {t.form: t.seconds for t in timings if not t.skipped}
    assert set(measured) == set(serving_choice.SERVING_FORMS) and chosen == min(measured, key=measured.get)
    assert all(t.max_abs_diff <= 1e-5 for t in timings)
    batch = np.random.default_rng(1).random((5, 12, 12, 1)).astype(np.float32)
    reloaded = tf.saved_model.load(str(tmp_path / "served"))
    served = reloaded.serve(batch)
    np.testing.assert_allclose(served, ensemble(batch), atol=1e-5)
    assert f"Serving form: {chosen} (fastest measured at batch 1), written to {tmp_path / 'served'}" in capsys.readouterr().out
    assert not [p for p in tmp_path.iterdir() if p.name != "served"]  # the other candidates are gone


def test_a_form_that_cannot_be_built_is_skipped_with_its_reason(tmp_path, monkeypatch):
    def refuse(model, *args, **kwargs):
        raise ValueError("compact cannot slice layer 'x'")

    monkeypatch.setattr("tf_freetickets.deploy.compact.compact", refuse)
    ensemble = tft.EnsembleModel([_member(0)])
    example = np.zeros((1, 12, 12, 1), np.float32)
    chosen, timings = ensemble.export_fastest(str(tmp_path / "s"), example, repeats=1, calls=1, verbose=False)
    skipped = {t.form: t.skipped for t in timings if t.skipped}
    refusal = "ValueError: compact cannot slice layer 'x'"
    assert skipped == {"compacted": refusal, "compacted_offsets": refusal} and chosen in ("members", "stacked")


def test_unknown_forms_and_runtimes_are_refused(tmp_path):
    ensemble = tft.EnsembleModel([_member(0)])
    example = np.zeros((1, 12, 12, 1), np.float32)
    with pytest.raises(ValueError, match=r"Unknown serving forms \['fused'\] for runtime 'saved_model'; choose from \('members'"):
        ensemble.export_fastest(str(tmp_path / "s"), example, forms=("fused",))
    with pytest.raises(ValueError, match=r"Unknown serving forms \['members'\] for runtime 'tflite'; choose from \('stacked', "):
        ensemble.export_fastest(str(tmp_path / "s.tflite"), example, forms=("members",), runtime="tflite")
    with pytest.raises(ValueError, match=r"Unknown runtime 'onnx'; choose from \('saved_model', 'tflite'\)"):
        ensemble.export_fastest(str(tmp_path / "s"), example, runtime="onnx")
    assert list(tmp_path.iterdir()) == []  # nothing written


def test_the_tflite_runtime_writes_the_fastest_file_and_it_serves_the_members_mean(tmp_path, capsys):
    from tf_freetickets.deploy.tflite import tflite_predict

    ensemble = tft.EnsembleModel([_member(0, dead=4), _member(1, dead=4), _member(2)])
    example = np.random.default_rng(0).random((1, 12, 12, 1)).astype(np.float32)
    path = tmp_path / "served.tflite"
    path.write_bytes(b"an older file")  # replaced
    chosen, timings = ensemble.export_fastest(str(path), example, runtime="tflite", repeats=3, calls=5)
    assert [t.form for t in timings] == list(serving_choice.TFLITE_FORMS)
    measured = {t.form: t.seconds for t in timings if not t.skipped}
    assert set(measured) == {"stacked", "compacted", "compacted_offsets", "grouped"}
    assert chosen == min(measured, key=measured.get)
    assert all(t.max_abs_diff <= 1e-5 for t in timings)
    out = capsys.readouterr().out
    assert f"Serving form: {chosen} in tflite (fastest measured at batch 1), written to {path}" in out
    # The file serves any example at batch 1 (the shape it was timed on) as the members' mean probability.
    other = np.random.default_rng(1).random((1, 12, 12, 1)).astype(np.float32)
    np.testing.assert_allclose(tflite_predict(str(path), other), ensemble(other), atol=1e-5)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["served.tflite"]


def test_the_grouped_tflite_form_is_skipped_with_its_reason_when_members_differ(tmp_path):
    keras.utils.set_random_seed(3)
    wider = tft.models.small_cnn(input_shape=(12, 12, 1), num_classes=4, width=0.5)
    ensemble = tft.EnsembleModel([_member(0), wider])
    example = np.zeros((1, 12, 12, 1), np.float32)
    chosen, timings = ensemble.export_fastest(str(tmp_path / "s.tflite"), example, runtime="tflite", repeats=1, calls=1,
                                              verbose=False)  # fmt: skip
    skipped = {t.form: t.skipped for t in timings if t.skipped}
    assert list(skipped) == ["grouped"] and skipped["grouped"].startswith("ValueError: ") and chosen != "grouped"


def test_a_path_holding_something_else_is_never_replaced(tmp_path):
    ensemble = tft.EnsembleModel([_member(0)])
    example = np.zeros((1, 12, 12, 1), np.float32)
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    (workdir / "results.json").write_text("{}")
    with pytest.raises(ValueError, match="holds files that are not a SavedModel"):
        ensemble.export_fastest(str(workdir), example, verbose=False)
    with pytest.raises(ValueError, match=r"is not a \.tflite file path"):
        ensemble.export_fastest(str(workdir / "results.json"), example, runtime="tflite", verbose=False)
    with pytest.raises(ValueError, match="is a file; runtime 'saved_model' writes a SavedModel folder"):
        ensemble.export_fastest(str(workdir / "results.json"), example, verbose=False)
    assert sorted(os.listdir(workdir)) == ["results.json"] and (workdir / "results.json").read_text() == "{}"
    # A SavedModel folder is replaced by the new one.
    first, _ = ensemble.export_fastest(str(tmp_path / "served"), example, forms=("stacked",), repeats=1, calls=1, verbose=False)
    second, _ = ensemble.export_fastest(str(tmp_path / "served"), example, forms=("members",), repeats=1, calls=1, verbose=False)
    assert (first, second) == ("stacked", "members") and hasattr(tf.saved_model.load(str(tmp_path / "served")), "uncertainty")


def test_the_offsets_form_removes_the_constants_a_carrier_keeps():
    members = [_member(seed, dead=4) for seed in (0, 1)]
    for member in members:  # the dead channels hold relu(0.4) after BatchNorm, read by a "same" convolution
        bn = next(layer for layer in member.layers if isinstance(layer, keras.layers.BatchNormalization))
        beta = bn.beta.numpy()
        beta[:4] = 0.4
        bn.beta.assign(beta)
    ensemble = tft.EnsembleModel(members)
    carrier = serving_choice._keras_form(ensemble, "compacted")
    offsets = serving_choice._keras_form(ensemble, "compacted_offsets")
    assert [layer.name for layer in offsets.layers if layer.name.endswith("_offset")]
    assert offsets.count_params() < carrier.count_params()
    x = np.random.default_rng(2).random((3, 12, 12, 1)).astype(np.float32)
    np.testing.assert_allclose(offsets(x), ensemble(x), atol=1e-5)
