"""The evaluate and export binaries on a folder of saved members."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import tf_freetickets as tft
from tf_freetickets.data import DEFAULT_DIR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
needs_data = pytest.mark.skipif(not os.path.isdir(DEFAULT_DIR), reason=f"Fashion-MNIST not installed at {DEFAULT_DIR}")


@pytest.fixture(scope="module")
def members_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("run") / "members"
    folder.mkdir()
    for seed in range(2):
        keras.utils.set_random_seed(seed)
        model = tft.sparsify(tft.models.small_cnn(width=0.25), 0.8, seed=seed)
        model.save(folder / f"member_{seed}.keras")
    return folder


def _run(module, *args):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)


@needs_data
def test_evaluate_with_ood_and_corruptions(members_dir, tmp_path):
    output = tmp_path / "eval.json"
    result = _run(
        "tf_freetickets.evaluate", f"--source={members_dir.parent}", f"--output={output}", "--ood_examples=300",
        "--corruptions=gaussian_noise,contrast", "--corruption_examples=200",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads(output.read_text())["results"]
    assert sorted(saved["ood"]) == ["digits", "gaussian_noise", "natural_patches", "uniform_noise"]
    assert all(0 <= v["auroc"] <= 1 and 0 <= v["fpr95"] <= 1 for v in saved["ood"].values())
    assert saved["ood_fpr95"] == pytest.approx(np.mean([v["fpr95"] for v in saved["ood"].values()]))
    assert sorted(saved["corruption"]) == ["contrast", "gaussian_noise"]
    assert sorted(saved["corruption"]["contrast"]) == ["1", "2", "3", "4", "5"]
    cells = [c["accuracy"] for per in saved["corruption"].values() for c in per.values()]
    assert saved["corruption_accuracy"] == pytest.approx(np.mean(cells))
    assert "| corruption | s1 | s2 | s3 | s4 | s5 |" in result.stdout
    bad = _run("tf_freetickets.evaluate", f"--source={members_dir.parent}", "--ood=False", "--corruptions=rain")
    assert bad.returncode == 2 and "Unknown corruptions ['rain']" in bad.stderr


@needs_data
def test_evaluate_writes_table_and_json(members_dir, tmp_path):
    output = tmp_path / "eval.json"
    result = _run(
        "tf_freetickets.evaluate", f"--source={members_dir.parent}", f"--output={output}", "--ood=False", "--corruptions=none"
    )
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads(output.read_text())
    assert saved["results"]["members"] == 2
    assert 0 <= saved["results"]["accuracy"] <= 1 and saved["results"]["nll"] > 0
    header = next(line for line in result.stdout.splitlines() if line.startswith("run"))
    assert header.split()[:4] == ["run", "M", "acc", "NLL"]


@needs_data
def test_evaluate_per_member_scores_each_member_alone(members_dir, tmp_path):
    output = tmp_path / "eval.json"
    result = _run(
        "tf_freetickets.evaluate", f"--source={members_dir.parent}", f"--output={output}", "--ood=False",
        "--corruptions=none", "--per_member=True", "--name=pair",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    saved = json.loads(output.read_text())
    x_test, y_test = tft.data.load_split("fashion_mnist", "test")
    for i, member_result in enumerate(saved["member_results"]):
        model = keras.models.load_model(members_dir / f"member_{i}.keras")
        predicted = model.predict(x_test.astype(np.float32) / 255.0, verbose=0).argmax(-1)
        assert member_result["members"] == 1
        assert member_result["accuracy"] == pytest.approx(np.mean(predicted == y_test), abs=1e-6)
    assert [line.split()[0:3] for line in result.stdout.splitlines() if line.startswith("pair member")] == [
        ["pair", "member", "1"], ["pair", "member", "2"]]  # fmt: skip


def test_export_writes_a_reloadable_ensemble(members_dir, tmp_path):
    output = tmp_path / "ensemble"
    result = _run("tf_freetickets.export_main", f"--source={members_dir}", f"--output={output}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "2 members, reload max |diff| = 0.00e+00" in result.stdout
    assert sorted(os.listdir(f"{output}_members")) == ["member_0", "member_1"]
    import tensorflow as tf

    loaded = tf.saved_model.load(str(output))
    x = np.random.default_rng(1).random((3, 28, 28, 1)).astype("float32")
    assert tuple(loaded.member_probabilities(x).shape) == (2, 3, 10)


@pytest.mark.parametrize("runtime", ["saved_model", "tflite"])
def test_export_fastest_writes_the_chosen_form_and_checks_it(members_dir, tmp_path, runtime):
    import re

    output = tmp_path / ("served.tflite" if runtime == "tflite" else "served")
    result = _run("tf_freetickets.export_main", f"--source={members_dir}", f"--output={output}", f"--fastest={runtime}",
                  "--fastest_batch=2")  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    forms = ("stacked", "compacted", "compacted_offsets", "grouped") if runtime == "tflite" else (
        "members", "stacked", "compacted", "compacted_offsets")
    for form in forms:  # every candidate timed at the serving batch, then the choice
        assert re.search(rf"  {form} +[0-9.]+ ms per batch of 2 ", result.stdout), result.stdout
    chosen = re.search(r"wrote .*: 2 members as the (\w+) form \(" + runtime + r"\), reload max \|diff\| = (\S+)", result.stdout)
    assert chosen and chosen.group(1) in forms and float(chosen.group(2)) <= 1e-5, result.stdout
    assert os.path.isfile(output) if runtime == "tflite" else os.path.isfile(output / "saved_model.pb")
    members = tmp_path / "served_members"
    assert sorted(os.listdir(members)) == ["member_0", "member_1"]


def test_export_fastest_tflite_refuses_a_folder_output_in_one_line(members_dir, tmp_path):
    result = _run("tf_freetickets.export_main", f"--source={members_dir}", f"--output={tmp_path}", "--fastest=tflite")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"--output={tmp_path} is a folder; pass --output=<a TFLite file path in a writable place>" in result.stderr


def test_export_fastest_never_replaces_a_folder_of_something_else(members_dir, tmp_path):
    workdir = tmp_path / "workdir"
    workdir.mkdir()
    (workdir / "results.json").write_text("{}")
    result = _run("tf_freetickets.export_main", f"--source={members_dir}", f"--output={workdir}", "--fastest=saved_model")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"error: {workdir} holds files that are not a SavedModel, and export_fastest replaces" in result.stderr
    assert sorted(os.listdir(workdir)) == ["results.json"]  # untouched
    misnamed = _run("tf_freetickets.export_main", f"--source={members_dir}", f"--output={workdir}/results.json",
                    "--fastest=tflite")  # fmt: skip
    assert misnamed.returncode == 2 and "is not a .tflite file path" in misnamed.stderr
    assert (workdir / "results.json").read_text() == "{}"


@pytest.mark.parametrize(
    "flag, message",
    [("--input_range=0,1", "--input_range applies to SavedModels; a TFLite file has no input contract"),
     ("--fastest_batch=4", None)],
)  # fmt: skip
def test_export_refuses_flags_it_would_ignore(members_dir, tmp_path, flag, message):
    extra = ["--fastest=tflite"] if message else []
    result = _run("tf_freetickets.export_main", f"--source={members_dir}", f"--output={tmp_path / 'e.tflite'}", flag, *extra)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert (message or "--fastest_batch only applies with --fastest=saved_model or --fastest=tflite") in result.stderr


@pytest.mark.parametrize("module", ["tf_freetickets.evaluate", "tf_freetickets.export_main"])
def test_missing_members_give_one_error_line(module, tmp_path):
    args = [f"--source={tmp_path / 'nothing'}"] + ([f"--output={tmp_path / 'o'}"] if "export" in module else [])
    result = _run(module, *args)
    assert result.returncode == 2
    assert "error: No ensemble members at" in result.stderr and "Traceback" not in result.stderr
