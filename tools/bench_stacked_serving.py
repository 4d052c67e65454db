"""Do 3 CNN tickets stacked into one SavedModel (`stack_ensemble`) serve as fast as one dense twin?

  python tools/bench_stacked_serving.py --fractions=0,0.5,0.75 --batches=1,32 --threads=1,2 \
      --repeats=5 --window_s=0.3 --output=out/bench_stacked

small_cnn (width 1, Fashion-MNIST shape 28x28x1, 10 classes, random weights: latency does not depend
on training), every form a SavedModel served through `tf.saved_model.load(path).serve` (same runtime):
- `dense twin`: one dense small_cnn (`export_member`);
- `EnsembleModel x3`: 3 dense members (seeds 0..2) as `EnsembleModel(...).export`;
- `stacked x3`: the same 3 members as `stack_ensemble` (one graph), `export_member`;
- `stacked compact f x3`: for each channel fraction f, 3 --sparsity ERK tickets of those members with a
  fraction f of every prunable layer's output channels but the logits' zeroed (mask and kernel, as
  tools/bench_compact.py does), each `tft.compact`ed, then stacked.
Timing: a child process per --threads value (TF fixes its thread pools at start-up; inter-op 1);
calls per window calibrated to ~--window_s, windows of every form interleaved (order rotated each
repeat), --repeats windows, medians; ratios paired per window to the dense twin. "max abs diff": the
form's output against the mean of its members' Keras softmax probabilities (the dense twin: its own
softmax of Keras logits against softmax of its SavedModel logits).
Writes stacked_serving.json / stacked_serving.md under --output.
"""

import os
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as common  # noqa: E402

_FRACTIONS = flags.DEFINE_list("fractions", ["0", "0.5", "0.75"], "Fractions of output channels zeroed per layer.")
_SPARSITY = flags.DEFINE_float("sparsity", 0.9, "Sparsity of the tickets (ERK) before compaction.")
_BATCHES = flags.DEFINE_list("batches", ["1", "32"], "Batch sizes.")
_THREADS = flags.DEFINE_list("threads", ["1", "2"], "TensorFlow intra-op threads (each a child process).")
_MEMBERS = flags.DEFINE_integer("members", 3, "Ensemble size M.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed windows per form (interleaved).")
_WINDOW_S = flags.DEFINE_float("window_s", 0.3, "Approximate seconds per timed window.")
_OUTPUT = flags.DEFINE_string("output", "out/bench_stacked", "Output folder.")
_CHILD = flags.DEFINE_integer("child_threads", 0, "Internal: run the measurement in this process with N threads.")

SHAPE = (28, 28, 1)


def _probabilities(models, x):
    import keras
    import numpy as np

    return np.mean([keras.ops.convert_to_numpy(keras.ops.softmax(m(x, training=False))) for m in models], axis=0)


def forms(folder):
    """{form: (serve function x -> probabilities, Keras models whose mean probability it must equal)}."""
    import keras
    import tensorflow as tf

    import tf_freetickets as tft
    from tf_freetickets.deploy.saved_model import export_member
    from tf_freetickets.deploy.stacked import stack_ensemble

    members = []
    for seed in range(_MEMBERS.value):
        keras.utils.set_random_seed(seed)
        members.append(tft.models.small_cnn(input_shape=SHAPE))
    loaded = {}

    def add(name, path, models, softmax=False):
        loaded[name] = (tf.saved_model.load(path), models, softmax)

    add("dense twin", export_member(members[0], os.path.join(folder, "dense")), members[:1], softmax=True)
    add(f"EnsembleModel x{len(members)}", tft.EnsembleModel(members).export(os.path.join(folder, "ensemble")), members)
    add(f"stacked x{len(members)}", export_member(stack_ensemble(members), os.path.join(folder, "stacked")), members)
    for fraction in (float(f) for f in _FRACTIONS.value):
        tickets = [common.zero_channels(tft.sparsify(m, _SPARSITY.value, distribution="erk", seed=i), fraction, seed=10 + i)
                   for i, m in enumerate(members)]  # fmt: skip
        small = [tft.compact(ticket)[0] for ticket in tickets]
        path = export_member(stack_ensemble(small), os.path.join(folder, f"compact_{fraction:g}"))
        add(f"stacked compact {fraction:g} x{len(members)}", path, tickets)
    functions = {}
    for name, (obj, models, softmax) in loaded.items():
        serve = (lambda o: lambda x: tf.nn.softmax(o.serve(x)))(obj) if softmax else (lambda o: lambda x: o.serve(x))(obj)
        functions[name] = (serve, models)
    return functions


def _time(functions, x, repeats, window_s):
    """Per-window seconds per call of each form, windows interleaved, order rotated each repeat."""
    calls = {}
    for name, f in functions.items():
        f(x)  # trace / warm up
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < window_s / 3:
            f(x)
            n += 1
        calls[name] = max(1, int(n * 3))
    names, times = list(functions), {name: [] for name in functions}
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            for _ in range(calls[name]):
                functions[name](x)
            times[name].append((time.perf_counter() - start) / calls[name])
    return times


def measure(threads):
    """Rows of (batch, threads, form, ms, ratio to the dense twin, max abs diff) with `threads` intra-op threads."""
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_stacked_") as folder:
        functions = forms(folder)
        serve = {name: f for name, (f, _) in functions.items()}
        for batch in (int(b) for b in _BATCHES.value):
            x = tf.constant(np.random.default_rng(1).random((batch, *SHAPE), dtype=np.float32))
            diffs = {n: float(np.abs(f(x).numpy() - _probabilities(models, x.numpy())).max())
                     for n, (f, models) in functions.items()}  # fmt: skip
            times = _time(serve, x, _REPEATS.value, _WINDOW_S.value)
            base = times["dense twin"]
            for name, values in times.items():
                rows.append({"batch": batch, "threads": threads, "form": name, "ms": 1000 * common.median(values),
                             "ratio_to_dense_twin": common.median([a / b for a, b in zip(values, base)]),
                             "max_abs_diff": diffs[name], "raw_s": values})  # fmt: skip
    return rows


def main(argv):
    del argv
    common.quiet_tensorflow()
    import json

    if _CHILD.value:
        print(json.dumps(measure(_CHILD.value)))
        return
    started = time.perf_counter()
    machine = common.machine_info()
    rows = common.rows_per_thread_count(__file__, [int(t) for t in _THREADS.value], sys.argv[1:])
    config = {"model": "small_cnn", "shape": SHAPE, "members": _MEMBERS.value, "sparsity": _SPARSITY.value,
              "fractions": [float(f) for f in _FRACTIONS.value], "repeats": _REPEATS.value,
              "window_s": _WINDOW_S.value}  # fmt: skip
    result = {"config": config, "machine": machine, "rows": rows, "seconds": time.perf_counter() - started}
    table = common.markdown_table(
        ["batch", "threads", "form (SavedModel)", "ms", "vs one dense twin", "max abs diff"],
        [
            [
                r["batch"],
                r["threads"],
                r["form"],
                f"{r['ms']:.3f}",
                common.fmt_ratio(r["ratio_to_dense_twin"]),
                f"{r['max_abs_diff']:.1e}",
            ]
            for r in rows
        ],  # fmt: skip
    )
    load = machine["load_average_at_start"]
    markdown = f"CPU: {machine['cpu_model']} ({machine['cpu_count']} cores, load average at start {load})\n\n{table}\n"
    json_path, _ = common.write_outputs(_OUTPUT.value, "stacked_serving", result, markdown)
    print(markdown)
    print(f"({result['seconds']:.0f} s; wrote {json_path})")


if __name__ == "__main__":
    app.run(main)
