"""The decided study's page (tools/reporting/decided_page.py) from synthetic records of every cell and from a real smoke run."""

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from reporting.decided_claims import decided_claims
from reporting.decided_page import (
    DECIDED_BEGIN_MARKER,
    DECIDED_END_MARKER,
    FOREST_FIGURE,
    complete_groups,
    generated_decided_markdown,
    group_midpoints,
    write_decided_report,
)
from reporting.long_study import DECIDED_SEEDS, fashion_mnist_decided_study

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "tests", "data", "long_v2_smoke_records.json")  # 1 epoch: dense x3, dense_ensemble, cigl_0.8
OOD_SETS = ("digits", "uniform_noise", "gaussian_noise", "natural_patches")

# Per row: accuracy, NLL, ECE and training FLOPs (x 1e12) means; every other figure follows from them.
MEANS = {
    "dense": (0.898, 0.35, 0.047, 1.0), "dense_ensemble": (0.908, 0.28, 0.023, 3.0), "dnc_s2": (0.898, 0.30, 0.018, 1.0),
    "rigl_0.8": (0.893, 0.33, 0.036, 0.21), "dst_0.8": (0.9036, 0.282, 0.0145, 0.62), "gmp_0.8": (0.895, 0.33, 0.035, 0.39),
    "rigl_0.9": (0.887, 0.33, 0.030, 0.13), "dst_0.9": (0.897, 0.29, 0.010, 0.38), "gmp_0.9": (0.892, 0.33, 0.03, 0.3),
    "rigl_steplr_0.8": (0.886, 0.36, 0.043, 0.21), "cigl_0.8": (0.894, 0.33, 0.0325, 0.22),
    "edst_0.8": (0.888, 0.32, 0.021, 0.81), "rigl_steplr_0.9": (0.880, 0.36, 0.036, 0.13),
    "cigl_0.9": (0.884, 0.33, 0.027, 0.14), "edst_0.9": (0.883, 0.32, 0.014, 0.6),
    "dst_ft_members_0.8": (0.891, 0.34, 0.035, 0.2), "dst_ft_0.8": (0.902, 0.29, 0.016, 0.6),
    "dense_narrow": (0.894, 0.36, 0.05, 0.5), "narrow_pair": (0.9036, 0.30, 0.02, 1.0), "dnc_s2_wd": (0.903, 0.29, 0.02, 1.0),
}  # fmt: skip


def _metrics(cell, rng):
    accuracy, nll, ece, flops = MEANS[cell]
    noise = lambda value, scale=0.02: float(value * (1 + scale * rng.standard_normal()))  # noqa: E731
    metrics = {"accuracy": float(accuracy + 0.001 * rng.standard_normal()), "nll": noise(nll), "ece": noise(ece),
               "ece_10bins": noise(ece), "brier": noise(0.45 * nll), "ts_nll": noise(0.9 * nll), "ts_ece": noise(0.5 * ece),
               "ts_brier": noise(0.44 * nll), "temperature": noise(1.2), "corruption_accuracy": noise(accuracy - 0.16),
               "corruption_ece": noise(2 * ece), "training_flops": flops * 1e12, "inference_flops": 1e6,
               "gibbs_nll": noise(1.15 * nll), "adaptive_ece": noise(ece), "brier_reliability": noise(0.03),
               "brier_resolution": noise(0.72), "brier_uncertainty": 0.9,
               "members": 3 if cell in ("dense_ensemble", "dnc_s2") or cell.startswith(("dst", "edst")) else 1}  # fmt: skip
    metrics["members"] = 1 if cell == "dst_ft_members_0.8" else 2 if cell in ("narrow_pair", "dnc_s2_wd") else metrics["members"]
    for i, name in enumerate(OOD_SETS):  # the near-OoD natural patches are the hardest set
        metrics[f"ood_auroc_{name}"] = noise(min(0.99, 0.6 + 0.1 * i + 0.3 * (1 - nll)) if i < 3 else 0.7)
        metrics[f"ood_fpr95_{name}"] = noise(0.9 - 0.1 * i if i < 3 else 0.85)
    for key in ("ood_auroc", "ood_fpr95"):
        metrics[key] = float(np.mean([metrics[f"{key}_{name}"] for name in OOD_SETS]))
    return metrics


def synthetic_payload(seed_groups=DECIDED_SEEDS, epochs=100):
    """A JSON payload with a record for every run of every cell of the decided study, for `seed_groups`."""
    rng = np.random.default_rng(0)
    cells = fashion_mnist_decided_study(epochs=epochs)
    records = []
    for group in seed_groups:
        for cell in cells:
            for seed in [group] if cell.composed_of else cell.run_seeds(group):
                records.append({"cell": cell.name, "family": cell.family, "sparsity": cell.sparsity, "seed": seed,
                                "command": f"python -m tf_freetickets.train --config.seed={seed} --workdir=/tmp/x",
                                "train_seconds": 60.0, "eval_seconds": 6.0, "cpu": "CPU A",
                                "train_cpu_seconds": 120.0 * MEANS[cell.name][3] * (1.1 if seed % 2 else 0.9),
                                "metrics": _metrics(cell.name, rng)})  # fmt: skip
    study = {"dataset": "fashion_mnist", "study": "long_v2", "train_examples": 5000, "learning_rate": 0.025,
             "ood_sets": list(OOD_SETS), "epochs": epochs, "sparsities": [0.8, 0.9], "ood_examples": 1000,
             "corruption_examples": 1000, "seeds": list(seed_groups),
             "cells": [{"name": c.name, "replicas": c.replicas, "composed_of": c.composed_of} for c in cells]}  # fmt: skip
    return {"study": study, "environment": {"tensorflow": "2.x", "keras": "3.x", "cpus": 2, "date": "today"}, "records": records}


def _claim_line(text, claim_text):
    lines = [line for line in text.splitlines() if line.startswith("| ") and f" | {claim_text}" in line]
    assert len(lines) == 1, (claim_text, lines)
    return lines[0]


def test_page_from_every_cell_of_five_seed_groups_decides_every_claim(tmp_path):
    page = tmp_path / "RESULTS.md"
    page.write_text(f"# Results\n\nprose before\n\n{DECIDED_BEGIN_MARKER}\nold\n{DECIDED_END_MARKER}\n\nprose after\n")
    payload = synthetic_payload()
    written = write_decided_report(payload, str(page), str(tmp_path / "fig"))
    text = page.read_text()
    assert text.startswith("# Results\n\nprose before\n\n" + DECIDED_BEGIN_MARKER) and text.endswith("\n\nprose after\n")
    assert "\nold\n" not in text
    claims_table = text.split("### Claims")[1].split("**Verdicts.**")[0]
    assert "incomplete" not in claims_table and "not measured" not in claims_table
    assert f"{len(decided_claims())} claims, {len(decided_claims())} with a p value (the Holm family)" in text
    dst = _claim_line(text, "DST ensemble (M=3, S=0.8): higher accuracy than the dense single model")
    assert "| detectable (80% power, Holm level) |" in text and dst.split("|")[7].strip().startswith("±0.0")
    assert "`dst_0.8` 0.90" in dst and "(n=5)" in dst and "(n=15)" in dst and dst.endswith("| **holds** |")
    assert _claim_line(text, "RigL at S=0.8 matches the dense model").endswith("| **does not hold** |")
    assert _claim_line(text, "S=2 co-trained narrow networks").endswith("| **inconclusive** |")
    assert _claim_line(text, "EDST ensemble (M=3, S=0.8): higher accuracy").endswith("| **does not hold** |")
    flops = _claim_line(text, "DST ensemble trains with at most the dense model's FLOPs")
    assert "(here 0.62x is this small CNN's FLOPs profile" in flops and "1.02x" in flops and "| 0 |" in flops
    assert "`dense + TS` " in _claim_line(text, "DST ensemble (M=3, S=0.8): lower ECE than the dense model + temperature")
    assert "midpoint of `dense`" in _claim_line(text, "DST ensemble approaches the dense deep ensemble")
    assert "24 claims, 24 with a p value" in text  # the OoD table, set by set: its own Holm family
    assert "| dense + TS | 15 |" in text and "| dst_ft_0.8 | 5 |" in text
    baselines = text.split("### The metrics other libraries report")[1].split("### Runs")[0]
    header = "| run | runs | NLL | Gibbs NLL (members' mean) | ECE (15 bins) | ECE (10 bins) | adaptive ECE | Brier |"
    assert header in baselines and "| Brier uncertainty |" in baselines
    dst_rows = [r["metrics"] for r in payload["records"] if r["cell"] == "dst_0.8"]
    gibbs = np.mean([m["gibbs_nll"] for m in dst_rows]), np.std([m["gibbs_nll"] for m in dst_rows], ddof=1)
    assert f"| dst_0.8 | 5 | {np.mean([m['nll'] for m in dst_rows]):.4f} ± " in baselines
    assert f"{gibbs[0]:.4f} ± {gibbs[1]:.4f} |" in baselines.split("| dst_0.8 |")[1].splitlines()[0]
    assert "| 0.9000 ± 0.0000 |" in baselines.split("| dense |")[1].splitlines()[0]
    assert "**Progress:** 145 of 145 planned records; 20 of 20 rows complete" in text
    assert "| dst_ft_members_0.8 | 15 | 15 | 0, 10, 20, 30, 40 |" in text
    assert "| dense_narrow | 10 | 10 | 0, 10, 20, 30, 40 |" in text and "| narrow_pair | 5 | 5 |" in text
    diagnostics = text.split("### DNC: where its result comes from")[1].split("### Temperature scaling")[0]
    assert "4 claims, 4 with a p value (the Holm family)" in diagnostics
    pair = _claim_line(diagnostics, "two independent narrow networks (width / √2, the wide network's weight decay")
    assert "`narrow_pair` 0.90" in pair and "(n=5)" in pair and "`dense` 0.89" in pair and pair.endswith("| **holds** |")
    undivided = "DNC (S=2) with the members at the wide network's weight decay: higher accuracy than with"
    assert "`dnc_s2_wd` " in _claim_line(diagnostics, undivided)
    assert "narrow_pair" not in claims_table  # the diagnostics are not in the paper claims' Holm family
    runs = text.split("### Runs")[1].split("### Progress")[0]
    assert '"train CPU (× dense)" is over the mean of 15 clocked dense runs.' in runs
    assert runs.splitlines()[4].endswith("| train FLOPs (× dense) | train CPU-min | train CPU (× dense) |")
    dense_cpu = [120.0 * (1.1 if s % 2 else 0.9) / 60 for g in DECIDED_SEEDS for s in (g, g + 1, g + 2)]
    dense_line = runs.split("| dense |")[1].splitlines()[0]
    assert f"| 1.000 | {np.mean(dense_cpu):.1f} ± {np.std(dense_cpu, ddof=1):.1f} | 1.00 ± 0.10 |" in dense_line
    dst_rel = 120.0 * 0.62 * 0.9 / 60 / np.mean(dense_cpu)  # composed records carry seeds 0, 10, ...: all even
    assert runs.split("| dst_0.8 |")[1].splitlines()[0].endswith(f"| {dst_rel:.2f} ± 0.00 |")
    assert f"![Forest plot of the claims](fig/{FOREST_FIGURE})" in text
    assert written == [str(page), str(tmp_path / "fig" / FOREST_FIGURE)]
    png = (tmp_path / "fig" / FOREST_FIGURE).read_bytes()
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    # Idempotent: the same JSON gives the same bytes.
    write_decided_report(json.loads(json.dumps(payload)), str(page), str(tmp_path / "fig"))
    assert page.read_text() == text and (tmp_path / "fig" / FOREST_FIGURE).read_bytes() == png


def test_rows_with_fewer_than_five_seed_groups_get_no_verdict():
    text = generated_decided_markdown(synthetic_payload(seed_groups=(0,)))
    # dst_0.8 has one record, dense three: one seed group each, and no CI from one run.
    line = _claim_line(text, "DST ensemble (M=3, S=0.8): higher accuracy than the dense single model")
    assert line.endswith("| incomplete (1 seed groups of 5) |") and "[" not in line.split("|")[6]
    assert _claim_line(text, "RigL at S=0.8 matches the dense model").endswith("| incomplete (1 seed groups of 5) |")
    assert "**Progress:** 29 of 145 planned records; 0 of 20 rows complete" in text
    assert "| dense | 15 | 3 | 0 |" in text


def test_rows_with_replicas_count_seed_groups_not_runs():
    # Two seed groups give rigl_0.8 and dense six runs each: more than 5, yet two groups of 5, so no verdict.
    payload = synthetic_payload(seed_groups=(0, 10))
    groups = complete_groups(payload)
    assert groups[("rigl_0.8", "accuracy")] == 2 and groups[("dst_0.8", "ece")] == 2
    text = generated_decided_markdown(payload)
    assert "(n=6)" in _claim_line(text, "RigL at S=0.8 matches the dense model")
    assert _claim_line(text, "RigL at S=0.8 matches the dense model").endswith("| incomplete (2 seed groups of 5) |")
    assert "fewer than 5 complete seed groups" in text
    # A group lacking one of its runs is not complete.
    payload["records"] = [r for r in payload["records"] if not (r["cell"] == "rigl_0.8" and r["seed"] == 11)]
    assert complete_groups(payload)[("rigl_0.8", "accuracy")] == 1
    # So is a group one of whose runs lacks the metric a claim reads.
    del payload["records"][0]["metrics"]["ece"]  # dense seed 0
    assert complete_groups(payload)[("dense", "ece")] == 1 and complete_groups(payload)[("dense", "accuracy")] == 2


def test_midpoints_are_taken_within_each_seed_group():
    payload = synthetic_payload(seed_groups=(0, 10))
    claim = next(c for c in decided_claims() if c.kind == "closes_gap")
    by_run = {(r["cell"], r["seed"]): r["metrics"]["accuracy"] for r in payload["records"]}
    want = [0.5 * np.mean([by_run[("dense", g + k)] for k in range(3)]) + 0.5 * by_run[("dense_ensemble", g)]
            for g in (0, 10)]  # fmt: skip
    assert group_midpoints(payload, [claim]) == {("dense", "dense_ensemble", "accuracy"): pytest.approx(want)}
    payload["records"] = [r for r in payload["records"] if (r["cell"], r["seed"]) != ("dense", 12)]
    assert group_midpoints(payload, [claim])[("dense", "dense_ensemble", "accuracy")] == pytest.approx(want[:1])
    line = _claim_line(generated_decided_markdown(synthetic_payload()), "DST ensemble approaches the dense deep ensemble")
    assert "midpoint of `dense`" in line and ", per seed group 0.9" in line and line.count("(n=5)") == 3


def test_page_from_the_one_epoch_smoke_run(tmp_path):
    shutil.copy(SMOKE, tmp_path / "records.json")
    payload = json.loads((tmp_path / "records.json").read_text())
    page = tmp_path / "RESULTS.md"
    written = write_decided_report(payload, str(page), str(tmp_path))
    text = page.read_text()
    assert text.count(DECIDED_BEGIN_MARKER) == 1 and text.count(DECIDED_END_MARKER) == 1
    cigl = _claim_line(text, "lower ECE at S=0.8 than the dense model + temperature scaling")
    assert cigl.endswith("| incomplete (1 seed groups of 5) |") and "`dense + TS` " in cigl and "(n=3)" in cigl
    assert _claim_line(text, "S=2 co-trained narrow networks").endswith("| – | not measured |")
    assert "46 claims, 0 with a p value (the Holm family); incomplete 1, not measured 45." in text
    assert "**Progress:** 5 of 145 planned records" in text and "| cigl_0.8 | 5 | 1 | 0 |" in text
    dense = payload["records"][0]["metrics"]
    assert f"| dense + TS | 3 | {np.mean([r['metrics']['ts_nll'] for r in payload['records'][:3]]):.4f} ±" in text
    assert f"{dense['ood_auroc_natural_patches']:.4f}" not in text  # a mean over the three dense runs, not one run
    before = [open(p, "rb").read() for p in written]
    write_decided_report(payload, str(page), str(tmp_path))
    assert [open(p, "rb").read() for p in written] == before


def test_ood_sets_come_from_the_records_when_the_study_does_not_name_them():
    payload = synthetic_payload(seed_groups=(0,))
    del payload["study"]["ood_sets"]
    text = generated_decided_markdown(payload)
    for name in OOD_SETS:
        assert f"AUROC {name.replace('_', ' ')}" in text and f"lower FPR at 95% TPR on {name.replace('_', ' ')}" in text
    assert "OoD sets digits, gaussian_noise, natural_patches, uniform_noise of 1000 images" in text


@pytest.mark.slow
def test_reproduce_long_v2_report_only_builds_the_section_or_says_the_json_is_missing(tmp_path):
    def reproduce(json_path):
        cmd = [sys.executable, "tools/reproduce.py", "--study=long_v2", "--report_only", f"--json={json_path}",
               f"--results_md={tmp_path / 'RESULTS.md'}", f"--figures_dir={tmp_path / 'figures'}"]  # fmt: skip
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600, env=env)

    missing = reproduce(tmp_path / "missing.json")
    assert missing.returncode == 2 and not (tmp_path / "RESULTS.md").exists()
    assert missing.stderr.strip().splitlines() == [
        f"error: no results JSON at {tmp_path / 'missing.json'}; run without --report_only first."
    ]
    shutil.copy(SMOKE, tmp_path / "records.json")
    built = reproduce(tmp_path / "records.json")
    assert built.returncode == 0, built.stderr[-3000:]
    assert f"5 records in {tmp_path / 'records.json'}: dense 3, dense_ensemble 1, cigl_0.8 1" in built.stdout
    text = (tmp_path / "RESULTS.md").read_text()
    assert DECIDED_BEGIN_MARKER in text and "incomplete (1 seed groups of 5)" in text
    assert (tmp_path / "figures" / FOREST_FIGURE).exists()
