"""tools/bench_compact_tickets.py: its synthetic data, its refusals and a tiny end-to-end run."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tools"))

from bench_common import synthetic_images  # noqa: E402  (bench_common defines no flags)


def _tool(tmp_path, *flags):
    env = {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "3"}
    command = [sys.executable, os.path.join(ROOT, "tools", "bench_compact_tickets.py"), f"--output={tmp_path}", *flags]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)


def test_synthetic_images_are_deterministic_and_carry_their_class():
    x, y = synthetic_images((8, 8, 3), 200, seed=3)
    again, labels = synthetic_images((8, 8, 3), 200, seed=3)
    assert x.shape == (200, 8, 8, 3) and x.dtype == np.float32 and np.array_equal(x, again) and np.array_equal(y, labels)
    assert not np.array_equal(x, synthetic_images((8, 8, 3), 200, seed=4)[0])
    means = np.stack([x[y == k].mean(axis=0) for k in range(10)])  # the class templates, up to noise
    nearest = np.argmin(((x[:, None] - means[None]) ** 2).sum(axis=(2, 3, 4)), axis=1)
    assert np.mean(nearest == y) > 0.9


def test_refuses_a_run_without_a_mask_update(tmp_path):
    result = _tool(tmp_path, "--model=small_cnn", "--train_steps=10", "--update_every=100")
    assert result.returncode == 2
    assert "--update_every=100 with --train_steps=10: no mask update" in result.stderr


@pytest.mark.slow
def test_a_tiny_chase_ticket_is_compacted_timed_and_sized(tmp_path):
    result = _tool(tmp_path, "--model=small_cnn", "--sparsities=0.9", "--train_steps=8", "--update_every=2",
                   "--batch_size=16", "--examples=64", "--batches=1", "--calls=1", "--repeats=1")  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "SYNTHETIC" in result.stdout
    (row,) = json.load(open(tmp_path / "tickets.json"))["tickets"]
    assert row["removed"] > 0 and row["params_after"] < row["params_dense"]
    assert row["bytes"]["compact / tflite"] < row["bytes"]["dense / tflite"]
    latency = row["latency"]["1"]
    variants = ("dense", "compact", "carrier")
    assert set(latency["ratio_to_dense"]) == {f"{v} / {r}" for v in variants for r in ("saved_model", "tflite")}
    assert max(latency["max_abs_diff"].values()) <= 1e-5
    assert set(latency["offset_vs_carrier"]) == {"saved_model", "tflite"}
    assert row["params_after"] <= row["params_carrier"]


def test_refuses_a_missing_ticket_file(tmp_path):
    result = _tool(tmp_path, f"--tickets={tmp_path / 'nowhere.keras'}")
    assert result.returncode == 2 and "--tickets: no such file" in result.stderr


@pytest.mark.slow
def test_a_saved_ticket_is_timed_without_training(tmp_path):
    import keras

    import tf_freetickets as tft

    keras.utils.set_random_seed(0)
    ticket = tft.sparsify(tft.models.small_cnn(width=0.25), 0.8, seed=0)
    layer = ticket.get_layer("conv1_2")
    for variable in (layer.kernel_mask, layer.kernel_variable):  # two dead channels: compact removes them
        value = variable.numpy()
        value[..., :2] = 0.0
        variable.assign(value)
    bn = ticket.get_layer("bn1_2")  # channel 0 holds relu(0.5) into conv2_1 ("same"): an offset, or kept as is
    beta = bn.beta.numpy()
    beta[0] = 0.5
    bn.beta.assign(beta)
    path = tmp_path / "ticket.keras"
    ticket.save(path)
    result = _tool(tmp_path, f"--tickets={path}", "--batches=1", "--calls=1", "--repeats=1")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "SYNTHETIC" not in result.stdout
    (row,) = json.load(open(tmp_path / "tickets.json"))["tickets"]
    assert row["method"] == "saved" and row["removed"] == 2 and row["params_dense"] == tft.strip_masks(ticket).count_params()
    assert row["offsets"] == 1 and row["params_after"] < row["params_carrier"]  # the lone constant stays as a carrier
    assert abs(row["sparsity"] - 0.8) < 0.05 and max(row["latency"]["1"]["max_abs_diff"].values()) <= 1e-5
