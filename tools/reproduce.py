"""Reproduces the papers' claims at small scale: every method, two sparsities, several seeds, one JSON.

  python tools/reproduce.py                          # the 4-epoch study: train + evaluate, then the report
  python tools/reproduce.py --study=long_pilot       # the long study's pilot (regime and learning rate)
  python tools/reproduce.py --study=long             # the long-training study (about 2.5 h on 2 cores)
  python tools/reproduce.py --study=long --report_only   # rebuild its section of docs/RESULTS.md from the JSON
  python tools/reproduce.py --study=long_v2          # the long study rerun to decide its claims (5 seed groups)
  python tools/reproduce.py --study=long_v2 --report_only   # its section: claims tested (Welch, Holm), forest plot
  python tools/reproduce.py --study=structured       # SRigL and Chase against long_v2's RigL rows (2 seed groups, 6 runs each)

Studies (cells in tools/reporting/study.py and long_study.py):
- short: dense single model, dense ensemble (M=3), DST ensemble (M=3), EDST ensemble (M=3), RigL,
  gradual magnitude pruning (GMP), CigL and Divide-and-Co-training (S=2) on Fashion-MNIST with the
  small CNN for 4 epochs, at sparsities 0.8 and 0.9 where they apply.
- long: the same methods on a 5,000-image subset trained long enough to fit it (the papers'
  over-confident regime), every schedule in the papers' proportions, ensembles of independent runs
  composed from single runs, an EDST exploration-length ablation, and the claims table.
- long_pilot: the dense runs that chose the long study's regime and base learning rate on a
  held-out validation split.
- long_v2: the long study rerun over 5 seed groups with a validation split (temperature scaling),
  the unconfounded FreeTickets-recipe DST row and more measures; its section of the page tests
  each claim (Welch's CI and p, Holm-adjusted over the table) and draws a forest plot.
- structured: SRigL and Chase with exactly long_v2's RigL settings (only the method differs), two
  seed groups of 3 runs per row, against long_v2's RigL records, and the DST ensemble of each seed
  group's 3 Chase runs beside long_v2's `dst_0.8`; the records add the dead-unit fraction and the
  parameters `tft.compact` keeps.

Each (cell, seed) trains with `tf_freetickets.experiments.runner.run` in WORKDIR/<cell>/seed_<s>/ and
is evaluated on the test set (accuracy, NLL, ECE, Brier, member diversity, reliability bins), on
the offline OoD sets (sklearn digits, uniform and Gaussian noise; AUROC with predictive entropy)
and on the 13 CIFAR-10-C-style corruptions at 5 severities; its record also holds the exact
`python -m tf_freetickets.train` command of that cell. A finished (cell, seed) is not run again,
so an interrupted study resumes; so is one whose record is already in --json for the same study
settings and package version (a study longer than one machine's life resumes from the committed
JSON). The report (tables between the study's markers in --results_md, and PNGs) is made from it.

Rerun one cell: python tools/reproduce.py --cells=edst_0.8 --seeds=0 --workdir=out/one \
    --json=out/one/reproduce.json --results_md=out/one/RESULTS.md --figures_dir=out/one
"""

import json
import os
import sys

from absl import app, flags

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # run from a checkout without installing

from reporting import long_study, structured_study  # noqa: E402
from reporting.study import fashion_mnist_study  # noqa: E402
from reporting.study_runner import StudyRunner  # noqa: E402

_DEFAULTS = {
    "short": {"workdir": "out/reproduce", "json": "docs/results/reproduce.json", "seeds": ["0", "10", "20"]},
    "long": {"workdir": "out/long_study", "json": "docs/results/long_study.json", "seeds": ["0", "10", "20"]},
    "long_pilot": {"workdir": "out/long_pilot", "json": "docs/results/long_pilot.json", "seeds": ["0"]},
    "long_v2": {
        "workdir": "out/long_study_v2",
        "json": "docs/results/long_study_v2.json",
        "seeds": [str(s) for s in long_study.DECIDED_SEEDS],
    },
    "structured": {
        "workdir": "out/structured_study",
        "json": "docs/results/structured_study.json",
        "seeds": [str(s) for s in structured_study.STRUCTURED_SEEDS],
    },
}
_STUDY = flags.DEFINE_enum(
    "study", "short", list(_DEFAULTS), "Which study: short (4 epochs), long, long_pilot, long_v2, structured."
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Folder of the runs (default: out/reproduce, out/long_study, out/long_pilot).")
_SEEDS = flags.DEFINE_list("seeds", [], "Seeds (default 0,10,20; pilot 0); ensemble members of seed s use s, s+1, s+2.")
_EPOCHS = flags.DEFINE_integer("epochs", None, "Epochs of every single-model run (default: short 4, long E of the study).")
_SPARSITIES = flags.DEFINE_list("sparsities", ["0.8", "0.9"], "Sparsities of the sparse cells.")
_CELLS = flags.DEFINE_list("cells", [], "Run only these cells (default: all).")
_PILOT_REGIME = flags.DEFINE_list(
    "pilot_regime", [], "long_pilot: TRAIN_EXAMPLES,EPOCHS of stage 2 (the chosen regime; its other learning rates)."
)
_SET = flags.DEFINE_multi_string("set", [], "Extra override for every cell, dotted.key=value (e.g. train_examples=2000).")
_OOD_EXAMPLES = flags.DEFINE_integer("ood_examples", 1000, "Images per OoD set (digits are capped at 1797).")
_CORRUPTION_EXAMPLES = flags.DEFINE_integer("corruption_examples", 1000, "Test images corrupted (first N of the test set).")
_JSON = flags.DEFINE_string("json", None, "JSON of every figure (default: docs/results/<study JSON>).")
_RESULTS_MD = flags.DEFINE_string(
    "results_md", os.path.join(ROOT, "docs/RESULTS.md"), "Markdown page whose tables are rewritten."
)
_FIGURES_DIR = flags.DEFINE_string("figures_dir", os.path.join(ROOT, "docs/results"), "Folder of the PNG figures.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Only rebuild the tables and figures from --json.")


def _path(name):
    """--workdir / --json, or the study's default (the JSON relative to the repository root)."""
    value = {"workdir": _WORKDIR.value, "json": _JSON.value}[name]
    if value:
        return value
    default = _DEFAULTS[_STUDY.value][name]
    return os.path.join(ROOT, default) if name == "json" else default


def _epochs():
    if _EPOCHS.value is not None:
        return _EPOCHS.value
    return 4 if _STUDY.value == "short" else long_study.EPOCHS  # long, long_v2: E of the pilot


def _study_cells():
    sparsities = tuple(float(s) for s in _SPARSITIES.value)
    if _STUDY.value == "short":
        return fashion_mnist_study(_epochs(), sparsities)
    if _STUDY.value == "long":
        return long_study.fashion_mnist_long_study(epochs=_epochs(), sparsities=sparsities)
    if _STUDY.value == "long_v2":
        return long_study.fashion_mnist_decided_study(epochs=_epochs(), sparsities=sparsities)
    if _STUDY.value == "structured":
        return structured_study.fashion_mnist_structured_study(epochs=_epochs(), sparsities=sparsities)
    chosen = None
    if _PILOT_REGIME.value:
        if len(_PILOT_REGIME.value) != 2:
            raise app.UsageError(f"--pilot_regime={_PILOT_REGIME.value} must be TRAIN_EXAMPLES,EPOCHS.")
        chosen = tuple(int(v) for v in _PILOT_REGIME.value)
    return long_study.fashion_mnist_long_pilot(chosen=chosen)


def _selected_cells():
    cells = _study_cells()
    if not _CELLS.value:
        return cells
    known = {c.name: c for c in cells}
    unknown = [name for name in _CELLS.value if name not in known]
    if unknown:
        raise app.UsageError(f"Unknown cells {unknown}; the study has {sorted(known)}.")
    chosen = [known[name] for name in _CELLS.value]
    sources = [known[c.composed_of] for c in chosen if c.composed_of and known[c.composed_of] not in chosen]
    return sources + chosen


def _header():
    """The study's settings: records of the JSON are reused only when these are the same."""
    import tf_freetickets

    header = {"package_version": tf_freetickets.__version__, "dataset": "fashion_mnist"}
    if _STUDY.value in ("long", "long_v2", "structured"):
        header.update(study=_STUDY.value, train_examples=long_study.TRAIN_EXAMPLES, learning_rate=long_study.LEARNING_RATE)
    if _STUDY.value in ("long_v2", "structured"):  # the OoD sets behind the mean OoD figures (the first study had three)
        from tf_freetickets.data.ood import OOD_SET_NAMES

        header["ood_sets"] = list(OOD_SET_NAMES)
    if _STUDY.value == "long_pilot":  # each pilot cell names its own subset, epochs and learning rate
        header["study"] = "long_pilot"
    else:
        header.update(epochs=_epochs(), sparsities=[float(s) for s in _SPARSITIES.value])
    header.update(
        extra_overrides=list(_SET.value), ood_examples=_OOD_EXAMPLES.value, corruption_examples=_CORRUPTION_EXAMPLES.value
    )
    return header


def _train_all():
    runner = StudyRunner(
        _selected_cells(), _SEEDS.value or _DEFAULTS[_STUDY.value]["seeds"], _header(), _path("workdir"), _path("json"),
        root=ROOT, extra_overrides=_SET.value, ood_examples=_OOD_EXAMPLES.value,
        corruption_examples=_CORRUPTION_EXAMPLES.value, fit_measures=_STUDY.value != "short",
        structure_measures=_STUDY.value == "structured",
    )  # fmt: skip
    return runner.run(say=lambda line: print(line, flush=True))


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    from reporting.long_page import write_long_report
    from reporting.results_page import write_report

    if not _REPORT_ONLY.value:
        _train_all()
    json_path = _path("json")
    if not os.path.exists(json_path):
        print(f"error: no results JSON at {json_path}; run without --report_only first.", file=sys.stderr)
        return 2
    with open(json_path) as f:
        payload = json.load(f)
    if _STUDY.value == "long_v2":
        from reporting.decided_page import write_decided_report

        counts = {}
        for record in payload["records"]:
            counts[record["cell"]] = counts.get(record["cell"], 0) + 1
        print(f"{len(payload['records'])} records in {json_path}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
        written = write_decided_report(payload, _RESULTS_MD.value, _FIGURES_DIR.value)
    elif _STUDY.value == "structured":  # the RigL baseline rows are the long_v2 study's records
        from reporting.structured_page import write_structured_report

        decided_path = os.path.join(ROOT, _DEFAULTS["long_v2"]["json"])
        decided = json.load(open(decided_path)) if os.path.exists(decided_path) else None
        written = write_structured_report(payload, decided, _RESULTS_MD.value)
    elif _STUDY.value == "short":
        written = write_report(payload, _RESULTS_MD.value, _FIGURES_DIR.value)
    else:
        pilot_path = os.path.join(ROOT, _DEFAULTS["long_pilot"]["json"])
        pilot = payload
        if _STUDY.value == "long":
            pilot = json.load(open(pilot_path)) if os.path.exists(pilot_path) else None
        study = payload if _STUDY.value == "long" else None
        written = write_long_report(pilot, study, _RESULTS_MD.value, _FIGURES_DIR.value)
    print("wrote " + ", ".join(written))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.exit(app.run(main))
