"""The frontier benchmark (tools/bench_frontier.py): forms exact, fastest chosen, missing runs named."""

import json

import keras
import numpy as np
import pytest

import tf_freetickets as tft
from reporting import frontier_forms, frontier_page
from reporting.study import Cell


def _small_cnn(seed):
    keras.utils.set_random_seed(seed)
    return tft.models.small_cnn(input_shape=(28, 28, 1), width=0.25)


@pytest.mark.parametrize("num_members", [1, 2])
def test_every_form_serves_the_members_mean_probability(tmp_path, num_members):
    members = [tft.sparsify(_small_cnn(seed), 0.8, distribution="erk", seed=seed) for seed in range(num_members)]
    for member in members:  # two dead channels holding relu(0.3): a carrier, or an offset map into conv2_1
        layer = member.get_layer("conv1_2")
        for variable in (layer.kernel_mask, layer.kernel_variable):
            variable.assign(np.concatenate([np.zeros_like(variable.numpy()[..., :2]), variable.numpy()[..., 2:]], -1))
        bn = member.get_layer("bn1_2")
        bn.beta.assign(np.concatenate([[0.3, 0.3], bn.beta.numpy()[2:]]).astype(np.float32))
    x = np.random.default_rng(0).random((1, 28, 28, 1), dtype=np.float32)
    serves, forms = frontier_forms.row_forms("row", members, str(tmp_path), threads=1, x=x)
    expected = np.mean([keras.ops.convert_to_numpy(keras.ops.softmax(m(x))) for m in members], axis=0)
    exported = [f for f in forms if "bytes" in f]
    assert {f["form"] for f in exported} == set(serves)
    assert len(exported) == (5 if num_members == 1 else 7)
    offsets = [f for f in exported if "(offsets)" in f["form"]]
    plain = [f for f in exported if f["form"] == offsets[0]["form"].replace(" (offsets)", "")]
    assert len(offsets) == 1 and offsets[0]["bytes"] != plain[0]["bytes"]  # the offset form is another model
    for form in exported:
        assert form["bytes"] > 0
        assert form["max_abs_diff"] <= 1e-5, form
        np.testing.assert_allclose(serves[form["form"]](x), expected, atol=1e-5)
    (csr,) = [f for f in forms if f["form"] == "CSR"]
    assert "Conv2D" in csr["skipped"]


def _result(forms):
    machine = {"cpu_model": "test CPU", "cpu_count": 2, "load_average_at_start": [0.0], "tensorflow": "x", "keras": "y"}
    config = {"threads": 1, "repeats": 3, "window_s": 0.1, "seed": 0, "json": ["study.json"]}
    return {"machine": machine, "config": config, "forms": forms, "missing": []}


def _study():
    cells = [{"name": "dense"}, {"name": "edst_0.8"}]
    records = [{"cell": c, "seed": s, "metrics": {"accuracy": a, "nll": 0.3, "ece": 0.02, "ood_auroc": 0.9,
                                                  "training_flops": 1.0, "inference_flops": 1.0}}
               for c, s, a in (("dense", 0, 0.90), ("dense", 1, 0.92), ("edst_0.8", 0, 0.89))]  # fmt: skip
    return {"study": {"cells": cells}, "records": records}


def test_summary_gives_each_row_its_fastest_form_smallest_file_and_quality_over_all_runs():
    forms = [
        {"row": "dense", "members": 1, "form": "SavedModel", "ms": 1.0, "ratio_to_dense_twin": 1.0,
         "ratio_same_runtime": 1.0, "bytes": 2000, "max_abs_diff": 0.0},
        {"row": "dense", "members": 1, "form": "TFLite", "ms": 0.2, "ratio_to_dense_twin": 0.2,
         "ratio_same_runtime": 1.0, "bytes": 1000, "max_abs_diff": 0.0},
        {"row": "edst_0.8", "members": 3, "form": "stacked", "ms": 2.0, "ratio_to_dense_twin": 2.0,
         "ratio_same_runtime": 2.0, "bytes": 500, "max_abs_diff": 0.0},
        {"row": "edst_0.8", "members": 3, "form": "stacked TFLite", "ms": 0.6, "ratio_to_dense_twin": 0.6,
         "ratio_same_runtime": 3.0, "bytes": 800, "max_abs_diff": 0.0},
        {"row": "edst_0.8", "members": 3, "form": "CSR", "skipped": "cannot serve layer 'conv' (Conv2D)"},
    ]  # fmt: skip
    table = frontier_page.summary_table(_result(forms), [_study()]).splitlines()
    dense = next(line for line in table if line.startswith("| dense |"))
    edst = next(line for line in table if line.startswith("| edst_0.8 |"))
    assert "| TFLite | 0.200 | 0.20x | 1.00x | 1 KB (TFLite) | 0.9100 ± 0.0141 (2) |" in dense
    assert "| stacked TFLite | 0.600 | 0.60x | 3.00x | 0 KB (stacked) | 0.8900 ± 0.0000 (1) |" in edst
    every = frontier_page.forms_table(_result(forms))
    assert "| edst_0.8 | CSR | – | – | – | – | not served: cannot serve layer 'conv' (Conv2D) |" in every


def test_a_composed_row_with_a_missing_run_is_named_with_the_command_that_retrains_it(tmp_path):
    cells = {"rigl_0.8": Cell("rigl_0.8", replicas=3), "dst_0.8": Cell("dst_0.8", composed_of="rigl_0.8", members=3)}
    paths, missing = frontier_forms.member_paths(cells["dst_0.8"], 0, str(tmp_path), cells)
    assert paths == [] and missing == [("rigl_0.8", 0), ("rigl_0.8", 1), ("rigl_0.8", 2)]
    study = tmp_path / "study.json"
    study.write_text(json.dumps({"records": [{"cell": "rigl_0.8", "seed": 1, "command": "python -m train --x=1"}]}))
    lines = frontier_page.missing_lines([{"row": "dst_0.8", "run": "rigl_0.8", "seed": 1},
                                         {"row": "dst_0.8", "run": "rigl_0.8", "seed": 2}], [str(study)])  # fmt: skip
    assert lines[0] == "dst_0.8: no model files for rigl_0.8 seed 1; retrain with: python -m train --x=1"
    assert lines[1].endswith("(no record: run the study for this seed group)")
