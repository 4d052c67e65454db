"""The quality-per-millisecond frontier: the long_v2 study's models, each in every serving form, timed.

  python tools/bench_frontier.py --workdir=out/long_study_v2 --json=docs/results/long_study_v2.json \
      --seed_group=0 --threads=1 --repeats=7 --output=out/bench_frontier --figure=docs/results/frontier.png
  python tools/bench_frontier.py --report_only --output=out/bench_frontier --figure=docs/results/frontier.png

What users choose between: test accuracy, NLL, ECE and OoD AUROC (mean ± std over every record of the
row in the study JSON, so over all its finished seed groups) against the batch-1 CPU latency and the
file size of the row's models in each serving form, measured on the models of one seed group
(`--seed_group`) that the study left in `--workdir`. Every form returns the ensemble's mean probability (a
single model's softmax) and is checked against the Keras members' mean probability on a test batch.

Forms (the ones that apply to the row; a form that cannot serve a row says why in the table):
- single model: "SavedModel" (`export_member`), "TFLite" (`export_tflite`, XNNPACK), "compacted
  SavedModel" / "compacted TFLite" (`tft.compact` first: dead units removed), "compacted (offsets)
  TFLite" (`tft.compact(padded_constants="offset")`: no carrier channel);
- ensemble (M > 1): "EnsembleModel" (`EnsembleModel.export`), "stacked" (`stack_ensemble`),
  "compacted stacked" (`tft.compact` on each member, then stacked), "stacked TFLite", "grouped TFLite"
  (`group_ensemble`: one convolution per layer with groups=M; its SavedModel is slower, BENCHMARKS 6e),
  "compacted stacked TFLite", "compacted (offsets) stacked TFLite";
- "CSR" (`CSRPredictor`): tried on every row; it serves chains of Dense layers only.

Timing: one process, TensorFlow and the TFLite interpreters on `--threads` threads (inter-op 1), calls
per window calibrated to ~`--window_s`, the windows of every form of every row interleaved (order
rotated each repeat), `--repeats` windows, medians; ratios paired per window to the dense row's
SavedModel ("one dense twin", what TensorFlow Serving would run) and to the dense row in the form's
own runtime (its TFLite file for TFLite forms, "same runtime"). The quality columns are the study's (evaluated in Keras); each
form's max abs diff says how far its outputs are from them.

Rows come from the long_v2 study (`--workdir`, `--json`) and the structured study
(`--structured_workdir`, `--structured_json`: SRigL, Chase, `chase_dst_S` the DST ensemble of 3 Chase
tickets, and `chase_c75_0.9` / `chase_c75_dst_0.9`, Chase with 3/4 of its channels removed). A row
whose model files are missing (the study ran on another machine) is listed with the command
of the missing run (the record's, which retrains it) and left out of the timing; with
`--require_all` that is an error (exit 2) instead.
Writes frontier.json / frontier.md under --output and the figure (tools/reporting/frontier_page.py).
"""

import json
import os
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as common  # noqa: E402

from reporting.frontier_forms import member_paths, row_forms, study_cells  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_ROWS = ("dense", "dense_ensemble", "rigl_0.8", "rigl_0.9", "gmp_0.9", "dst_0.8", "dst_0.9", "dst_ft_0.8",
                "edst_0.8", "edst_0.9", "cigl_0.8", "cigl_0.9", "dnc_s2", "chase_0.8", "chase_dst_0.8", "chase_0.9",
                "chase_dst_0.9", "chase_c75_0.9", "chase_c75_dst_0.9")  # fmt: skip

_WORKDIR = flags.DEFINE_string("workdir", "out/long_study_v2", "The long_v2 study's --workdir (its model files).")
_JSON = flags.DEFINE_string("json", os.path.join(ROOT, "docs/results/long_study_v2.json"), "The study's JSON.")
_STRUCTURED_WORKDIR = flags.DEFINE_string("structured_workdir", "out/structured_study",
                                          "The structured study's --workdir (SRigL, Chase and chase_dst rows).")  # fmt: skip
_STRUCTURED_JSON = flags.DEFINE_string("structured_json", os.path.join(ROOT, "docs/results/structured_study.json"),
                                       "The structured study's JSON.")  # fmt: skip
_SEED = flags.DEFINE_integer("seed_group", 0, "Study seed group whose models are timed.")
_ROWS = flags.DEFINE_list("rows", list(DEFAULT_ROWS), "Study rows (cells) to place on the frontier.")
_THREADS = flags.DEFINE_integer("threads", 1, "TensorFlow intra-op threads and TFLite interpreter threads.")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed windows per form (interleaved).")
_WINDOW_S = flags.DEFINE_float("window_s", 0.2, "Approximate seconds per timed window.")
_REQUIRE_ALL = flags.DEFINE_bool("require_all", False, "Exit 2 when a row's model files are missing.")
_REPORT_ONLY = flags.DEFINE_bool("report_only", False, "Rebuild the table and figure from --output's JSON.")
_OUTPUT = flags.DEFINE_string("output", "out/bench_frontier", "Output folder (frontier.json, frontier.md).")
_FIGURE = flags.DEFINE_string("figure", "", "Also write the figure (PNG) here.")


def measure(rows, workdirs, seed, threads, repeats, window_s):
    """Exports and times every form of every row; returns (form rows, missing runs).

    `workdirs`: (the long_v2 study's, the structured study's).
    """
    import numpy as np

    from tf_freetickets.ensembles import EnsembleModel

    located = study_cells(*workdirs)
    cells = {name: cell for name, (cell, _) in located.items()}
    unknown = [r for r in rows if r not in cells]
    if unknown:
        raise ValueError(f"--rows names {unknown}, not rows of the long_v2 or structured study; known: {sorted(cells)}.")
    x = np.random.default_rng(seed).random((1, 28, 28, 1), dtype=np.float32)
    serves, results, missing = {}, [], []
    with tempfile.TemporaryDirectory(prefix="bench_frontier_") as folder:
        for row in rows:
            paths, gone = member_paths(cells[row], seed, located[row][1], cells)
            if gone:
                missing += [{"row": row, "run": name, "seed": s} for name, s in gone]
                print(f"{row}: model files missing for {gone}: not timed", flush=True)
                continue
            members = EnsembleModel.from_saved_models(paths).members
            row_serves, forms = row_forms(row, members, folder, threads, x)
            serves.update({(row, form): f for form, f in row_serves.items()})
            results += [{"row": row, "members": len(members), **form} for form in forms]
            print(f"{row}: {len(members)} member(s), {len(row_serves)} forms exported", flush=True)
        if ("dense", "SavedModel") not in serves:
            raise FileNotFoundError(f"the dense row's model files are not in {workdirs[0]} (seed {seed}): no baseline")
        calls = {key: (lambda serve=serve: serve(x)) for key, serve in serves.items()}
        times = common.interleaved_window_times(calls, repeats, window_s)
    base = times[("dense", "SavedModel")]
    same_runtime = {True: times.get(("dense", "TFLite")), False: base}
    for result in results:
        values = times.get((result["row"], result["form"]))
        if values:
            twin = same_runtime["TFLite" in result["form"]]
            result["ms"] = 1000 * common.median(values)
            result["ratio_to_dense_twin"] = common.median([a / b for a, b in zip(values, base)])
            result["ratio_same_runtime"] = common.median([a / b for a, b in zip(values, twin)]) if twin else None
            result["raw_s"] = values
    return results, missing


def main(argv):
    del argv
    common.quiet_tensorflow()
    from reporting import frontier_page

    json_path = os.path.join(_OUTPUT.value, "frontier.json")
    if _REPORT_ONLY.value:
        with open(json_path) as f:
            result = json.load(f)
    else:
        import tensorflow as tf

        tf.config.threading.set_intra_op_parallelism_threads(_THREADS.value)
        tf.config.threading.set_inter_op_parallelism_threads(1)
        started, machine = time.perf_counter(), common.machine_info()
        workdirs = (_WORKDIR.value, _STRUCTURED_WORKDIR.value)
        forms, missing = measure(_ROWS.value, workdirs, _SEED.value, _THREADS.value, _REPEATS.value,
                                 _WINDOW_S.value)  # fmt: skip
        if missing and _REQUIRE_ALL.value:
            print(frontier_page.missing_lines(missing, [_JSON.value, _STRUCTURED_JSON.value])[0])
            sys.exit(2)
        jsons = [os.path.relpath(p, ROOT) for p in (_JSON.value, _STRUCTURED_JSON.value)]
        config = {"workdirs": list(workdirs), "json": jsons, "seed": _SEED.value,
                  "threads": _THREADS.value, "repeats": _REPEATS.value, "window_s": _WINDOW_S.value, "batch": 1}  # fmt: skip
        result = {"config": config, "machine": machine, "forms": forms, "missing": missing,
                  "seconds": time.perf_counter() - started}  # fmt: skip
    studies = []
    for path in result["config"]["json"]:
        if os.path.exists(os.path.join(ROOT, path)):
            with open(os.path.join(ROOT, path)) as f:
                studies.append(json.load(f))
    markdown = frontier_page.page(result, studies, _FIGURE.value or None)
    common.write_outputs(_OUTPUT.value, "frontier", result, markdown)
    print(markdown)


if __name__ == "__main__":
    app.run(main)
