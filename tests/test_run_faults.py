"""Faults around a training run (issue 28): other data, replaced members, a full disk, SIGTERM.

Each case runs the real run driver on a tiny synthetic Fashion-MNIST-format dataset (idx files
written here), so no installed dataset is needed and a run takes seconds.
"""

import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tf_freetickets.experiments import runner
from tf_freetickets.experiments import workdir as workdirs
from tf_freetickets.experiments.config import fashion_mnist_defaults
from tf_freetickets.experiments.data_sources import data_source

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _idx(array, magic):
    header = magic.to_bytes(4, "big") + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + np.asarray(array, np.uint8).tobytes()


def write_data(folder, gzipped=False):
    """128 training and 64 test examples of random 28x28 images in Fashion-MNIST's idx format."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for stem, count in (("train", 128), ("t10k", 64)):
        for kind, array, magic in (
            ("images-idx3-ubyte", rng.integers(0, 256, (count, 28, 28)), 0x803),
            ("labels-idx1-ubyte", rng.integers(0, 10, count), 0x801),
        ):
            data, name = _idx(array, magic), os.path.join(folder, f"{stem}-{kind}")
            with gzip.open(f"{name}.gz", "wb") if gzipped else open(name, "wb") as f:
                f.write(data)
    return folder


def change_a_test_label(folder):
    path = os.path.join(folder, "t10k-labels-idx1-ubyte")
    data = bytearray(open(path, "rb").read())
    data[8] = (data[8] + 1) % 10  # the first test label
    open(path, "wb").write(bytes(data))


def tiny_config(**changes):
    """One sparse small CNN, 2 epochs of 4 steps on the 128 synthetic examples."""
    config = fashion_mnist_defaults()
    config.batch_size, config.width, config.epochs, config.verbose = 32, 0.25, 2, 0
    config.sparse.update_every = 2
    config.update(changes)
    return config


def test_data_identity_is_the_content_not_the_folder(tmp_path, monkeypatch):
    from tf_freetickets.experiments.data_sources import data_identity

    plain, zipped, other = (write_data(str(tmp_path / name), gzipped=name == "zipped") for name in ("plain", "zipped", "other"))
    change_a_test_label(other)
    identities = {}
    for name, folder in (("plain", plain), ("zipped", zipped), ("other", other)):
        monkeypatch.setenv("TFT_FASHION_MNIST_DIR", folder)
        config = tiny_config()
        identities[name] = data_identity(config, data_source(config))
        assert identities[name]["path"] == os.path.realpath(folder)
    assert identities["plain"]["sha256"] == identities["zipped"]["sha256"]  # the same examples, stored gzipped
    assert identities["plain"]["sha256"] != identities["other"]["sha256"]  # one test label differs


@pytest.mark.slow
def test_a_finished_run_is_not_recomputed_on_other_data(tmp_path, monkeypatch):
    original, copy, other = (write_data(str(tmp_path / name)) for name in ("original", "copy", "other"))
    change_a_test_label(other)
    workdir = str(tmp_path / "run")
    monkeypatch.setenv("TFT_FASHION_MNIST_DIR", original)
    first = runner.run(tiny_config(), workdir)
    record = json.loads(open(os.path.join(workdir, workdirs.RECORD_NAME)).read())
    assert record["data"]["path"] == os.path.realpath(original) and len(record["data"]["sha256"]) == 64
    results = open(os.path.join(workdir, "results.json")).read()
    assert first["untimed_epochs"] == 0 and first["train_seconds"] > 0 and first["train_cpu_seconds"] > 0

    monkeypatch.setenv("TFT_FASHION_MNIST_DIR", other)  # the same config, other test labels
    with pytest.raises(workdirs.WorkdirError) as error:
        runner.run(tiny_config(), workdir)
    message = str(error.value)
    assert message.startswith(f"--workdir={workdir} holds a run trained on other data (recorded {os.path.realpath(original)}")
    assert f"now {os.path.realpath(other)}" in message and len(message.splitlines()) == 1
    assert open(os.path.join(workdir, "results.json")).read() == results  # nothing recomputed

    monkeypatch.setenv("TFT_FASHION_MNIST_DIR", copy)  # the same files in another folder: the run is the same
    rerun = runner.run(tiny_config(), workdir)
    assert rerun["accuracy"] == first["accuracy"]
    # Nothing trained again, and the rerun still reports the run's training time, not its own.
    assert {k: rerun[k] for k in ("train_seconds", "train_cpu_seconds", "untimed_epochs")} == {
        k: first[k] for k in ("train_seconds", "train_cpu_seconds", "untimed_epochs")
    }


def _edst_config():
    """EDST, 2 tickets: ticket_0 after epoch 1, ticket_1 after epoch 2 (4 steps each)."""
    config = tiny_config()
    config.optimizer.schedule = "constant"
    config.sparse.update(method="set", sparsity=0.8, update_every=2, decay="constant", end_fraction=1.0)
    config.ensemble.update(kind="edst", num_members=2, exploration_epochs=0, refinement_epochs=1, refinement_lr_factors=(0.1,))
    return config


def _stop_at_the_second_ticket(monkeypatch):
    from tf_freetickets.deploy import saved_model

    real, calls = saved_model.export_member, []

    def export(model, path, input_range=None):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # stopped after ticket_0 and the epoch-1 checkpoint
        return real(model, path, input_range)

    monkeypatch.setattr(saved_model, "export_member", export)


@pytest.mark.slow
def test_a_rerun_never_certifies_a_ticket_it_did_not_write(tmp_path, monkeypatch):
    monkeypatch.setenv("TFT_FASHION_MNIST_DIR", write_data(str(tmp_path / "data")))
    finished, killed = str(tmp_path / "finished"), str(tmp_path / "killed")
    with monkeypatch.context() as patch:
        _stop_at_the_second_ticket(patch)
        with pytest.raises(KeyboardInterrupt):
            runner.run(_edst_config(), killed)
    runner.run(_edst_config(), finished)
    members = os.path.join(finished, "members")
    kept = {name: open(os.path.join(finished, name), "rb").read() for name in ("results.json", "members/manifest.json")}

    # A killed run's ticket_0 replaced by another valid ticket before the resume.
    shutil.copy(os.path.join(members, "ticket_1.keras"), os.path.join(killed, "members", "ticket_0.keras"))
    with pytest.raises(workdirs.WorkdirError) as error:
        runner.run(_edst_config(), killed)
    replaced = os.path.join(killed, "members", "ticket_0.keras")
    assert str(error.value).startswith(f"Ticket {replaced} is not the file this run wrote")
    assert not os.path.exists(os.path.join(killed, "results.json"))
    assert not os.path.exists(os.path.join(killed, "members", workdirs.MANIFEST_NAME))

    # A finished run's ticket_1 replaced by its ticket_0: the rerun refuses and rewrites nothing.
    shutil.copy(os.path.join(members, "ticket_0.keras"), os.path.join(members, "ticket_1.keras"))
    with pytest.raises(workdirs.WorkdirError, match=r"ticket_1.keras is not the file this run wrote \(.*SHA-256 differs\)"):
        runner.run(_edst_config(), finished)
    for name, content in kept.items():
        assert open(os.path.join(finished, name), "rb").read() == content


def _checkpoint_disk_full(patch):
    """TensorFlow's checkpoint writer fails in epoch 2 as on a full disk (an OpError, not an OSError)."""
    import tensorflow as tf

    real = tf.train.CheckpointManager.save

    def save(self, checkpoint_number=None, **kwargs):
        if checkpoint_number == 2:
            raise tf.errors.ResourceExhaustedError(None, None, f"{self.directory}/ckpt-2_temp: No space left on device")
        return real(self, checkpoint_number=checkpoint_number, **kwargs)

    patch.setattr(tf.train.CheckpointManager, "save", save)


def _member_disk_full(patch):
    """The member SavedModel export fails half-written as on a full disk."""
    import errno

    from tf_freetickets.deploy import saved_model

    def export(model, path, input_range=None):
        os.makedirs(path, exist_ok=True)
        open(os.path.join(path, "saved_model.pb"), "wb").write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device", os.path.join(path, "saved_model.pb"))

    patch.setattr(saved_model, "export_member", export)


@pytest.mark.slow
def test_a_full_disk_ends_in_one_line_and_the_rerun_is_exact(tmp_path, monkeypatch):
    monkeypatch.setenv("TFT_FASHION_MNIST_DIR", write_data(str(tmp_path / "data")))
    straight = runner.run(tiny_config(), str(tmp_path / "straight"))
    for position, inject in (("checkpoint", _checkpoint_disk_full), ("member", _member_disk_full)):
        workdir = str(tmp_path / position)
        with monkeypatch.context() as patch:
            inject(patch)
            with pytest.raises(workdirs.DiskFullError) as error:
                runner.run(tiny_config(), workdir)
        message = str(error.value)
        assert message.startswith(f"The disk holding --workdir={workdir} is full (No space left on device"), message
        assert message.endswith("free space and rerun the same command, it resumes exactly from the newest complete checkpoint.")
        assert not os.path.exists(os.path.join(workdir, "results.json"))
        resumed = runner.run(tiny_config(), workdir)  # space freed
        assert {k: resumed[k] for k in ("accuracy", "nll", "ece")} == {k: straight[k] for k in ("accuracy", "nll", "ece")}
        assert [e["file"] for e in json.load(open(os.path.join(workdir, "members", workdirs.MANIFEST_NAME)))["members"]] == [
            "member_0.keras"
        ]


_CONFIG_FILE = """
from tf_freetickets.experiments.config import fashion_mnist_defaults


def get_config():  # tiny_config(epochs=6)
    config = fashion_mnist_defaults()
    config.batch_size, config.width, config.epochs, config.verbose = 32, 0.25, 6, 0
    config.sparse.update_every = 2
    return config
"""


def _train(config_file, workdir, data):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TFT_FASHION_MNIST_DIR=data)
    command = [sys.executable, "-m", "tf_freetickets.train", f"--config={config_file}", f"--workdir={workdir}"]
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


@pytest.mark.slow
def test_sigterm_saves_the_epoch_and_the_rerun_ends_as_an_uninterrupted_run(tmp_path):
    data = write_data(str(tmp_path / "data"))
    config_file = tmp_path / "tiny.py"
    config_file.write_text(_CONFIG_FILE)
    straight, stopped = tmp_path / "straight", tmp_path / "stopped"
    done = _train(config_file, straight, data)
    process = _train(config_file, stopped, data)
    marker = stopped / "checkpoints" / "member_0" / "ckpt-1.index"
    deadline = time.time() + 300
    while not marker.exists() and process.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before SIGTERM could be sent"
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 143, stderr[-3000:]
    assert "Traceback" not in stderr and not (stopped / "results.json").exists()
    line = [line for line in stderr.splitlines() if line.startswith("stopped:")]
    assert len(line) == 1, stderr[-3000:]
    epoch = int(re.search(r"member_0 stopped at the end of epoch (\d+), after its checkpoint", line[0]).group(1))
    assert 1 <= epoch < 6 and line[0].endswith("rerun the same command to resume exactly from there.")
    assert (stopped / "checkpoints" / "member_0" / f"ckpt-{epoch}.index").exists()

    resumed = _train(config_file, stopped, data)
    out, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-3000:]
    assert f"Resuming member_0 after epoch {epoch}" in out
    assert re.search(r"^training time \d+\.\d min wall, \d+\.\d CPU-min$", out, re.M), out[-2000:]
    assert done.wait(timeout=300) == 0
    results = [json.loads((w / "results.json").read_text())["results"] for w in (straight, stopped)]
    assert {k: results[1][k] for k in ("accuracy", "nll", "ece")} == {k: results[0][k] for k in ("accuracy", "nll", "ece")}
    # The training time spans both processes: the epochs before SIGTERM and those after the resume.
    clock = json.loads((stopped / "checkpoints" / "member_0" / "clock.json").read_text())
    assert sorted(int(k) for k in clock) == list(range(1, 7))
    assert results[1]["untimed_epochs"] == 0 and results[1]["train_seconds"] == clock["6"][0] > clock[str(epoch)][0] > 0


_DISK_FULL_BINARY = """
import errno, sys
import numpy as np
real, calls = np.savez, []
def savez(path, *args, **kwargs):  # the callback state of epoch 2 hits a full disk
    calls.append(path)
    if len(calls) == 2:
        raise OSError(errno.ENOSPC, "No space left on device", path)
    return real(path, *args, **kwargs)
np.savez = savez
from tf_freetickets.train import console_main
console_main()
"""


@pytest.mark.slow
def test_the_binary_says_the_disk_is_full_in_one_line_with_exit_2(tmp_path):
    data = write_data(str(tmp_path / "data"))
    config_file = tmp_path / "tiny.py"
    config_file.write_text(_CONFIG_FILE)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", TFT_FASHION_MNIST_DIR=data)
    workdir = tmp_path / "run"
    command = [sys.executable, "-c", _DISK_FULL_BINARY, f"--config={config_file}", f"--workdir={workdir}"]
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    state = workdir / "checkpoints" / "member_0" / "callback_state-2.npz"
    assert errors == [
        f"error: The disk holding --workdir={workdir} is full (No space left on device writing {state}); nothing "
        "finished was lost: free space and rerun the same command, it resumes exactly from the newest complete checkpoint."
    ]
    assert "Traceback" not in result.stderr
