"""Reproduces the papers' claims at small scale: every method, two sparsities, several seeds, one JSON.

  python tools/reproduce.py                  # train + evaluate every cell x seed, then write the report
  python tools/reproduce.py --report_only    # rebuild docs/RESULTS.md's tables and docs/results/*.png from the JSON

The cells are `tf_freetickets.reporting.study.fashion_mnist_study`: dense single model, dense
ensemble (M=3), DST ensemble (M=3), EDST ensemble (M=3), RigL, gradual magnitude pruning (GMP, the
papers' dense-to-sparse baseline, same budget as RigL), CigL and Divide-and-Co-training (S=2)
on Fashion-MNIST (Debian's package) with the small CNN, at sparsities 0.8 and 0.9 where they
apply. Each (cell, seed) trains with `tf_freetickets.experiments.runner.run` in WORKDIR/<cell>/seed_<s>/ and
is evaluated on the test set (accuracy, NLL, ECE, Brier, member diversity, reliability bins), on
the offline OoD sets (sklearn digits, uniform and Gaussian noise; AUROC with predictive entropy)
and on the 13 CIFAR-10-C-style corruptions at 5 severities; its record.json also holds the exact
`python -m tf_freetickets.train` command of that cell. A finished (cell, seed) is not run again,
so an interrupted study resumes; so is one whose record is already in --json for the same study
settings and package version (a study longer than one machine's life resumes from the committed
JSON). The JSON (--json) holds the study, the environment and every
record; the report (tables between the markers of --results_md, and two PNGs) is made from it.

Rerun one cell: python tools/reproduce.py --cells=edst_0.8 --seeds=0 --workdir=out/one \
    --json=out/one/reproduce.json --results_md=out/one/RESULTS.md --figures_dir=out/one
"""

import datetime
import json
import os
import platform
import sys
import time

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing

from tf_freetickets.reporting.study import cell_config, fashion_mnist_study, rerun_command  # noqa: E402

_WORKDIR = flags.DEFINE_string("workdir", "out/reproduce", "Folder of the runs (one per cell and seed).")
_SEEDS = flags.DEFINE_list("seeds", ["0", "10", "20"], "Seeds; ensemble members of seed s use s, s+1, s+2.")
_EPOCHS = flags.DEFINE_integer("epochs", 4, "Epochs of every single-model run and of each member.")
_SPARSITIES = flags.DEFINE_list("sparsities", ["0.8", "0.9"], "Sparsities of the sparse cells.")
_CELLS = flags.DEFINE_list("cells", [], "Run only these cells (default: all).")
_SET = flags.DEFINE_multi_string("set", [], "Extra override for every cell, dotted.key=value (e.g. train_examples=2000).")
_OOD_EXAMPLES = flags.DEFINE_integer("ood_examples", 1000, "Images per OoD set (digits are capped at 1797).")
_CORRUPTION_EXAMPLES = flags.DEFINE_integer("corruption_examples", 1000, "Test images corrupted (first N of the test set).")
_JSON = flags.DEFINE_string("json", os.path.join(ROOT, "docs/results/reproduce.json"), "JSON of every figure.")
_RESULTS_MD = flags.DEFINE_string(
    "results_md", os.path.join(ROOT, "docs/RESULTS.md"), "Markdown page whose tables are rewritten."
)
_FIGURES_DIR = flags.DEFINE_string("figures_dir", os.path.join(ROOT, "docs/results"), "Folder of the PNG figures.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only rebuild the tables and figures from --json.")


def _selected_cells():
    cells = fashion_mnist_study(_EPOCHS.value, tuple(float(s) for s in _SPARSITIES.value))
    if not _CELLS.value:
        return cells
    known = {c.name: c for c in cells}
    unknown = [name for name in _CELLS.value if name not in known]
    if unknown:
        raise app.UsageError(f"Unknown cells {unknown}; the study has {sorted(known)}.")
    return [known[name] for name in _CELLS.value]


def _flatten(results, evaluation, corrupted):
    """The per-run figures the tables read, one flat dict of numbers."""
    keys = ("accuracy", "nll", "ece", "brier", "disagreement", "kl", "sparsity", "members", "member_accuracy_mean",
            "training_flops", "inference_flops", "dense_inference_flops")  # fmt: skip
    record = {k: results[k] for k in keys if k in results}
    record["ood_auroc"], record["ood_aupr"] = evaluation["ood_auroc"], evaluation["ood_aupr"]
    for name, cell in evaluation["ood"].items():
        record[f"ood_auroc_{name}"] = cell["auroc"]
    record["corruption_accuracy"] = corrupted["corruption_accuracy"]
    by_severity = {}
    for name, cells in corrupted["corruption"].items():
        accuracies = [cell["accuracy"] for cell in cells.values()]
        record[f"corruption_{name}"] = sum(accuracies) / len(accuracies)
        for severity, cell in cells.items():
            by_severity.setdefault(severity, []).append(cell["accuracy"])
    for severity, accuracies in by_severity.items():
        record[f"corruption_s{severity}"] = sum(accuracies) / len(accuracies)
    return record


def _committed_records(cells):
    """Records of --json made by this very study (same settings, cells and package version), by (cell, seed)."""
    if not os.path.exists(_JSON.value):
        return {}
    with open(_JSON.value) as f:
        payload = json.load(f)
    old, new = payload.get("study", {}), _study(cells)
    same = {key for key in new if key not in ("cells", "seeds") and old.get(key) == new[key]} == set(new) - {"cells", "seeds"}
    definitions = {c["name"]: c for c in old.get("cells", [])}
    current = {c["name"]: c for c in new["cells"]}
    return {
        (r["cell"], r["seed"]): r
        for r in payload.get("records", [])
        if same and definitions.get(r["cell"]) is not None and definitions[r["cell"]] == current.get(r["cell"])
    }


def _run_cell(cell, seed, test_data, committed):
    """Trains (or resumes) and evaluates one (cell, seed); returns its record."""
    from tf_freetickets.ensembles import EnsembleModel
    from tf_freetickets.experiments import runner as experiment
    from tf_freetickets.experiments.evaluation import evaluate_members, members_source

    if (cell.name, seed) in committed:
        return committed[(cell.name, seed)]
    workdir = os.path.join(_WORKDIR.value, cell.name, f"seed_{seed}")
    record_file = os.path.join(workdir, "record.json")
    if os.path.exists(record_file):
        with open(record_file) as f:
            return json.load(f)
    start = time.time()
    config = cell_config(cell, seed, ROOT, _SET.value)
    results = experiment.run(config, workdir)
    train_seconds = time.time() - start
    x_test, y_test, ood, corruptions = test_data
    members = EnsembleModel.from_saved_models(members_source(workdir)).members
    evaluation = evaluate_members(members, x_test, y_test, ood_sets=ood)
    n = _CORRUPTION_EXAMPLES.value
    corrupted = evaluate_members(members, x_test[:n], y_test[:n], corruptions=corruptions)
    record = {
        "cell": cell.name,
        "family": cell.family,
        "sparsity": cell.sparsity,
        "seed": seed,
        "command": rerun_command(cell, seed, workdir, _SET.value),
        "train_seconds": train_seconds,
        "eval_seconds": time.time() - start - train_seconds,
        "metrics": _flatten(results, evaluation, corrupted),
        "reliability": evaluation["reliability"],
        "ood": evaluation["ood"],
        "corruption": corrupted["corruption"],
    }
    with open(record_file, "w") as f:
        json.dump(record, f, indent=2)
    return record


def _environment():
    import keras
    import tensorflow as tf

    return {
        "date": datetime.date.today().isoformat(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
    }


def _study(cells):
    import tf_freetickets

    return {
        "package_version": tf_freetickets.__version__,
        "dataset": "fashion_mnist",
        "epochs": _EPOCHS.value,
        "sparsities": [float(s) for s in _SPARSITIES.value],
        "seeds": [int(s) for s in _SEEDS.value],
        "extra_overrides": list(_SET.value),
        "ood_examples": _OOD_EXAMPLES.value,
        "corruption_examples": _CORRUPTION_EXAMPLES.value,
        "cells": [
            {
                "name": c.name,
                "family": c.family,
                "sparsity": c.sparsity,
                "config_file": c.config_file,
                "overrides": list(c.overrides),
            }
            for c in cells
        ],
    }


def _write_json(cells, records):
    os.makedirs(os.path.dirname(os.path.abspath(_JSON.value)), exist_ok=True)
    payload = {"study": _study(cells), "environment": _environment(), "records": records}
    with open(_JSON.value, "w") as f:
        json.dump(payload, f, indent=1)


def _train_all():
    from tf_freetickets import data
    from tf_freetickets.data.corruptions import available_corruptions
    from tf_freetickets.data.ood import ood_sets

    cells = _selected_cells()
    x_test, y_test = data.load_split("fashion_mnist", "test")
    test_data = (x_test, y_test, ood_sets(num=_OOD_EXAMPLES.value), list(available_corruptions(x_test.shape[-1])))
    plan = [(cell, int(seed)) for seed in _SEEDS.value for cell in cells]  # seed-major: a full table early
    committed = _committed_records(cells)
    records, spent, ran = [], 0.0, 0
    began = time.time()
    for index, (cell, seed) in enumerate(plan, 1):
        print(f"[{index}/{len(plan)}] {cell.name} seed {seed}", flush=True)
        start = time.time()
        record = _run_cell(cell, seed, test_data, committed)
        if time.time() - start > 5:  # trained now, not read back
            spent, ran = spent + time.time() - start, ran + 1
        records.append(record)
        _write_json(cells, records)
        left = (len(plan) - index) * (spent / ran) if ran else 0.0
        m = record["metrics"]
        print(
            f"[{index}/{len(plan)}] {cell.name} seed {seed}: accuracy {m['accuracy']:.4f} ECE {m['ece']:.4f} "
            f"OoD AUROC {m['ood_auroc']:.4f} corruption accuracy {m['corruption_accuracy']:.4f}; "
            f"{(time.time() - began) / 60:.1f} min so far, about {left / 60:.0f} min left",
            flush=True,
        )
    return records


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from tf_freetickets.reporting.results_page import write_report

    if not _REPORT_ONLY.value:
        _train_all()
    if not os.path.exists(_JSON.value):
        print(f"error: no results JSON at {_JSON.value}; run without --report_only first.", file=sys.stderr)
        return 2
    with open(_JSON.value) as f:
        payload = json.load(f)
    written = write_report(payload, _RESULTS_MD.value, _FIGURES_DIR.value)
    print("wrote " + ", ".join(written))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(app.run(main))
