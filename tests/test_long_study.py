"""The long-training study: its cells keep the papers' ratios, its claims are judged as documented,
and its runner composes ensembles and resumes from committed records."""

import json
import math
import os

import pytest

from reporting.claims import Claim, claims_table, judge, welch_t
from reporting.environment import vector_isa
from reporting.long_page import (
    LONG_BEGIN_MARKER,
    LONG_END_MARKER,
    pilot_choice,
    write_long_report,
)
from reporting.long_study import (
    EPOCHS,
    LEARNING_RATE,
    fashion_mnist_long_pilot,
    fashion_mnist_long_study,
    paper_claims,
    steps_per_epoch,
)
from reporting.results_page import BEGIN_MARKER, END_MARKER
from reporting.study import Cell, cell_config
from reporting.study_runner import StudyRunner
from tf_freetickets.experiments.config import edst_schedule

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _cells():
    return {c.name: c for c in fashion_mnist_long_study()}


def test_every_long_cell_is_a_valid_config_at_the_frozen_base():
    for cell in fashion_mnist_long_study() + fashion_mnist_long_pilot(chosen=(5000, 60)):
        if cell.composed_of:
            continue
        config = cell_config(cell, 0, ROOT)
        assert config.train_examples in (2500, 5000) and config.width == 0.5
        assert config.optimizer.weight_decay == 5e-4 and config.optimizer.momentum == 0.9
        if not cell.name.startswith("pilot"):
            assert config.optimizer.learning_rate == LEARNING_RATE and config.epochs == EPOCHS
            assert config.validation_examples == 0 and config.fused_batchnorm  # the study's speed switch
        else:
            assert not config.fused_batchnorm  # the pilot ran Keras' own BatchNorm layer


def test_schedules_keep_the_papers_proportions():
    cells = _cells()
    total = EPOCHS * steps_per_epoch()
    # RigL / CigL: ΔT = 100 of 391 CIFAR steps per epoch, the same length in epochs here (39 steps per epoch).
    assert cell_config(cells["rigl_0.8"], 0, ROOT).sparse.update_every == round(100 / 391 * 39) == 10
    # EDST: t_ex : t_re = 150 : 100 of a 250-epoch budget; ΔT = 1000 CIFAR steps.
    edst = cell_config(cells["edst_0.8"], 0, ROOT)
    schedule = edst_schedule(edst)
    assert (schedule.exploration_epochs, schedule.refinement_epochs) == (0.6 * EPOCHS, 0.4 * EPOCHS)
    assert edst.ensemble.large_drop_fraction == 0.8 and edst.sparse.update_every == round(1000 / 391 * 39)
    assert edst.sparse.reinit_when_same and edst.sparse.growth_gradient == "step_batch"
    # CigL: lr halved every 30,000 of 88,000 steps; averaging over the last 20% at lr / 4 (0.025 of 0.1).
    cigl = cell_config(cells["cigl_0.9"], 0, ROOT)
    assert cigl.optimizer.schedule == "step" and cigl.optimizer.gamma == 0.5
    halvings_at_window = int(0.8 * total) // cigl.optimizer.decay_every
    assert halvings_at_window == 2 and int(total) // cigl.optimizer.decay_every == 2
    assert cigl.weight_averaging.start_fraction == 0.8
    baseline = cell_config(cells["rigl_steplr_0.9"], 0, ROOT)
    assert baseline.sparse.method == "rigl" and baseline.optimizer.decay_every == cigl.optimizer.decay_every
    # DNC: JS ramp over 40 of 300 epochs, per epoch, from 0.005.
    dnc = cell_config(cells["dnc_s2"], 0, ROOT)
    assert dnc.ensemble.cotraining_warmup_epochs == round(EPOCHS * 40 / 300) and dnc.ensemble.cotraining_ramp == "epoch"
    # Exploration ablation: only t_ex changes.
    short = edst_schedule(cell_config(cells["edst_0.8_tex0.1"], 0, ROOT))
    assert (short.exploration_epochs, short.refinement_epochs) == (round(0.1 * EPOCHS), 0.4 * EPOCHS)


def test_composed_cells_read_the_runs_of_seeds_s_to_s_plus_m_minus_1():
    cells = _cells()
    assert cells["dense"].run_seeds(10) == [10, 11, 12]
    assert cells["dst_0.9"].composed_of == "rigl_0.9" and cells["dst_0.9"].run_seeds(20) == [20, 21, 22]
    assert cells["edst_0.8"].run_seeds(10) == [10]


def test_welch_t_matches_a_hand_computation():
    # means 2 and 0, sample stds 1 and 0, n = 3: t = 2 / sqrt(1 / 3).
    assert welch_t([1.0, 2.0, 3.0], [0.0, 0.0, 0.0]) == pytest.approx(2 / math.sqrt(1 / 3))
    assert welch_t([1.0, 2.0, 3.0], [0.0, 0.0, 0.0], higher_is_better=False) == pytest.approx(-2 / math.sqrt(1 / 3))
    assert welch_t([1.0], [1.0]) == 0.0 and welch_t([2.0], [1.0]) == math.inf


def test_claim_verdicts_follow_the_documented_rules():
    rows = {
        "a": [{"accuracy": v, "ece": e} for v, e in ((0.90, 0.01), (0.91, 0.012), (0.92, 0.011))],
        "b": [{"accuracy": v, "ece": e} for v, e in ((0.85, 0.05), (0.86, 0.04), (0.84, 0.045))],
        "c": [{"accuracy": v} for v in (0.95, 0.95, 0.96)],
        "noisy": [{"accuracy": v} for v in (0.80, 0.95, 0.88)],
    }
    assert judge(Claim("P", "", "a", "b", "accuracy"), rows)["verdict"] == "holds"
    assert judge(Claim("P", "", "a", "b", "ece"), rows)["verdict"] == "holds"  # lower is better
    assert judge(Claim("P", "", "b", "a", "accuracy"), rows)["verdict"] == "does not hold"
    assert judge(Claim("P", "", "noisy", "b", "accuracy"), rows)["verdict"] == "within noise"
    assert judge(Claim("P", "", "b", "a", "accuracy", kind="no_worse"), rows)["verdict"] == "does not hold"
    assert judge(Claim("P", "", "noisy", "a", "accuracy", kind="no_worse"), rows)["verdict"] == "holds"
    gap = judge(Claim("P", "", "a", "b", "accuracy", kind="closes_gap", target="c"), rows)
    assert gap["gap_closed"] == pytest.approx((0.91 - 0.85) / (0.9533333 - 0.85), rel=1e-5) and gap["verdict"] == "holds"
    no_gap = judge(Claim("P", "", "a", "c", "accuracy", kind="closes_gap", target="b"), rows)
    assert no_gap["verdict"].startswith("not measurable")
    assert judge(Claim("P", "", "a", "missing", "accuracy"), rows)["verdict"] == "not measured"
    with pytest.raises(ValueError, match="unknown"):
        judge(Claim("P", "", "a", "b", "accuracy", kind="maybe"), rows)


def test_claims_table_shows_no_t_for_a_cost_that_does_not_vary():
    rows = {"sparse": [{"training_flops_rel": 0.62}] * 3, "dense": [{"training_flops_rel": 1.0}] * 3,
            "a": [{"accuracy": v} for v in (0.90, 0.91, 0.92)], "b": [{"accuracy": v} for v in (0.85, 0.86, 0.84)]}  # fmt: skip
    table = claims_table([Claim("P", "cheaper", "sparse", "dense", "training_flops_rel", kind="at_most"),
                          Claim("P", "better", "a", "b", "accuracy")], rows)  # fmt: skip
    cheaper, better = table.splitlines()[2:]
    assert cheaper.endswith("| – | **holds** |") and "inf" not in cheaper
    assert better.endswith(f"| {welch_t([0.90, 0.91, 0.92], [0.85, 0.86, 0.84]):+.1f} | **holds** |")


def test_paper_claims_name_rows_of_the_study():
    names = set(_cells())
    for claim in paper_claims():
        assert {claim.row, claim.baseline} <= names and (not claim.target or claim.target in names)


def _metrics(accuracy, **extra):
    return {"accuracy": accuracy, "nll": 0.3, "ece": 0.04, "brier": 0.15, "ood_auroc": 0.9, "corruption_accuracy": 0.7,
            "training_flops": 1e12, "inference_flops": 1e6, **extra}  # fmt: skip


def _record(cell, seed, **metrics):
    return {"cell": cell, "family": "dense", "sparsity": None, "seed": seed, "command": f"train {cell} {seed}",
            "train_seconds": 60.0, "eval_seconds": 5.0, "metrics": _metrics(**metrics),
            "reliability": {"counts": [1] * 15, "confidence": [0.5] * 15, "accuracy": [0.5] * 15}}  # fmt: skip


def test_runner_plan_is_seed_major_with_sources_before_their_ensembles():
    cells = [Cell("dense", "configs/fashion_mnist_dense.py", replicas=3),
             Cell("dense_ensemble", composed_of="dense", members=3), Cell("rigl", "configs/fashion_mnist_rigl.py")]  # fmt: skip
    runner = StudyRunner(cells, [0, 10], {"dataset": "fashion_mnist"}, "w", "j.json")
    plan = [(c.name, s) for c, s in runner.plan()]
    assert plan == [("dense", 0), ("dense", 1), ("dense", 2), ("dense_ensemble", 0), ("rigl", 0),
                    ("dense", 10), ("dense", 11), ("dense", 12), ("dense_ensemble", 10), ("rigl", 10)]  # fmt: skip
    with pytest.raises(ValueError, match="not in the study"):
        StudyRunner([Cell("dst", composed_of="rigl", members=3)], [0], {}, "w", "j.json")


def test_runner_reuses_committed_records_only_for_the_same_settings_and_cells(tmp_path):
    cells = [Cell("dense", "configs/fashion_mnist_dense.py", ("epochs=60",), "dense")]
    path = str(tmp_path / "study.json")
    runner = StudyRunner(cells, [0], {"dataset": "fashion_mnist", "epochs": 60}, str(tmp_path), path)
    runner.write_json([_record("dense", 0, accuracy=0.9)])
    assert list(runner.committed_records()) == [("dense", 0)]
    other_setting = StudyRunner(cells, [0], {"dataset": "fashion_mnist", "epochs": 61}, str(tmp_path), path)
    assert other_setting.committed_records() == {}
    changed = [Cell("dense", "configs/fashion_mnist_dense.py", ("epochs=61",), "dense")]
    assert StudyRunner(changed, [0], {"dataset": "fashion_mnist", "epochs": 60}, str(tmp_path), path).committed_records() == {}
    more_seeds = StudyRunner(cells, [0, 10], {"dataset": "fashion_mnist", "epochs": 60}, str(tmp_path), path)
    assert list(more_seeds.committed_records()) == [("dense", 0)]


def _pilot_payload():
    cells = fashion_mnist_long_pilot(regimes=((5000, 60), (2500, 100)), chosen=(2500, 100))
    fits = {"pilot_n5000_e60_lr0.05": (0.96, 0.04, 0.80), "pilot_n2500_e100_lr0.05": (0.99, 0.05, 0.82),
            "pilot_n2500_e100_lr0.025": (0.99, 0.05, 0.83), "pilot_n2500_e100_lr0.1": (0.98, 0.05, 0.81)}  # fmt: skip
    records = [
        {**_record(c.name, 0, accuracy=0.88, train_accuracy=fits[c.name][0], val_accuracy=fits[c.name][2]),
         "metrics": _metrics(0.88, ece=fits[c.name][1], train_accuracy=fits[c.name][0], val_accuracy=fits[c.name][2],
                             val_nll=0.4, val_ece=0.03)}
        for c in cells
    ]  # fmt: skip
    study = {"study": {"cells": [{"name": c.name, "overrides": list(c.overrides)} for c in cells]}, "records": records}
    return study


def test_pilot_choice_is_the_cheapest_fitting_regime_then_the_best_validation_lr():
    assert pilot_choice(_pilot_payload()) == ((2500, 100), 0.025)
    unfit = _pilot_payload()
    for record in unfit["records"]:
        record["metrics"]["train_accuracy"] = 0.9
    assert pilot_choice(unfit) == (None, None)


def test_pilot_choice_reads_the_mean_over_seeds():
    def with_seed_one(train_accuracy, val_accuracy):
        payload = _pilot_payload()
        by_cell = {r["cell"]: r for r in payload["records"]}
        for name, fit, val in (("pilot_n2500_e100_lr0.05", train_accuracy, 0.82), ("pilot_n2500_e100_lr0.1", 0.98, val_accuracy)):
            record = json.loads(json.dumps(by_cell[name]))
            record["seed"], record["metrics"]["train_accuracy"], record["metrics"]["val_accuracy"] = 1, fit, val
            payload["records"].append(record)
        return payload

    # 0.99 and 0.94 average 0.965 < 0.97: the regime fails although seed 0 alone met the precondition
    assert pilot_choice(with_seed_one(0.94, 0.81)) == (None, None)
    # lr 0.1 averages (0.81 + 0.86) / 2 = 0.835 > 0.83 of lr 0.025 (one seed): the mean decides
    assert pilot_choice(with_seed_one(0.97, 0.86)) == ((2500, 100), 0.1)


def test_long_report_goes_above_the_short_study_and_keeps_the_prose(tmp_path):
    page = tmp_path / "RESULTS.md"
    page.write_text(f"# Results\n\nintro prose\n\n{BEGIN_MARKER}\nshort tables\n{END_MARKER}\n\nafter\n")
    cells = [{"name": "dense", "family": "dense", "sparsity": None, "config_file": "c.py", "overrides": [], "replicas": 3},
             {"name": "dense_ensemble", "family": "dense_ensemble", "sparsity": None, "config_file": "",
              "overrides": [], "composed_of": "dense", "members": 3}]  # fmt: skip
    header = {"dataset": "fashion_mnist", "train_examples": 5000, "epochs": 60, "learning_rate": 0.05,
              "sparsities": [0.8], "seeds": [0], "ood_examples": 10, "corruption_examples": 10}  # fmt: skip
    records = [_record("dense", s, accuracy=0.88 + s / 100, train_accuracy=0.99) for s in range(3)]
    records.append(_record("dense_ensemble", 0, accuracy=0.91, train_accuracy=0.995, members=3, member_accuracy_mean=0.8875))
    study = {"study": {**header, "cells": cells}, "records": records, "environment": {}}
    written = write_long_report(_pilot_payload(), study, str(page), str(tmp_path / "fig"))
    text = page.read_text()
    assert text.index("intro prose") < text.index(LONG_BEGIN_MARKER) < text.index(LONG_END_MARKER) < text.index(BEGIN_MARKER)
    assert "short tables" in text and "after" in text and "**2500 images, 100 epochs, lr 0.025**" in text
    assert "train accuracy 0.9900 ± 0.0000 (≥ 0.97), test ECE 0.0400 ± 0.0000 (≥ 0.03): met" in text
    assert "| dense_ensemble | 1 | 0.9100 ± 0.0000" in text
    # the members table: only the ensemble, its gain 100 x (0.91 - 0.8875) = 2.25 points over its members
    assert "| dense_ensemble | 1 | 0.8875 ± 0.0000 | 0.9100 ± 0.0000 | 2.25 ± 0.00 |" in text
    members_table = text.split("Ensembles and their members")[1].split("\n\n")[1]
    assert "| dense | " not in members_table  # single models have no members to compare with
    assert all(os.path.getsize(p) > 0 for p in written)
    again = write_long_report(_pilot_payload(), study, str(page), str(tmp_path / "fig"))
    assert page.read_text() == text and again == written  # rewriting replaces the block, nothing more
    json.dumps(study)  # the payload stays JSON


def test_cigl_averages_at_a_quarter_of_the_base_rate_as_the_official_run():
    from reporting.long_study import cigl_averaging_learning_rates

    assert cigl_averaging_learning_rates(epochs=60, learning_rate=0.1) == (0.025, 0.025)
    assert cigl_averaging_learning_rates(epochs=80, learning_rate=0.05) == (0.0125, 0.0125)


@pytest.mark.slow
def test_a_composed_ensemble_has_the_members_an_independent_ensemble_run_trains(tmp_path):
    """The page's rerun command for a composed row (ensemble.kind=independent, seed s) trains the very runs it averages."""
    import numpy as np

    from reporting.study import load_config
    from tf_freetickets.ensembles import EnsembleModel
    from tf_freetickets.experiments import runner
    from tf_freetickets.experiments.evaluation import members_source

    def config(seed, **ensemble):
        overrides = ["epochs=1", "width=0.25", "train_examples=256", "verbose=0", "sparse.sparsity=0.8", f"seed={seed}"]
        overrides += [f"ensemble.{k}={v!r}" for k, v in ensemble.items()]
        return load_config(os.path.join(ROOT, "configs/fashion_mnist_rigl.py"), overrides)

    for seed in (0, 1):
        runner.run(config(seed), str(tmp_path / f"single_{seed}"))
    runner.run(config(0, kind="independent", num_members=2), str(tmp_path / "ensemble"))
    singles = [EnsembleModel.from_saved_models(members_source(str(tmp_path / f"single_{s}"))).members[0] for s in (0, 1)]
    members = EnsembleModel.from_saved_models(members_source(str(tmp_path / "ensemble"))).members
    for single, member in zip(singles, members):
        for a, b in zip(single.get_weights(), member.get_weights()):
            np.testing.assert_array_equal(a, b)


def test_runner_rewrite_keeps_the_records_and_cells_it_does_not_plan(tmp_path):
    """A run of one cell (`--cells`) or new seeds adds to the JSON; earlier cells, records and order stay."""
    dense = Cell("dense", "configs/fashion_mnist_dense.py", ("epochs=60",), "dense")
    rigl = Cell("rigl", "configs/fashion_mnist_rigl.py", ("epochs=60",), "rigl", 0.8)
    path, header = str(tmp_path / "study.json"), {"dataset": "fashion_mnist", "epochs": 60}
    StudyRunner([dense, rigl], [0], header, str(tmp_path), path).write_json(
        [_record("dense", 0, accuracy=0.9), _record("rigl", 0, accuracy=0.8)]
    )
    only_rigl = StudyRunner([rigl], [0, 10], header, str(tmp_path), path)
    kept = only_rigl.records_outside_plan()
    assert [r["cell"] for r in kept[1]] == ["dense"]  # rigl seed 0 is planned again (read back), not kept twice
    only_rigl.write_json([_record("rigl", 0, accuracy=0.8), _record("rigl", 10, accuracy=0.81)], *kept)
    with open(path) as f:
        payload = json.load(f)
    assert [(r["cell"], r["seed"]) for r in payload["records"]] == [("dense", 0), ("rigl", 0), ("rigl", 10)]
    assert [c["name"] for c in payload["study"]["cells"]] == ["dense", "rigl"] and payload["study"]["seeds"] == [0, 10]
    redefined = Cell("dense", "configs/fashion_mnist_dense.py", ("epochs=61",), "dense")
    assert StudyRunner([redefined], [0], header, str(tmp_path), path).records_outside_plan()[1] == [
        r for r in payload["records"] if r["cell"] == "rigl"
    ]  # the redefined cell's old record goes; the other cell's stay
    assert StudyRunner([dense], [0], {**header, "epochs": 61}, str(tmp_path), path).records_outside_plan() == ([], [], [])


def test_runner_never_reuses_a_workdir_record_of_another_run(tmp_path):
    """A record.json left by another config (e.g. an older epochs count) raises instead of being read back."""
    cell = Cell("dense", "configs/fashion_mnist_dense.py", ("epochs=100",), "dense")
    header = {"dataset": "fashion_mnist", "epochs": 100}
    runner = StudyRunner([cell], [0], header, str(tmp_path / "runs"), str(tmp_path / "study.json"))
    run_dir = tmp_path / "runs" / "dense" / "seed_0"
    run_dir.mkdir(parents=True)
    mine = {**_record("dense", 0, accuracy=0.9), "command": runner._command(cell, 0, str(run_dir)),
            "settings": runner._settings()}  # fmt: skip
    (run_dir / "record.json").write_text(json.dumps(mine))
    assert runner._record(cell, 0, {})["metrics"]["accuracy"] == 0.9  # its own record: read back
    elsewhere = runner._command(cell, 0, "/other/spelling/of/the/folder")
    (run_dir / "record.json").write_text(json.dumps({**mine, "command": elsewhere}))
    assert runner._record(cell, 0, {})["metrics"]["accuracy"] == 0.9  # the folder's spelling does not matter
    old = Cell("dense", "configs/fashion_mnist_dense.py", ("epochs=80",), "dense")
    (run_dir / "record.json").write_text(json.dumps({**mine, "command": runner._command(old, 0, str(run_dir))}))
    with pytest.raises(ValueError, match="made by another run.*epochs=80"):
        runner._record(cell, 0, {})
    (run_dir / "record.json").write_text(json.dumps({**mine, "settings": {**header, "epochs": 80}}))
    with pytest.raises(ValueError, match="made by another run"):
        runner._record(cell, 0, {})


def test_runner_retrains_committed_sources_whose_files_a_composed_row_needs(tmp_path):
    """On a new machine the committed JSON holds a source run's record but not its model files: it trains again."""
    dense = Cell("dense", "configs/fashion_mnist_dense.py", ("epochs=60",), "dense", replicas=3)
    ensemble = Cell("dense_ensemble", family="dense_ensemble", composed_of="dense", members=3)
    path, header = str(tmp_path / "study.json"), {"dataset": "fashion_mnist", "epochs": 60}
    runner = StudyRunner([dense, ensemble], [0], header, str(tmp_path / "runs"), path)
    runner.write_json([_record("dense", s, accuracy=0.9) for s in (0, 1, 2)])
    finished = tmp_path / "runs" / "dense" / "seed_1"
    (finished / "members").mkdir(parents=True)
    (finished / "run_record.json").write_text("{}")  # a finished training run of the library
    (finished / "members" / "manifest.json").write_text("{}")
    committed = runner.committed_records()
    missing = runner.sources_without_files(runner.plan(), committed)
    assert [(cell.name, seed, composed) for cell, seed, composed in missing] == [
        ("dense", 0, "dense_ensemble seed 0"), ("dense", 2, "dense_ensemble seed 0")
    ]  # fmt: skip
    with pytest.raises(FileNotFoundError, match="dense seed 2 has no finished run"):
        runner._member_files(dense, 2)
    committed[("dense_ensemble", 0)] = _record("dense_ensemble", 0, accuracy=0.92)
    assert runner.sources_without_files(runner.plan(), committed) == []  # the ensemble is committed: nothing to redo


def test_runner_keeps_later_committed_records_in_the_json_while_it_trains(tmp_path, monkeypatch):
    """A run that retrains an early record (here: rigl seed 0) and is killed there still has every other record."""
    dense = Cell("dense", "configs/fashion_mnist_dense.py", ("epochs=60",), "dense")
    rigl = Cell("rigl", "configs/fashion_mnist_rigl.py", ("epochs=60",), "rigl", 0.8)
    path, header = str(tmp_path / "study.json"), {"dataset": "fashion_mnist", "epochs": 60}
    runner = StudyRunner([dense, rigl], [0, 10], header, str(tmp_path / "runs"), path, ood_examples=10)
    runner.write_json([_record("dense", 0, accuracy=0.9), _record("dense", 10, accuracy=0.91),
                       _record("rigl", 10, accuracy=0.8)])  # fmt: skip

    def killed(cell, seed, done):
        with open(path) as f:
            seen = [(r["cell"], r["seed"]) for r in json.load(f)["records"]]
        assert seen == [("dense", 0), ("dense", 10), ("rigl", 10)]
        raise KeyboardInterrupt

    monkeypatch.setattr(runner, "_record", killed)
    with pytest.raises(KeyboardInterrupt):
        runner.run(say=lambda line: None)
    with open(path) as f:
        assert [(r["cell"], r["seed"]) for r in json.load(f)["records"]] == [("dense", 0), ("dense", 10), ("rigl", 10)]


def test_vector_isa_names_the_widest_of_the_cpuinfo_flags():
    # Two "AMD EPYC" machines of this project ran the study ~2x apart in speed: AVX-512 vs AVX2.
    assert vector_isa("fpu sse2 avx avx2 fma avx512f avx512bw".split()) == "AVX-512"
    assert vector_isa("fpu sse2 avx avx2 fma".split()) == "AVX2"
    assert vector_isa(["avx"]) == "AVX"
    assert vector_isa(["neon", "asimd"]) == ""
