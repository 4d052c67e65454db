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


def _train(tmp_path, *overrides):
    cmd = [
        sys.executable, "-m", "tf_freetickets.train", "--config=configs/fashion_mnist_rigl.py",
        f"--workdir={tmp_path}", *overrides,
    ]  # fmt: skip
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


@needs_data
def test_rigl_run_writes_model_and_results(tmp_path):
    result = _train(
        tmp_path, "--config.train_examples=1024", "--config.epochs=2", "--config.batch_size=64",
        "--config.sparse.update_every=4", "--config.sparse.sparsity=0.8",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    with open(tmp_path / "results.json") as f:
        results = json.load(f)["results"]
    assert results["method"] == "rigl"
    assert results["sparsity"] == pytest.approx(0.8, abs=1e-3)
    assert 0.1 < results["test_accuracy"] <= 1.0
    assert "all masked layers" in result.stdout and "rigl" in result.stdout.splitlines()[-1]

    import keras

    import tf_freetickets as tft

    model = keras.models.load_model(tmp_path / "model.keras")
    assert tft.global_sparsity(model) == pytest.approx(results["sparsity"])
    for layer in tft.sparse.masked_layers(model):
        assert np.all(layer.kernel_variable.numpy()[layer.kernel_mask.numpy() == 0] == 0)


@pytest.mark.parametrize(
    "override,message",
    [
        ("--config.sparse.sparsity=1.2", "config.sparse.sparsity must be in [0, 1), got 1.2"),
        ("--config.sparse.drop_fraction=-0.5", "config.sparse.drop_fraction=-0.5 must be in [0, 1]"),
        ("--config.sparse.method=magic", "config.sparse.method='magic' is unknown"),
        ("--config.data_dir=/nonexistent", "not found in /nonexistent"),
    ],
)
def test_bad_values_give_one_error_line_and_exit_2(tmp_path, override, message):
    result = _train(tmp_path, override)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr
