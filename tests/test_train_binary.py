"""The training binary end to end on a slice of Fashion-MNIST, and its error handling."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tf_freetickets.data import DEFAULT_DIR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_data = pytest.mark.skipif(
    not os.path.isdir(DEFAULT_DIR), reason=f"Fashion-MNIST not installed at {DEFAULT_DIR} (apt-get install dataset-fashion-mnist)"
)


def _train(tmp_path, *overrides, config="configs/fashion_mnist_rigl.py"):
    cmd = [sys.executable, "-m", "tf_freetickets.train", f"--config={config}", f"--workdir={tmp_path}", *overrides]
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)


def _results(tmp_path):
    with open(tmp_path / "results.json") as f:
        return json.load(f)


SMALL = ["--config.train_examples=1024", "--config.batch_size=64", "--config.sparse.update_every=4"]


@needs_data
def test_rigl_single_run_writes_member_and_results(tmp_path):
    result = _train(tmp_path, *SMALL, "--config.epochs=2", "--config.sparse.sparsity=0.8")
    assert result.returncode == 0, result.stderr[-3000:]
    saved = _results(tmp_path)
    assert saved["name"] == "rigl" and saved["config"]["sparse"]["sparsity"] == 0.8
    results = saved["results"]
    assert results["members"] == 1
    assert results["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert 0.1 < results["accuracy"] <= 1.0 and results["nll"] > 0 and 0 <= results["ece"] <= 1
    assert "all masked layers" in result.stdout
    assert result.stdout.splitlines()[-1].split()[:2] == ["rigl", "1"]

    import keras

    import tf_freetickets as tft

    model = keras.models.load_model(tmp_path / "members" / "member_0.keras")
    assert tft.global_sparsity(model) == pytest.approx(results["sparsity"])
    for layer in tft.sparse.masked_layers(model):
        assert np.all(layer.kernel_variable.numpy()[layer.kernel_mask.numpy() == 0] == 0)
    # Costs recorded with the metrics: 1024 examples / 64 = 16 steps per epoch, 2 epochs.
    dense, sparse = tft.metrics.forward_flops(model)
    assert results["inference_flops"] == sparse and results["dense_inference_flops"] == dense
    updates = tft.metrics.num_mask_updates(32, update_every=4, end_fraction=0.75)
    assert results["training_flops"] == 3 * sparse * 64 * 32 + updates * 64 * (2 * sparse + dense)


@needs_data
@pytest.mark.slow
def test_edst_config_trains_three_tickets_and_prints_the_table(tmp_path):
    result = _train(tmp_path, *SMALL, config="configs/fashion_mnist_edst.py")
    assert result.returncode == 0, result.stderr[-3000:]
    members = sorted(os.listdir(tmp_path / "members"))
    assert members == [
        "manifest.json", "ticket_0", "ticket_0.keras", "ticket_1", "ticket_1.keras", "ticket_2", "ticket_2.keras",
    ]  # fmt: skip
    manifest = json.loads((tmp_path / "members" / "manifest.json").read_text())
    assert [entry["file"] for entry in manifest["members"]] == ["ticket_0.keras", "ticket_1.keras", "ticket_2.keras"]
    results = _results(tmp_path)["results"]
    assert results["members"] == 3 and 0 < results["disagreement"] < 1 and results["kl"] > 0
    assert results["sparsity"] == pytest.approx(0.8, abs=1e-3)
    overlap = np.array(results["ticket_mask_overlap"])
    assert overlap.shape == (3, 3) and np.all(np.diag(overlap) == 1) and np.all(overlap[~np.eye(3, dtype=bool)] < 1)
    header, row = result.stdout.splitlines()[-2:]
    assert header.split()[:4] == ["run", "M", "acc", "NLL"]
    assert row.split()[:2] == ["set-edst", "3"]
    assert "EDST: ticket_2 (3 of 3) saved after epoch 7" in result.stdout  # named as its file ticket_2.keras


@pytest.mark.parametrize(
    "override,message",
    [
        ("--config.sparse.sparsity=1.2", "config.sparse.sparsity must be in [0, 1), got 1.2"),
        ("--config.sparse.drop_fraction=-0.5", "config.sparse.drop_fraction=-0.5 must be in [0, 1]"),
        ("--config.sparse.method=magic", "config.sparse.method='magic' is unknown"),
        ("--config.data_dir=/nonexistent", "not found in /nonexistent"),
        ("--config.ensemble.kind=edst", "needs a dynamic sparse method"),
        ("--config.ensemble.kind=bagging", "config.ensemble.kind='bagging' is unknown"),
    ],
)
def test_bad_values_give_one_error_line_and_exit_2(tmp_path, override, message):
    extra = ["--config.sparse.method=static"] if "kind=edst" in override else []
    result = _train(tmp_path, override, *extra)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
