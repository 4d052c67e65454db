"""evaluate and export_main: outputs that cannot be written and half-written runs end in one line, exit 2.

Read-only folders are made with chmod; as root (where chmod does not stop
writes) the binary runs behind a prelude whose `open`/`os.makedirs` refuse
writes under the folder with EACCES, which is what a read-only folder does.
"""

import errno
import json
import os
import stat
import subprocess
import sys
import textwrap

import keras
import pytest

import tf_freetickets as tft
from tf_freetickets.data import DEFAULT_DIR
from tf_freetickets.experiments import workdir
from tf_freetickets.experiments.config import fashion_mnist_defaults

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_data = pytest.mark.skipif(not os.path.isdir(DEFAULT_DIR), reason=f"Fashion-MNIST not installed at {DEFAULT_DIR}")
FAST = ["--ood=False", "--corruptions=none"]

_READ_ONLY_PRELUDE = """
import builtins, errno, os, runpy, sys
read_only = os.path.abspath(sys.argv.pop(1))
def _refused(path):
    path = os.path.abspath(os.fspath(path))
    return path == read_only or path.startswith(read_only + os.sep)
def _error(path):
    return PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
real_open, real_makedirs, real_mkdir = builtins.open, os.makedirs, os.mkdir
def guarded_open(file, mode="r", *args, **kwargs):
    if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax+") and _refused(file):
        raise _error(file)
    return real_open(file, mode, *args, **kwargs)
def guarded_makedirs(name, *args, **kwargs):
    if _refused(name) and not os.path.isdir(name):
        raise _error(name)
    return real_makedirs(name, *args, **kwargs)
def guarded_mkdir(name, *args, **kwargs):
    if _refused(name):
        raise _error(name)
    return real_mkdir(name, *args, **kwargs)
builtins.open, os.makedirs, os.mkdir = guarded_open, guarded_makedirs, guarded_mkdir
module = sys.argv.pop(1)
runpy.run_module(module, run_name="__main__", alter_sys=True)
"""


def _run(module, *args, read_only=None):
    """The binary's CompletedProcess; with `read_only`, that folder cannot be written (chmod, or the prelude as root)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    command = [sys.executable, "-m", module, *args]
    if read_only and os.geteuid() == 0:
        command = [sys.executable, "-c", textwrap.dedent(_READ_ONLY_PRELUDE), str(read_only), module, *args]
    mode = stat.S_IMODE(os.stat(read_only).st_mode) if read_only else None
    if read_only and os.geteuid() != 0:
        os.chmod(read_only, stat.S_IRUSR | stat.S_IXUSR)
    try:
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)
    finally:
        if mode is not None:
            os.chmod(read_only, mode)


def _one_error_line(result, message):
    assert result.returncode == 2, result.stderr[-3000:]
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert errors == [f"error: {message}"], result.stderr[-3000:]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A finished training workdir of 1 member (run_record.json, members/ with a manifest), and a stray member."""
    folder = tmp_path_factory.mktemp("run")
    members = folder / "members"
    members.mkdir()
    workdir.write_record(str(folder), fashion_mnist_defaults())
    for seed in range(2):
        keras.utils.set_random_seed(seed)
        tft.sparsify(tft.models.small_cnn(width=0.25), 0.8, seed=seed).save(members / f"member_{seed}.keras")
    workdir.write_manifest(str(members), [str(members / "member_0.keras")])  # member_1 is not the run's
    return folder


def test_evaluate_refuses_an_output_folder(run_dir, tmp_path):
    result = _run("tf_freetickets.evaluate", f"--source={run_dir}", f"--output={tmp_path}", *FAST)
    _one_error_line(
        result,
        f"--output={tmp_path} is a folder; pass --output=<a JSON file path in a writable place> "
        f"(e.g. {tmp_path / 'evaluation.json'}).",
    )


def test_evaluate_on_a_read_only_workdir_says_where_to_write(run_dir):
    result = _run("tf_freetickets.evaluate", f"--source={run_dir}", *FAST, read_only=run_dir)
    _one_error_line(
        result,
        f"the evaluation JSON {run_dir / 'evaluation.json'} (default --output) cannot be written "
        f"({run_dir}: {os.strerror(errno.EACCES)}); pass --output=<a JSON file path in a writable place>.",
    )


def test_export_refuses_a_file_as_output(run_dir, tmp_path):
    path = tmp_path / "ensemble"
    path.write_text("a file")
    result = _run("tf_freetickets.export_main", f"--source={run_dir}", f"--output={path}")
    _one_error_line(
        result,
        f"--output={path}: {path} is a file, and a SavedModel is a folder; pass --output=<a folder path in a writable place>.",
    )
    assert path.read_text() == "a file"


def test_export_refuses_a_read_only_folder(run_dir, tmp_path):
    folder = tmp_path / "read_only"
    folder.mkdir()
    result = _run("tf_freetickets.export_main", f"--source={run_dir}", f"--output={folder / 'ensemble'}", read_only=folder)
    _one_error_line(
        result,
        f"--output={folder / 'ensemble'} cannot be written ({folder}: {os.strerror(errno.EACCES)}); pass "
        "--output=<a folder path in a writable place>.",
    )
    assert os.listdir(folder) == []


@pytest.mark.parametrize("module", ["tf_freetickets.evaluate", "tf_freetickets.export_main"])
def test_a_half_written_runs_members_folder_is_refused(run_dir, tmp_path, module):
    half = tmp_path / "half"
    (half / "members").mkdir(parents=True)
    workdir.write_record(str(half), fashion_mnist_defaults())
    for name in ("member_0.keras", "member_1.keras"):  # 2 of 3 members written, then killed: no manifest
        (half / "members" / name).write_bytes((run_dir / "members" / name).read_bytes())
    output = [f"--output={tmp_path / 'out'}"] if "export" in module else FAST
    result = _run(module, f"--source={half / 'members'}", *output)
    _one_error_line(
        result, f"The run in {half} has not finished (no members/manifest.json); rerun its train command to finish it."
    )


@needs_data
def test_evaluate_reads_a_workdirs_members_folder_through_its_manifest(run_dir, tmp_path):
    output = tmp_path / "evaluation.json"
    result = _run("tf_freetickets.evaluate", f"--source={run_dir / 'members'}", f"--output={output}", *FAST)
    assert result.returncode == 0, result.stderr[-3000:]
    assert json.loads(output.read_text())["results"]["members"] == 1  # member_1.keras is not in the manifest
