"""The structured-DST study (tools/reporting/structured_study.py, structured_page.py) and its structure measures."""

import keras
import numpy as np
import pytest

import tf_freetickets as tft
from reporting.long_study import fashion_mnist_decided_study
from reporting.structured_page import STRUCTURED_BEGIN_MARKER, generated_structured_markdown, write_structured_report
from reporting.structured_study import baseline_records, fashion_mnist_structured_study, structured_claims
from reporting.study_records import structure_measures
from reporting.study_runner import cell_dicts

SETTINGS = {"package_version": "0.2.0", "dataset": "fashion_mnist", "train_examples": 5000, "learning_rate": 0.025,
            "epochs": 100, "sparsities": [0.8, 0.9], "ood_sets": ["digits"], "ood_examples": 1000,
            "corruption_examples": 1000, "extra_overrides": []}  # fmt: skip
MEANS = {"rigl": (0.890, 0.33, 0.036, 0.90), "srigl": (0.889, 0.33, 0.035, 0.90), "chase": (0.870, 0.40, 0.050, 0.85),
         "dst": (0.902, 0.28, 0.014, 0.90), "chase_dst": (0.885, 0.31, 0.020, 0.85), "chase_c75": (0.86, 0.42, 0.05, 0.3),
         "chase_c75_dst": (0.875, 0.35, 0.02, 0.3)}  # fmt: skip


def test_each_row_is_long_v2s_rigl_row_with_only_the_method_changed():
    rigl = {c.name: c for c in fashion_mnist_decided_study() if c.family == "rigl"}
    cells = fashion_mnist_structured_study()
    assert [c.name for c in cells] == ["srigl_0.8", "chase_0.8", "chase_dst_0.8", "srigl_0.9", "chase_0.9", "chase_dst_0.9",
                                       "chase_c75_0.9", "chase_c75_dst_0.9"]  # fmt: skip
    trade, trade_ensemble = cells.pop(6), cells.pop(6)  # Chase at 0.9 with 3/4 of the channels removed: only that changed
    chase = next(c for c in cells if c.name == "chase_0.9")
    assert trade.overrides == (*chase.overrides, "sparse.chase_channel_sparsity=0.75") and trade.replicas == 3
    assert (trade.config_file, trade_ensemble.composed_of, trade_ensemble.members) == (chase.config_file, "chase_c75_0.9", 3)
    assert not [c for c in structured_claims() if "c75" in c.row]  # a serving trade's row, in no claim
    ensembles = [cells.pop(5), cells.pop(2)]  # the Chase tickets' DST ensembles, as long_v2's dst_S are of its RigL runs
    assert [(e.composed_of, e.members, e.sparsity) for e in ensembles] == [("chase_0.9", 3, 0.9), ("chase_0.8", 3, 0.8)]
    for cell in cells:
        baseline = rigl[cell.name.replace(cell.family, "rigl")]
        assert cell.overrides == baseline.overrides and cell.replicas == baseline.replicas == 3
        assert cell.config_file == f"configs/fashion_mnist_{cell.family}.py"


def _masked_mlp(dead_units):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((6,))
    hidden = keras.layers.Dense(4, activation="relu", name="hidden")(inputs)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(hidden))
    model = tft.sparsify(model, 0.5, "uniform", seed=0)
    layer = tft.sparse.masked_layers(model)[0]
    mask = layer.kernel_mask.numpy()
    mask[:, dead_units] = 0.0
    layer.kernel_mask.assign(mask)
    return model


def test_structure_measures_count_dead_units_and_what_compact_keeps():
    model = _masked_mlp(dead_units=[1, 3])
    measures = structure_measures([model])
    assert measures["removed_unit_fraction"] == pytest.approx(2 / 7)  # 2 dead of 4 + 3 units
    # compact removes the two dead hidden units: 6 x 2 + 2 kernel and bias, 2 x 3 + 3 in the classifier
    assert measures["compact_param_fraction"] == pytest.approx((6 * 2 + 2 + 2 * 3 + 3) / (6 * 4 + 4 + 4 * 3 + 3))
    assert structure_measures([keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])]) == {}


def _record_seeds(cell, group):
    """A run row has a record per run seed; a composed row one per seed group."""
    return (group,) if cell.composed_of else cell.run_seeds(group)


def _payloads():
    rng = np.random.default_rng(0)
    structured_cells = fashion_mnist_structured_study()
    decided_cells = fashion_mnist_decided_study()

    def record(cell, seed):
        accuracy, nll, ece, kept = MEANS[cell.family]
        metrics = {"accuracy": accuracy + 0.001 * rng.standard_normal(), "nll": nll * (1 + 0.01 * rng.standard_normal()),
                   "ece": ece * (1 + 0.01 * rng.standard_normal()), "ood_auroc": 0.85, "corruption_accuracy": 0.7,
                   "removed_unit_fraction": 1 - kept, "compact_param_fraction": kept}  # fmt: skip
        return {"cell": cell.name, "seed": seed, "metrics": metrics, "command": f"python -m tf_freetickets.train "
                f"--config={cell.config_file} --workdir=/tmp/x", "train_seconds": 60.0, "eval_seconds": 5.0}  # fmt: skip

    structured = {"study": {**SETTINGS, "study": "structured", "seeds": [0], "cells": cell_dicts(structured_cells)},
                  "records": [record(c, s) for c in structured_cells for s in _record_seeds(c, 0)]}  # fmt: skip
    baseline = [c for c in decided_cells if c.family in ("rigl", "dst")]
    decided = {"study": {**SETTINGS, "study": "long_v2", "seeds": [0, 10], "cells": cell_dicts(decided_cells)},
               "records": [record(c, s) for c in baseline for g in (0, 10) for s in _record_seeds(c, g)]}  # fmt: skip
    return structured, decided


def test_the_baseline_is_long_v2s_rigl_records_of_the_same_seeds_and_definitions():
    structured, decided = _payloads()
    records, reason = baseline_records(structured, decided)
    assert reason == "" and sorted({(r["cell"], r["seed"]) for r in records}) == [
        (f"{row}_{s}", seed) for row in ("dst", "rigl") for s in (0.8, 0.9) for seed in ((0,) if row == "dst" else (0, 1, 2))
    ]  # fmt: skip
    decided["study"]["epochs"] = 50
    assert baseline_records(structured, decided) == ([], "the long_v2 JSON ran with epochs=50, this study with 100")
    decided["study"]["epochs"] = 100
    decided["study"]["cells"][[c["name"] for c in decided["study"]["cells"]].index("rigl_0.8")]["overrides"].append("x=1")
    assert {r["cell"] for r in baseline_records(structured, decided)[0]} == {"rigl_0.9", "dst_0.8", "dst_0.9"}
    assert baseline_records(structured, None) == ([], "no long_v2 JSON: the RigL baseline rows are missing")


def test_page_decides_each_claim_against_rigl_and_shows_the_structure(tmp_path):
    structured, decided = _payloads()
    text = generated_structured_markdown(structured, decided)
    lines = {line.split(" | ")[1]: line for line in text.splitlines() if line.startswith("| ") and " | " in line}
    srigl = next(v for k, v in lines.items() if k.startswith("SRigL matches RigL's accuracy at S=0.8"))
    chase = next(v for k, v in lines.items() if k.startswith("Chase matches RigL's accuracy at S=0.8"))
    assert srigl.endswith("| **holds** |")  # 0.1 point below RigL, inside the half-point margin
    assert chase.endswith("| **does not hold** |")  # 2 points below
    assert not [line for line in lines.values() if "incomplete (" in line.rsplit(" | ", 1)[-1]]
    assert "16 claims, 16 with a p value (the Holm family)" in text and "Baseline missing" not in text
    assert "| chase_0.8 | 3 |" in text and "| 0.150 ± 0.000 | 0.850 ± 0.000 |" in text
    table = [line.split(" | ")[0].lstrip("| ") for line in text.splitlines() if line.startswith("| ") and "±" in line]
    assert table[-10:] == ["srigl_0.8", "chase_0.8", "dst_0.8", "chase_dst_0.8", "srigl_0.9", "chase_0.9", "dst_0.9",
                           "chase_dst_0.9", "chase_c75_0.9", "chase_c75_dst_0.9"]  # Chase ensembles beside dst_S  # fmt: skip
    page = tmp_path / "RESULTS.md"
    page.write_text("# Results\n\nprose kept\n")
    write_structured_report(structured, None, str(page))
    written = page.read_text()
    assert "prose kept" in written and written.count(STRUCTURED_BEGIN_MARKER) == 1
    assert "**Baseline missing:** no long_v2 JSON: the RigL baseline rows are missing." in written


def test_a_record_read_back_carries_what_the_current_compact_keeps(tmp_path):
    from reporting.study import Cell
    from reporting.study_runner import StudyRunner

    path = str(tmp_path / "ticket.keras")
    _masked_mlp(dead_units=[1, 3]).save(path)
    cells = [Cell("chase_0.8", "configs/fashion_mnist_chase.py", (), "chase", 0.8, replicas=2),
             Cell("chase_dst_0.8", family="chase_dst", sparsity=0.8, composed_of="chase_0.8", members=2)]  # fmt: skip
    runner = StudyRunner(cells, [0], {"dataset": "fashion_mnist"}, str(tmp_path), str(tmp_path / "s.json"),
                         structure_measures=True)  # fmt: skip
    stale = {"cell": "chase_dst_0.8", "seed": 0, "metrics": {"accuracy": 0.9, "compact_param_fraction": 1.0}}
    runner._has_member_files = lambda cell, seed: True
    runner._member_files = lambda cell, seed: [path]
    fresh = runner._with_current_structure(cells[1], 0, stale)
    assert fresh["metrics"]["accuracy"] == 0.9 and fresh["structure_measured_by"] == "current compact"
    assert fresh["metrics"]["compact_param_fraction"] == pytest.approx((6 * 2 + 2 + 2 * 3 + 3) / (6 * 4 + 4 + 4 * 3 + 3))
    assert stale["metrics"]["compact_param_fraction"] == 1.0  # the committed record itself is not mutated
    runner._has_member_files = lambda cell, seed: seed == 0  # seed 1's files are not on this machine
    kept = runner._with_current_structure(cells[1], 0, stale)
    assert kept["metrics"] == stale["metrics"] and kept["structure_measured_by"] == "record"
