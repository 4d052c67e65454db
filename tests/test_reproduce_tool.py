"""tools/reproduce.py end to end on a slice of Fashion-MNIST: JSON of every figure, page and figures, resume."""

import json
import os
import subprocess
import sys

import pytest

from reporting.environment import cpu_model
from tf_freetickets.data import DEFAULT_DIR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not os.path.isdir(DEFAULT_DIR), reason=f"Fashion-MNIST not installed at {DEFAULT_DIR}"),
]

EXPECTED_KEYS = (
    "accuracy", "nll", "ece", "brier", "ood_auroc", "ood_auroc_digits", "ood_auroc_uniform_noise",
    "corruption_accuracy", "corruption_s5", "corruption_contrast", "training_flops", "inference_flops",
)  # fmt: skip


def _reproduce(tmp_path, *extra):
    cmd = [
        sys.executable, "tools/reproduce.py", "--cells=dense,dst_0.8", "--seeds=3", "--epochs=1",
        "--set=train_examples=256", "--set=batch_size=64", "--ood_examples=50", "--corruption_examples=40",
        f"--workdir={tmp_path / 'runs'}", f"--json={tmp_path / 'study.json'}", f"--results_md={tmp_path / 'RESULTS.md'}",
        f"--figures_dir={tmp_path / 'figures'}", *extra,
    ]  # fmt: skip
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def test_reproduce_writes_every_figure_and_resumes(tmp_path):
    first = _reproduce(tmp_path)
    assert "[2/2] dst_0.8 seed 3: accuracy" in first.stdout and "Ensemble member 1/1 (seed 3)" in first.stdout
    payload = json.loads((tmp_path / "study.json").read_text())
    assert payload["study"]["seeds"] == [3] and payload["study"]["extra_overrides"] == ["train_examples=256", "batch_size=64"]
    assert [r["cell"] for r in payload["records"]] == ["dense", "dst_0.8"]
    assert {r["cpu"] for r in payload["records"]} == {cpu_model()} and payload["environment"]["cpu"] == cpu_model()
    dense, dst = (r["metrics"] for r in payload["records"])
    for metrics in (dense, dst):
        for key in EXPECTED_KEYS:
            assert key in metrics, key
    assert dense["members"] == 1 and dst["members"] == 3 and "disagreement" in dst
    # Three members at 80% sparsity cost less than three dense runs and more than one sparse run.
    assert dst["inference_flops"] < 3 * dense["inference_flops"] * 0.5
    reliability = payload["records"][1]["reliability"]
    assert sum(reliability["counts"]) == 10000 and len(reliability["counts"]) == 15
    command = payload["records"][1]["command"]
    assert command.startswith("python -m tf_freetickets.train --config=configs/fashion_mnist_dst.py")
    assert "--config.seed=3" in command and "--config.train_examples=256" in command

    page = (tmp_path / "RESULTS.md").read_text()
    assert "| dst_0.8 | 1 |" in page and (tmp_path / "figures" / "reliability.png").exists()

    # Finished cells are read back, not retrained; --report_only rebuilds the same page from the JSON.
    second = _reproduce(tmp_path)
    assert "Ensemble member" not in second.stdout and "[2/2] dst_0.8 seed 3: accuracy" in second.stdout
    assert second.stdout.count("; read back") == 2 and "min left" not in second.stdout
    assert json.loads((tmp_path / "study.json").read_text())["records"] == payload["records"]
    (tmp_path / "RESULTS.md").unlink()
    _reproduce(tmp_path, "--report_only")
    assert (tmp_path / "RESULTS.md").read_text() == page

    # A new machine has only the committed JSON: its records are reused, nothing is retrained...
    import shutil

    shutil.rmtree(tmp_path / "runs")
    third = _reproduce(tmp_path)
    assert "Ensemble member" not in third.stdout
    assert json.loads((tmp_path / "study.json").read_text())["records"] == payload["records"]
    # ...unless they were made by another package version (or other study settings): then the cell trains again.
    stale = json.loads((tmp_path / "study.json").read_text())
    stale["study"]["package_version"] = "0.0.0"
    (tmp_path / "study.json").write_text(json.dumps(stale))
    fourth = _reproduce(tmp_path, "--cells=dense")
    assert "Ensemble member 1/1 (seed 3)" in fourth.stdout
