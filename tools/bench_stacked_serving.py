"""Do 3 CNN tickets in one graph (`stack_ensemble`, `group_ensemble`) serve as fast as one dense twin?

  python tools/bench_stacked_serving.py --fractions=0,0.5,0.75 --batches=1,32 --threads=1,2 \
      --repeats=5 --window_s=0.3 --runtimes=savedmodel,tflite --output=out/bench_stacked

small_cnn (width 1, Fashion-MNIST shape 28x28x1, 10 classes, random weights: latency does not depend
on training). Forms:
- `dense twin`: one dense small_cnn;
- `EnsembleModel x3`: 3 dense members (seeds 0..2) as `EnsembleModel(...).export` (SavedModel only);
- `stacked x3`: the same 3 members as `stack_ensemble` (one graph, M convolutions per layer);
- `grouped x3`: the same 3 as `group_ensemble` (first Conv2D fused, Conv2D(groups=3) after it,
  per-member EinsumDense heads);
- `stacked compact f x3`: for each channel fraction f, 3 --sparsity ERK tickets of those members with a
  fraction f of every prunable layer's output channels but the logits' zeroed (mask and kernel, as
  tools/bench_compact.py does), each `tft.compact`ed, then stacked; `grouped compact f x3`: the same
  compacted tickets grouped, where their compacted widths agree (else the row is absent and the
  reason printed).
Runtimes (--runtimes): `savedmodel`, every form served through `tf.saved_model.load(path).serve`
(`export_member`; the dense twin's logits softmaxed by one more TF op inside the timed call);
`tflite`, the dense twin (with its softmax as a layer), stacked, grouped and compacted forms through
`export_tflite` (default sparse encoding) and one TFLite interpreter each (XNNPACK, num_threads =
the thread count), set_tensor + invoke + get_tensor timed.
Timing: a child process per --threads value (TF fixes its thread pools at start-up; inter-op 1);
calls per window calibrated to ~--window_s, windows of every form of both runtimes interleaved (order
rotated each repeat), --repeats windows, medians; ratios paired per window to the dense twin of the
same runtime. "max abs diff": the form's output against the mean of its members' Keras softmax
probabilities (the dense twin: its own Keras softmax probabilities).
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
_RUNTIMES = flags.DEFINE_list("runtimes", ["savedmodel", "tflite"], "Runtimes: savedmodel, tflite.")
_OUTPUT = flags.DEFINE_string("output", "out/bench_stacked", "Output folder.")
_CHILD = flags.DEFINE_integer("child_threads", 0, "Internal: run the measurement in this process with N threads.")

SHAPE = (28, 28, 1)


def _probabilities(models, x):
    import keras
    import numpy as np

    return np.mean([keras.ops.convert_to_numpy(keras.ops.softmax(m(x, training=False))) for m in models], axis=0)


def keras_forms():
    """{form: (Keras model served, Keras models whose mean probability it must equal)}, {skipped form: why}."""
    import keras

    import tf_freetickets as tft
    from tf_freetickets.deploy.grouped import group_ensemble
    from tf_freetickets.deploy.stacked import stack_ensemble

    members = []
    for seed in range(_MEMBERS.value):
        keras.utils.set_random_seed(seed)
        members.append(tft.models.small_cnn(input_shape=SHAPE))
    m = len(members)
    skipped, built = {}, {"dense twin": (members[0], members[:1]), f"EnsembleModel x{m}": (tft.EnsembleModel(members), members)}
    built[f"stacked x{m}"], built[f"grouped x{m}"] = (stack_ensemble(members), members), (group_ensemble(members), members)
    for fraction in (float(f) for f in _FRACTIONS.value):
        tickets = [common.zero_channels(tft.sparsify(t, _SPARSITY.value, distribution="erk", seed=i), fraction, seed=10 + i)
                   for i, t in enumerate(members)]  # fmt: skip
        small = [tft.compact(ticket)[0] for ticket in tickets]
        built[f"stacked compact {fraction:g} x{m}"] = (stack_ensemble(small), tickets)
        try:
            built[f"grouped compact {fraction:g} x{m}"] = (group_ensemble(small), tickets)
        except ValueError as error:  # the compacted widths differ
            skipped[f"grouped compact {fraction:g} x{m}"] = str(error)
    return built, skipped


def saved_model_calls(built, folder, x):
    """{form: call with no argument serving `x` through the form's reloaded SavedModel}, and the loaded objects."""
    import tensorflow as tf

    from tf_freetickets.deploy.saved_model import export_member

    calls, loaded = {}, []
    for name, (model, _) in built.items():
        path = os.path.join(folder, name.replace(" ", "_"))
        loaded.append(tf.saved_model.load(model.export(path) if name.startswith("EnsembleModel") else export_member(model, path)))
        serve, tensor = loaded[-1].serve, tf.constant(x)
        if name == "dense twin":
            calls[name] = (lambda s, t: lambda: tf.nn.softmax(s(t)))(serve, tensor)
        else:
            calls[name] = (lambda s, t: lambda: s(t))(serve, tensor)
    return calls, loaded


def tflite_calls(built, x, threads):
    """{"TFLite " + form: call with no argument serving `x` through one interpreter}, {same: file bytes}."""
    from tf_freetickets.deploy import tflite
    from tf_freetickets.deploy.stacked import stack_ensemble

    calls, sizes = {}, {}
    for name, (model, _) in built.items():
        if name.startswith("EnsembleModel"):
            continue
        content = tflite.convert_to_tflite(stack_ensemble([model]) if name == "dense twin" else model)
        interpreter = tflite.make_interpreter(content, num_threads=threads)
        detail = interpreter.get_input_details()[0]
        interpreter.resize_tensor_input(detail["index"], list(x.shape))
        interpreter.allocate_tensors()
        output = interpreter.get_output_details()[0]["index"]

        def call(i=interpreter, index=detail["index"], out=output):
            i.set_tensor(index, x)
            i.invoke()
            return i.get_tensor(out)

        calls[f"TFLite {name}"], sizes[f"TFLite {name}"] = call, len(content)
    return calls, sizes


def measure(threads):
    """Rows of (batch, threads, runtime, form, ms, ratio to the same runtime's dense twin, max abs diff, bytes)."""
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    built, skipped = keras_forms()
    rows = [{"threads": threads, "form": name, "skipped": why} for name, why in skipped.items()]
    references = {name: models for name, (_, models) in built.items()}
    with tempfile.TemporaryDirectory(prefix="bench_stacked_") as folder:
        for batch in (int(b) for b in _BATCHES.value):
            x = np.random.default_rng(1).random((batch, *SHAPE), dtype=np.float32)
            calls, sizes, loaded = {}, {}, None
            if "savedmodel" in _RUNTIMES.value:
                calls, loaded = saved_model_calls(built, os.path.join(folder, str(batch)), x)
            if "tflite" in _RUNTIMES.value:
                more, sizes = tflite_calls(built, x, threads)
                calls.update(more)
            diffs = {n: float(np.abs(np.asarray(f()) - _probabilities(references[n.removeprefix("TFLite ")], x)).max())
                     for n, f in calls.items()}  # fmt: skip
            times = common.interleaved_window_times(calls, _REPEATS.value, _WINDOW_S.value)
            for name, values in times.items():
                runtime = "TFLite" if name.startswith("TFLite ") else "SavedModel"
                base = times["TFLite dense twin" if runtime == "TFLite" else "dense twin"]
                rows.append({"batch": batch, "threads": threads, "runtime": runtime, "form": name.removeprefix("TFLite "),
                             "ms": 1000 * common.median(values),
                             "ratio_to_dense_twin": common.median([a / b for a, b in zip(values, base)]),
                             "max_abs_diff": diffs[name], "bytes": sizes.get(name), "raw_s": values})  # fmt: skip
            del loaded
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
    skipped = {r["form"]: r["skipped"] for r in rows if "skipped" in r}
    rows = [r for r in rows if "skipped" not in r]
    config = {"model": "small_cnn", "shape": SHAPE, "members": _MEMBERS.value, "sparsity": _SPARSITY.value,
              "fractions": [float(f) for f in _FRACTIONS.value], "runtimes": _RUNTIMES.value, "repeats": _REPEATS.value,
              "window_s": _WINDOW_S.value}  # fmt: skip
    result = {"config": config, "machine": machine, "rows": rows, "skipped": skipped, "seconds": time.perf_counter() - started}
    table = common.markdown_table(
        ["batch", "threads", "runtime", "form", "ms", "vs one dense twin (same runtime)", "max abs diff", "file KB"],
        [
            [
                r["batch"],
                r["threads"],
                r.get("runtime", "SavedModel"),
                r["form"],
                f"{r['ms']:.3f}",
                common.fmt_ratio(r["ratio_to_dense_twin"]),
                f"{r['max_abs_diff']:.1e}",
                f"{r['bytes'] / 1024:.0f}" if r.get("bytes") else "",
            ]
            for r in rows
        ],  # fmt: skip
    )
    load = machine["load_average_at_start"]
    markdown = f"CPU: {machine['cpu_model']} ({machine['cpu_count']} cores, load average at start {load})\n\n{table}\n"
    markdown += "".join(f"\nNot measured: {form}: {why}\n" for form, why in skipped.items())
    json_path, _ = common.write_outputs(_OUTPUT.value, "stacked_serving", result, markdown)
    print(markdown)
    print(f"({result['seconds']:.0f} s; wrote {json_path})")


if __name__ == "__main__":
    app.run(main)
