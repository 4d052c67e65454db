"""A training run killed mid-way resumes from its last checkpoint and ends exactly as an uninterrupted run."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tf_freetickets.data import DEFAULT_DIR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.isdir(DEFAULT_DIR), reason=f"Fashion-MNIST not installed at {DEFAULT_DIR}"),
]

# EDST with RigL growth: tickets, global exploration, dense-gradient batches and
# the mask schedule all have to line up after the restart.
ARGS = [
    "--config=configs/fashion_mnist_edst.py", "--config.train_examples=512", "--config.batch_size=64",
    "--config.sparse.method=rigl", "--config.sparse.update_every=3", "--config.deterministic=True",
    "--config.verbose=0",
]  # fmt: skip


def _command(workdir, extra=()):
    return [sys.executable, "-m", "tf_freetickets.train", *ARGS, *extra, f"--workdir={workdir}"]


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


def _ticket_arrays(workdir):
    import keras

    import tf_freetickets  # noqa: F401  (registers the masked layers)

    arrays = []
    for k in range(3):
        model = keras.models.load_model(os.path.join(workdir, "members", f"ticket_{k}.keras"))
        arrays.append([w.numpy() for w in model.weights])
    return arrays


@pytest.mark.parametrize(
    "extra",
    [(), ("--config.ensemble.batchnorm_batches=2",)],  # tickets' BatchNorm statistics recomputed before each save
    ids=["default", "batchnorm-recomputed"],
)
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, extra):
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    done = subprocess.run(_command(straight, extra), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]

    process = subprocess.Popen(_command(interrupted, extra), cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    marker = interrupted / "checkpoints" / "edst" / "ckpt-4.index"  # after epoch 4: one ticket saved, two to go
    deadline = time.time() + 600
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert process.poll() is None, "the run ended before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert not (interrupted / "results.json").exists()

    resumed = subprocess.run(_command(interrupted, extra), cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=900)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "Resuming edst after epoch" in resumed.stdout

    for ticket_straight, ticket_resumed in zip(_ticket_arrays(straight), _ticket_arrays(interrupted)):
        assert len(ticket_straight) == len(ticket_resumed)
        for a, b in zip(ticket_straight, ticket_resumed):
            np.testing.assert_array_equal(a, b)  # weights, masks and BN statistics, bit for bit
