"""Study tables, study cells, results page and figures (tools/reporting)."""

import json
import os
import shlex

import numpy as np
import pytest

from reporting import Column, aggregate, cell_config, load_config, markdown_table, mean_std, rerun_command
from reporting.plots import pool_reliability
from reporting.results_page import BEGIN_MARKER, END_MARKER, records_by_cell, write_report
from reporting.study import fashion_mnist_study

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_mean_std_is_the_sample_std():
    mean, std = mean_std([0.90, 0.92, 0.94])
    assert mean == pytest.approx(0.92)
    assert std == pytest.approx(0.02)  # sqrt(((-.02)^2 + 0 + .02^2) / 2)
    assert mean_std([0.5]) == (0.5, 0.0)
    with pytest.raises(ValueError, match="at least one"):
        mean_std([])


def test_markdown_table_cells_and_missing_values():
    rows = {"a": [{"acc": 0.9, "flops": 2.0}, {"acc": 0.8, "flops": 2.0}], "b": [{"acc": 0.7}]}
    table = markdown_table(rows, [Column("acc", "accuracy", "{:.2f}"), Column("flops", "FLOPs", "{:.1f}", show_std=False)])
    lines = table.splitlines()
    assert lines[0] == "| run | seeds | accuracy | FLOPs |"
    assert lines[2] == "| a | 2 | 0.85 ± 0.07 | 2.0 |"
    assert lines[3] == "| b | 1 | 0.70 ± 0.00 | – |"
    assert aggregate(rows["a"], ["acc", "nope"]) == {"acc": (pytest.approx(0.85), pytest.approx(0.0707107), 2)}


def test_pool_reliability_weights_bins_by_count():
    first = {"counts": [2, 0, 1], "confidence": [0.2, 0.0, 0.9], "accuracy": [0.5, 0.0, 1.0]}
    second = {"counts": [2, 0, 3], "confidence": [0.3, 0.0, 0.8], "accuracy": [0.0, 0.0, 1.0 / 3.0]}
    pooled = pool_reliability([first, second])
    np.testing.assert_array_equal(pooled["counts"], [4, 0, 4])
    np.testing.assert_allclose(pooled["confidence"], [0.25, 0.0, (0.9 + 2.4) / 4])
    np.testing.assert_allclose(pooled["accuracy"], [0.25, 0.0, 0.5])
    with pytest.raises(ValueError, match="same number of bins"):
        pool_reliability([first, {"counts": [1], "confidence": [0.5], "accuracy": [1.0]}])


def test_every_study_cell_gives_a_valid_config_with_its_settings():
    cells = {c.name: c for c in fashion_mnist_study(epochs=4, sparsities=(0.8, 0.9))}
    assert sorted(cells) == sorted(
        ["dense", "dense_ensemble", "dnc_s2"] + [f"{m}_{s}" for m in ("rigl", "gmp", "cigl", "dst", "edst") for s in (0.8, 0.9)]
    )
    configs = {name: cell_config(cell, 10, ROOT) for name, cell in cells.items()}
    assert all(c.seed == 10 and c.width == 0.5 for c in configs.values())
    assert configs["dense"].sparse.method == "dense" and configs["dense"].ensemble.kind == "none"
    assert (configs["dense_ensemble"].ensemble.kind, configs["dense_ensemble"].ensemble.num_members) == ("independent", 3)
    assert (configs["dnc_s2"].ensemble.kind, configs["dnc_s2"].ensemble.num_members) == ("dnc", 2)
    for s in (0.8, 0.9):
        assert configs[f"rigl_{s}"].sparse.method == "rigl" and configs[f"rigl_{s}"].sparse.sparsity == s
        assert configs[f"gmp_{s}"].sparse.method == "gmp" and configs[f"gmp_{s}"].sparse.sparsity == s
        # The pruning baseline gets the RigL row's budget: same epochs, optimizer, distribution and ΔT.
        for key in ("epochs", "optimizer", "batch_size"):
            assert configs[f"gmp_{s}"][key] == configs[f"rigl_{s}"][key]
        assert configs[f"gmp_{s}"].sparse.distribution == configs[f"rigl_{s}"].sparse.distribution
        assert configs[f"gmp_{s}"].sparse.update_every == configs[f"rigl_{s}"].sparse.update_every
        assert configs[f"cigl_{s}"].weight_averaging.enabled and configs[f"cigl_{s}"].weight_averaging.start_fraction == 0.5
        assert (configs[f"dst_{s}"].ensemble.kind, configs[f"dst_{s}"].sparse.method) == ("independent", "rigl")
        assert configs[f"edst_{s}"].ensemble.kind == "edst" and configs[f"edst_{s}"].sparse.sparsity == s
    single_runs = [n for n in configs if not n.startswith("edst")]
    assert all(configs[n].epochs == 4 for n in single_runs)


def test_rerun_command_trains_the_same_config():
    cell = next(c for c in fashion_mnist_study() if c.name == "cigl_0.9")
    command = shlex.split(rerun_command(cell, 20, "out/x", ["train_examples=100"]))
    assert command[:4] == ["python", "-m", "tf_freetickets.train", "--config=configs/fashion_mnist_cigl.py"]
    assert command[-1] == "--workdir=out/x"
    overrides = [arg.removeprefix("--config.") for arg in command[4:-1]]
    from_command = load_config(os.path.join(ROOT, cell.config_file), overrides)
    assert from_command.to_dict() == cell_config(cell, 20, ROOT, ["train_examples=100"]).to_dict()


def test_load_config_rejects_unknown_fields_and_missing_files(tmp_path):
    with pytest.raises(KeyError, match="sparse.sparsityy"):
        load_config(os.path.join(ROOT, "configs/fashion_mnist_rigl.py"), ["sparse.sparsityy=0.5"])
    with pytest.raises(FileNotFoundError, match="nowhere.py"):
        load_config(str(tmp_path / "nowhere.py"))
    with pytest.raises(ValueError, match="dotted.key=value"):
        load_config(os.path.join(ROOT, "configs/fashion_mnist_rigl.py"), ["epochs"])


def _record(cell, seed, accuracy, training_flops, inference_flops):
    return {
        "cell": cell,
        "family": cell.split("_")[0],
        "seed": seed,
        "command": f"python -m tf_freetickets.train --config=configs/x.py --config.seed={seed} --workdir=w",
        "train_seconds": 60.0,
        "eval_seconds": 6.0,
        "metrics": {
            "accuracy": accuracy, "nll": 0.3, "ece": 0.01, "brier": 0.15, "ood_auroc": 0.9, "ood_auroc_digits": 0.8,
            "corruption_accuracy": 0.7, "corruption_s1": 0.8,
            "training_flops": training_flops, "inference_flops": inference_flops,
        },
        "reliability": {"counts": [0, 3, 7], "confidence": [0.0, 0.5, 0.9], "accuracy": [0.0, 0.4, 0.95]},
    }  # fmt: skip


def _payload():
    cells = [{"name": "dense"}, {"name": "edst_0.8"}]
    records = [
        _record("dense", 0, 0.90, 100.0, 10.0),
        _record("dense", 1, 0.92, 100.0, 10.0),
        _record("edst_0.8", 0, 0.91, 30.0, 6.0),
    ]
    study = {"dataset": "fashion_mnist", "epochs": 4, "sparsities": [0.8], "seeds": [0, 1], "ood_examples": 10,
             "corruption_examples": 10, "cells": cells}  # fmt: skip
    return {"study": study, "environment": {"tensorflow": "x"}, "records": records}


def test_records_by_cell_divides_flops_by_the_dense_cell():
    rows = records_by_cell(_payload())
    assert list(rows) == ["dense", "edst_0.8"]
    assert [r["training_flops_rel"] for r in rows["edst_0.8"]] == [pytest.approx(0.3)]
    assert [r["inference_flops_rel"] for r in rows["edst_0.8"]] == [pytest.approx(0.6)]


def test_write_report_replaces_only_the_generated_block(tmp_path):
    page = tmp_path / "RESULTS.md"
    page.write_text(
        f"# Title\n\nHand-written intro.\n\n{BEGIN_MARKER}\nold table\n{END_MARKER}\n\n## Reading\nHand-written end.\n"
    )
    written = write_report(_payload(), str(page), str(tmp_path / "figures"))
    text = page.read_text()
    assert text.startswith("# Title\n\nHand-written intro.\n\n" + BEGIN_MARKER)
    assert text.endswith(END_MARKER + "\n\n## Reading\nHand-written end.\n")
    assert "old table" not in text
    assert "| dense | 2 | 0.9100 ± 0.0141 |" in text
    assert "| edst_0.8 | 1 | 0.9100 ± 0.0000 |" in text and "| 0.300 | 0.600 |" in text
    assert "![Reliability diagrams](figures/reliability.png)" in text
    for path in written[1:]:
        with open(path, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    # Regenerating from the same JSON gives the same page.
    write_report(json.loads(json.dumps(_payload())), str(page), str(tmp_path / "figures"))
    assert page.read_text() == text


def test_without_a_dense_cell_flops_are_absolute_and_no_empty_figure_is_drawn(tmp_path):
    payload = _payload()
    payload["records"] = [r for r in payload["records"] if r["cell"] != "dense"]
    payload["study"]["cells"] = [{"name": "edst_0.8"}]
    page = tmp_path / "page.md"
    written = write_report(payload, str(page), str(tmp_path / "figures"))
    text = page.read_text()
    assert not (tmp_path / "figures" / "accuracy_vs_training_flops.png").exists()
    assert str(tmp_path / "figures" / "accuracy_vs_training_flops.png") not in written
    assert "accuracy_vs_training_flops.png" not in text
    assert "`edst_0.8` 30 training, 6 inference per example" in text


def test_command_lines_show_the_study_workdir_and_the_mean_minutes():
    from reporting.results_page import command_lines

    records = [
        {"cell": "rigl_0.8", "seed": 10, "train_seconds": 50.0, "eval_seconds": 10.0,
         "command": "python -m tf_freetickets.train --config=c.py --config.seed=10 --workdir=elsewhere_x/rigl_0.8/seed_10"},
        {"cell": "rigl_0.8", "seed": 20, "train_seconds": 170.0, "eval_seconds": 10.0, "command": "unused"},
    ]  # fmt: skip
    assert command_lines(records, workdir="out/reproduce") == [
        "- `rigl_0.8` (2.0 min): `python -m tf_freetickets.train --config=c.py --config.seed=10 "
        "--workdir=out/reproduce/rigl_0.8/seed_10`"
    ]
    assert "elsewhere_x" in command_lines(records)[0]  # without workdir, the command as it ran


def test_command_lines_give_one_mean_per_cpu_when_records_ran_on_several():
    from reporting.results_page import command_lines

    records = [
        {"cell": "dense", "seed": 0, "train_seconds": 50.0, "eval_seconds": 10.0, "cpu": "CPU A", "command": "c"},
        {"cell": "dense", "seed": 1, "train_seconds": 290.0, "eval_seconds": 10.0, "cpu": "CPU B", "command": "c"},
        {"cell": "dense", "seed": 2, "train_seconds": 470.0, "eval_seconds": 10.0, "cpu": "CPU B", "command": "c"},
        {"cell": "rigl", "seed": 0, "train_seconds": 110.0, "eval_seconds": 10.0, "command": "r"},
    ]  # fmt: skip
    assert command_lines(records) == [
        "- `dense` (1.0 min on CPU A, 6.5 min on CPU B): `c`",
        "- `rigl` (2.0 min on an unrecorded CPU): `r`",
    ]


def test_command_lines_take_the_clocked_runs_alone_and_leave_out_resumed_ones():
    from reporting.results_page import command_lines

    records = [
        {"cell": "edst", "seed": 0, "train_seconds": 590.0, "eval_seconds": 10.0, "train_cpu_seconds": 1080.0, "command": "e"},
        {"cell": "edst", "seed": 1, "train_seconds": 60.0, "eval_seconds": 10.0, "untimed_epochs": 146, "command": "e"},
        {"cell": "edst", "seed": 2, "train_seconds": 830.0, "eval_seconds": 10.0, "train_cpu_seconds": 1320.0, "command": "e"},
        {"cell": "gmp", "seed": 0, "train_seconds": 5.0, "eval_seconds": 1.0, "untimed_epochs": 3, "command": "g"},
    ]  # fmt: skip
    records.append({"cell": "edst", "seed": 3, "train_seconds": 2000.0, "eval_seconds": 30.0, "command": "e"})  # no clock
    assert command_lines(records) == [
        "- `edst` (11.8 min training, 20.0 CPU-min, over 2 clocked runs; 1 earlier run(s), timed with their "
        "evaluation, left out; 1 resumed run(s) left out): `e`",
        "- `gmp` (not timed: 1 resumed run(s) whose first epochs no clock timed): `g`",
    ]
