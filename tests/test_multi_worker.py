"""MultiWorkerMirroredStrategy: two worker processes on localhost train a sparse model together."""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

pytestmark = pytest.mark.slow

# Keras 3's fit() fails under MultiWorkerMirroredStrategy (keras-team/keras#20585);
# the workers use the library's work-around, tft.enable_multi_worker_fit.

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import numpy as np
    import tensorflow as tf
    import keras
    import tf_freetickets as tft

    out, multi, method = sys.argv[1], sys.argv[2] == "multi", sys.argv[3]
    strategy = tf.distribute.MultiWorkerMirroredStrategy() if multi else tf.distribute.get_strategy()
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 12)).astype("float32")
    y = x[:, :3].argmax(1).astype("int64")
    with strategy.scope():
        inputs = keras.Input((12,))
        hidden = keras.layers.Dense(32, activation="relu", name="fc")(inputs)
        model = tft.sparsify(keras.Model(inputs, keras.layers.Dense(3, name="logits")(hidden)), 0.75, seed=0)
        model.compile(keras.optimizers.SGD(0.1), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(32)
    updater = {"set": tft.SET, "rigl": tft.RigL}[method](update_every=2, drop_fraction=0.5, end_step=8, seed=3)
    # RigL's dense gradients are summed over the replicas of both workers.
    update = tft.MaskUpdate(updater, gradient_data=tf.data.Dataset.from_tensor_slices((x, y)).batch(32).repeat())
    tft.enable_multi_worker_fit(model)
    history = model.fit(data, epochs=2, verbose=0, callbacks=[update])
    masks = {layer.name: layer.kernel_mask.numpy() for layer in tft.sparse.masked_layers(model)}
    kernels = {layer.name + "/kernel": layer.kernel_variable.numpy() for layer in tft.sparse.masked_layers(model)}
    losses = np.asarray(history.history["loss"])
    np.savez(out, **masks, **kernels, updates=np.asarray([s for s, _, _ in update.history]), losses=losses)
    """
)


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


@pytest.mark.parametrize("method", ["set", "rigl"])
def test_two_workers_agree_with_each_other_and_with_one_worker(tmp_path, method):
    ports = _free_ports(2)
    cluster = {"worker": [f"localhost:{p}" for p in ports]}
    processes = []
    for index in range(2):
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
        env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        out = tmp_path / f"worker{index}.npz"
        processes.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER, str(out), "multi", method], env=env, stderr=subprocess.PIPE, text=True
            )
        )
    for process in processes:
        _, err = process.communicate(timeout=600)
        assert process.returncode == 0, "\n".join(line for line in err.splitlines() if "File " in line or "Error" in line)[-3000:]
    single = subprocess.run(
        [sys.executable, "-c", WORKER, str(tmp_path / "single.npz"), "single", method],
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert single.returncode == 0, single.stderr[-3000:]

    w0, w1, one = (np.load(tmp_path / f"{name}.npz") for name in ("worker0", "worker1", "single"))
    np.testing.assert_array_equal(w0["updates"], [2, 4, 6, 8])
    for name in ("fc", "logits"):
        np.testing.assert_array_equal(w0[name], w1[name])  # both workers hold the same masks
        np.testing.assert_array_equal(w0[name], one[name])  # and the single-worker run's
        np.testing.assert_allclose(w0[name + "/kernel"], one[name + "/kernel"], rtol=1e-4, atol=1e-6)
    # Logged losses are the mean over every replica of both workers: the single run's.
    np.testing.assert_allclose(w0["losses"], w1["losses"], rtol=1e-6)
    np.testing.assert_allclose(w0["losses"], one["losses"], rtol=1e-4)
