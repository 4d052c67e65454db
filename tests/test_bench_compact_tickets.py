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
    assert set(latency["ratio_to_dense"]) == {f"{v} / {r}" for v in ("dense", "compact") for r in ("saved_model", "tflite")}
    assert max(latency["max_abs_diff"].values()) <= 1e-5
