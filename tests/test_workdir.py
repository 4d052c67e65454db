"""A workdir holds one run: recorded config, exclusive lock, members manifest; through the binaries too."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from tf_freetickets.data import DEFAULT_DIR
from tf_freetickets.experiments import workdir as workdirs
from tf_freetickets.experiments.config import fashion_mnist_defaults

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_data = pytest.mark.skipif(not os.path.isdir(DEFAULT_DIR), reason=f"Fashion-MNIST not installed at {DEFAULT_DIR}")
SMALL = [
    "--config=configs/fashion_mnist_rigl.py", "--config.train_examples=256", "--config.batch_size=64",
    "--config.width=0.25", "--config.epochs=1", "--config.sparse.update_every=2",
]  # fmt: skip


def _binary(module, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)


def _error_lines(result):
    return [line for line in result.stderr.splitlines() if line.startswith("error:")]


def test_record_accepts_the_same_config_and_names_every_differing_field(tmp_path):
    config = fashion_mnist_defaults()
    assert workdirs.check_record(tmp_path, config) is False  # fresh
    workdirs.write_record(tmp_path, config)
    assert workdirs.check_record(tmp_path, config) is True
    config.verbose = 0  # printing only: not compared
    assert workdirs.check_record(tmp_path, config) is True
    config.sparse.sparsity = 0.5
    config.epochs = 4
    config.optimizer.milestones = (0.5, 0.9)
    with pytest.raises(workdirs.WorkdirError) as error:
        workdirs.check_record(tmp_path, config)
    message = str(error.value)
    assert "epochs 3 -> 4" in message and "sparse.sparsity 0.9 -> 0.5" in message
    assert "optimizer.milestones [0.5, 0.75] -> [0.5, 0.9]" in message
    assert "to start fresh" in message and "verbose" not in message


def test_record_names_a_package_version_change(tmp_path):
    config = fashion_mnist_defaults()
    workdirs.write_record(tmp_path, config)
    record = json.loads((tmp_path / workdirs.RECORD_NAME).read_text())
    record["package_version"] = "0.0.1"
    (tmp_path / workdirs.RECORD_NAME).write_text(json.dumps(record))
    with pytest.raises(workdirs.WorkdirError, match=r"tf_freetickets version '0.0.1' -> "):
        workdirs.check_record(tmp_path, config)


def test_outputs_without_a_record_are_refused(tmp_path):
    (tmp_path / "members").mkdir()
    with pytest.raises(workdirs.WorkdirError, match="holds members but no run_record.json"):
        workdirs.check_record(tmp_path, fashion_mnist_defaults())


def test_prepare_names_a_file_and_an_unwritable_path(tmp_path):
    file_path = tmp_path / "a_file"
    file_path.write_text("x")
    with pytest.raises(workdirs.WorkdirError, match="is a file, not a folder"):
        workdirs.prepare(str(file_path))
    with pytest.raises(workdirs.WorkdirError, match="cannot be written"):
        workdirs.prepare(str(file_path / "below"))


_HOLDER = (
    "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); "
    "time.sleep(600)"
)


def test_lock_refuses_a_live_holder_and_not_a_killed_one(tmp_path):
    lock_file = tmp_path / workdirs.LOCK_NAME
    lock_file.write_text("12345")  # the pid a holder would have written
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(lock_file)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(workdirs.WorkdirError, match=r"in use by another training process \(pid 12345\)"):
            with workdirs.exclusive_lock(tmp_path):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with workdirs.exclusive_lock(tmp_path):  # the kernel dropped the killed holder's lock
        assert lock_file.read_text() == str(os.getpid())


def test_manifest_lists_exactly_the_written_members_and_catches_changes(tmp_path):
    members = tmp_path / "members"
    members.mkdir()
    for name in ("ticket_0.keras", "ticket_1.keras", "stray.keras"):
        (members / name).write_bytes(name.encode() * 10)
    workdirs.write_record(tmp_path, fashion_mnist_defaults())
    with pytest.raises(workdirs.WorkdirError, match="has not finished"):
        workdirs.manifest_members(tmp_path)
    workdirs.write_manifest(str(members), [str(members / "ticket_0.keras"), str(members / "ticket_1.keras")])
    assert workdirs.manifest_members(tmp_path) == [str(members / "ticket_0.keras"), str(members / "ticket_1.keras")]
    (members / "ticket_1.keras").write_bytes(b"")  # a 0-byte ticket
    with pytest.raises(workdirs.WorkdirError, match=r"ticket_1.keras is damaged or was changed after training \(0 bytes"):
        workdirs.manifest_members(tmp_path)
    workdirs.clear_manifest(str(members))
    assert not (members / workdirs.MANIFEST_NAME).exists()


def test_binary_refuses_a_workdir_locked_by_another_process(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    with workdirs.exclusive_lock(workdir):
        result = _binary("tf_freetickets.train", *SMALL, f"--workdir={workdir}")
    assert result.returncode == 2, result.stderr[-2000:]
    assert _error_lines(result) == [
        f"error: --workdir={workdir} is in use by another training process (pid {os.getpid()}); wait for it to end "
        "or pass another --workdir."
    ]
    assert "Traceback" not in result.stderr and not (workdir / workdirs.RECORD_NAME).exists()


def test_evaluate_and_export_refuse_an_unfinished_run(tmp_path):
    workdirs.write_record(tmp_path, fashion_mnist_defaults())
    (tmp_path / "members").mkdir()
    (tmp_path / "members" / "ticket_0.keras").write_bytes(b"")
    for module, extra in (("tf_freetickets.evaluate", []), ("tf_freetickets.export_main", [f"--output={tmp_path / 'o'}"])):
        result = _binary(module, f"--source={tmp_path}", *extra)
        assert result.returncode == 2, result.stderr[-2000:]
        assert _error_lines(result) == [
            f"error: The run in {tmp_path} has not finished (no members/manifest.json); rerun its train command to finish it."
        ]


@needs_data
@pytest.mark.slow
def test_binary_refuses_another_config_and_evaluate_reads_only_the_runs_members(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / workdirs.LOCK_NAME).write_text("999999")  # stale: left by a killed run, no holder
    first = _binary("tf_freetickets.train", *SMALL, f"--workdir={workdir}")
    assert first.returncode == 0, first.stderr[-3000:]
    results = (workdir / "results.json").read_text()
    manifest = json.loads((workdir / "members" / workdirs.MANIFEST_NAME).read_text())
    assert [entry["file"] for entry in manifest["members"]] == ["member_0.keras"]

    changed = _binary("tf_freetickets.train", *SMALL, f"--workdir={workdir}", "--config.sparse.sparsity=0.5", "--config.epochs=2")
    assert changed.returncode == 2
    assert len(_error_lines(changed)) == 1 and "Traceback" not in changed.stderr
    assert "holds a run with another config (epochs 1 -> 2, sparse.sparsity 0.9 -> 0.5)" in changed.stderr
    assert (workdir / "results.json").read_text() == results  # nothing overwritten

    # A stray member in members/ (another run's) is not part of this run's ensemble.
    import shutil

    shutil.copy(workdir / "members" / "member_0.keras", workdir / "members" / "member_7.keras")
    started = time.time()
    evaluated = _binary("tf_freetickets.evaluate", f"--source={workdir}", "--ood=False", "--corruptions=none")
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert json.loads((workdir / "evaluation.json").read_text())["results"]["members"] == 1
    assert "loaded 1 members" in evaluated.stdout and time.time() - started < 300
    assert "s] test images: 10000 x 1 members" in evaluated.stdout  # a progress line per set


def test_recorded_config_prefers_the_run_record(tmp_path):
    assert workdirs.recorded_config(tmp_path) == {}
    (tmp_path / "results.json").write_text(json.dumps({"config": {"dataset": "cifar10"}}))
    assert workdirs.recorded_config(tmp_path)["dataset"] == "cifar10"
    config = fashion_mnist_defaults()
    config.dataset = "svhn_cropped"
    workdirs.write_record(tmp_path, config)  # written before training: there even when results.json is not
    assert workdirs.recorded_config(tmp_path)["dataset"] == "svhn_cropped"


def test_a_field_added_after_the_record_resumes_only_at_its_default(tmp_path):
    config = fashion_mnist_defaults()
    workdirs.write_record(tmp_path, config)
    record = json.loads((tmp_path / workdirs.RECORD_NAME).read_text())
    del record["config"]["fused_batchnorm"]  # a run recorded before the field existed
    (tmp_path / workdirs.RECORD_NAME).write_text(json.dumps(record))
    # Before the field existed BatchNorm was Keras' own layer: today's default (True) would change the run.
    with pytest.raises(workdirs.WorkdirError, match=r"fused_batchnorm '<absent>' -> True"):
        workdirs.check_record(tmp_path, config)
    config.fused_batchnorm = False  # the behaviour the record was made with resumes
    assert workdirs.check_record(tmp_path, config) is True
    del record["config"]["deterministic"]  # a field whose default kept the earlier behaviour resumes at it
    record["config"]["fused_batchnorm"] = False
    (tmp_path / workdirs.RECORD_NAME).write_text(json.dumps(record))
    assert workdirs.check_record(tmp_path, config) is True


def _small_ensemble_config():
    config = fashion_mnist_defaults()
    config.train_examples, config.batch_size, config.width, config.epochs, config.verbose = 256, 64, 0.25, 1, 0
    config.sparse.update_every = 2
    config.ensemble.kind, config.ensemble.num_members = "independent", 2
    return config


@pytest.mark.slow
@needs_data
def test_a_finished_run_stays_finished_until_a_rerun_has_written_all_its_members(tmp_path, monkeypatch):
    from tf_freetickets.deploy import saved_model
    from tf_freetickets.experiments import run_context, runner

    runner.run(_small_ensemble_config(), str(tmp_path))
    manifest = (tmp_path / "members" / workdirs.MANIFEST_NAME).read_text()

    def damaged_checkpoint(*args):
        raise workdirs.WorkdirError("injected failure before any member is written")

    with monkeypatch.context() as patch:
        patch.setattr(run_context, "restore_latest", damaged_checkpoint)
        with pytest.raises(workdirs.WorkdirError, match="injected"):
            runner.run(_small_ensemble_config(), str(tmp_path))
    assert len(workdirs.manifest_members(tmp_path)) == 2  # still finished, its files as listed

    real, calls = saved_model.export_member, []

    def fail_on_the_second_member(model, path, input_range=None):
        calls.append(path)
        if len(calls) == 2:
            raise OSError("disk full (injected)")
        return real(model, path, input_range)

    with monkeypatch.context() as patch:
        patch.setattr(saved_model, "export_member", fail_on_the_second_member)
        with pytest.raises(OSError, match="injected"):
            runner.run(_small_ensemble_config(), str(tmp_path))
    assert (tmp_path / "members" / workdirs.MANIFEST_NAME).read_text() == manifest
    assert len(workdirs.manifest_members(tmp_path)) == 2  # the half-written rerun touched none of them

    runner.run(_small_ensemble_config(), str(tmp_path))  # a complete rerun replaces the members and the manifest
    assert [os.path.basename(p) for p in workdirs.manifest_members(tmp_path)] == ["member_0.keras", "member_1.keras"]
    assert sorted(os.listdir(tmp_path / "members")) == [
        "manifest.json", "member_0", "member_0.keras", "member_1", "member_1.keras"
    ]  # fmt: skip


def test_deleting_run_lock_does_not_let_a_second_run_in(tmp_path):
    with workdirs.exclusive_lock(tmp_path):
        os.remove(tmp_path / workdirs.LOCK_NAME)  # a user "cleaning up" while the run trains
        with pytest.raises(workdirs.WorkdirError, match="is in use by another training process"):
            with workdirs.exclusive_lock(tmp_path):
                pass
    with workdirs.exclusive_lock(tmp_path):  # released at the end of the first run
        assert (tmp_path / workdirs.LOCK_NAME).read_text() == str(os.getpid())


def test_a_longer_run_on_a_finished_workdir_is_refused_with_the_way_to_continue(tmp_path):
    config = fashion_mnist_defaults()
    workdirs.write_record(tmp_path, config)
    config.epochs += 2
    with pytest.raises(workdirs.WorkdirError) as error:
        workdirs.check_record(tmp_path, config)
    message = str(error.value)
    assert "epochs 3 -> 5" in message and "cannot be extended in place" in message
    assert "README 'Continuing a finished run'" in message and len(message.splitlines()) == 1
    config.epochs -= 2
    config.sparse.sparsity = 0.5
    with pytest.raises(workdirs.WorkdirError) as error:
        workdirs.check_record(tmp_path, config)
    assert "extended" not in str(error.value)  # the hint only where the run's length changed
