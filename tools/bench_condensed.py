"""Constant fan-in (SRigL-style) MLP tickets computed inside TensorFlow: which in-graph form is fastest?

  python tools/bench_condensed.py --widths=2048 --batches=1,32 --threads=1,2 --output=out/bench_condensed

An MLP 784-W-W-10 whose hidden layers keep exactly k = round((1 - sparsity) * fan_in) inputs per
output unit (SRigL's constant fan-in; the classifier dense, as ERK keeps it nearly dense) is computed
as one `tf.function` in three forms, interleaved, medians of --repeats windows:

- dense: the dense twin's matmuls on the masked kernels (what a ticket's SavedModel runs today);
- gather: the condensed form of SRigL's paper, `tf.gather` of the inputs by the [units, k] index
  table, multiplied by the [units, k] values and summed over k;
- sparse_matmul: `tf.sparse.sparse_dense_matmul` of the transposed kernel as a SparseTensor
  (TensorFlow's own sparse-times-dense kernel).

Each form's outputs are checked against the dense form (max abs diff printed). Nothing here needs
the library: it measures TensorFlow's kernels on the structure the library's SRigL tickets have.
"""

import os
import sys

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as common  # noqa: E402

_WIDTHS = flags.DEFINE_list("widths", ["2048"], "Hidden widths W of the 784-W-W-10 MLP.")
_BATCHES = flags.DEFINE_list("batches", ["1", "32"], "Batch sizes.")
_THREADS = flags.DEFINE_list("threads", ["1", "2"], "TensorFlow intra-op threads (each a child process).")
_SPARSITY = flags.DEFINE_float("sparsity", 0.9, "Sparsity of the hidden layers (constant fan-in).")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed windows per form (interleaved).")
_WINDOW_S = flags.DEFINE_float("window_s", 0.3, "Approximate seconds per timed window.")
_OUTPUT = flags.DEFINE_string("output", "out/bench_condensed", "Folder of the JSON and markdown table.")
_CHILD = flags.DEFINE_integer("child_threads", 0, "Internal: run the measurement in this process with N threads.")

FORMS = ("dense", "gather", "sparse_matmul")


def constant_fan_in_mlp(width, sparsity, seed=0):
    """Random constant fan-in supports and values of a 784-W-W-10 MLP.

    Returns:
      list of (index [units, k] int32, values [units, k] float32, fan_in) per
      layer; the classifier keeps every input (k = fan_in).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    sizes = (784, width, width, 10)
    layers = []
    for position, (fan_in, units) in enumerate(zip(sizes[:-1], sizes[1:])):
        k = fan_in if position == len(sizes) - 2 else max(1, round((1.0 - sparsity) * fan_in))
        index = np.stack([np.sort(rng.choice(fan_in, k, replace=False)) for _ in range(units)]).astype(np.int32)
        values = (rng.standard_normal((units, k)) * (2.0 / k) ** 0.5).astype(np.float32)
        layers.append((index, values, fan_in))
    return layers


def forms(layers):
    """The three `tf.function`s of `layers` (see the module docstring), ReLU between layers."""
    import numpy as np
    import tensorflow as tf

    last = len(layers) - 1
    kernels, indices, values, sparse = [], [], [], []
    for index, value, fan_in in layers:
        units, k = index.shape
        kernel = np.zeros((fan_in, units), np.float32)
        kernel[index, np.arange(units)[:, None]] = value
        kernels.append(tf.constant(kernel))
        indices.append(tf.constant(index))
        values.append(tf.constant(value))
        rows = np.repeat(np.arange(units, dtype=np.int64), k)
        st = tf.SparseTensor(np.stack([rows, index.reshape(-1).astype(np.int64)], 1), value.reshape(-1), (units, fan_in))
        sparse.append(tf.sparse.reorder(st))

    def act(i, x):
        return x if i == last else tf.nn.relu(x)

    @tf.function
    def dense(x):
        for i, kernel in enumerate(kernels):
            x = act(i, tf.matmul(x, kernel))
        return x

    @tf.function
    def gather(x):
        for i, (index, value) in enumerate(zip(indices, values)):
            x = act(i, tf.reduce_sum(tf.gather(x, index, axis=1) * value, axis=2))
        return x

    @tf.function
    def sparse_matmul(x):
        xt = tf.transpose(x)
        for i, st in enumerate(sparse):
            xt = act(i, tf.sparse.sparse_dense_matmul(st, xt))
        return tf.transpose(xt)

    return {"dense": dense, "gather": gather, "sparse_matmul": sparse_matmul}


def _time_forms(functions, x, repeats, window_s):
    """Median seconds per call of each form (`bench_common.interleaved_window_times`, one warm-up call)."""
    calls = {name: (lambda f=f: f(x)) for name, f in functions.items()}
    times = common.interleaved_window_times(calls, repeats, window_s, warmup=1)
    return {name: common.median(t) for name, t in times.items()}


def measure(threads):
    """Rows of (width, batch, form, seconds, ratio to dense, max abs diff) with `threads` intra-op threads."""
    import numpy as np
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(1)
    rows = []
    for width in (int(w) for w in _WIDTHS.value):
        functions = forms(constant_fan_in_mlp(width, _SPARSITY.value))
        for batch in (int(b) for b in _BATCHES.value):
            x = tf.constant(np.random.default_rng(1).random((batch, 784)).astype(np.float32))
            reference = functions["dense"](x).numpy()
            diffs = {n: float(np.abs(f(x).numpy() - reference).max()) for n, f in functions.items()}
            medians = _time_forms(functions, x, _REPEATS.value, _WINDOW_S.value)
            for name in FORMS:
                rows.append({"width": width, "batch": batch, "threads": threads, "form": name, "seconds": medians[name],
                             "ratio_to_dense": medians[name] / medians["dense"], "max_abs_diff": diffs[name]})  # fmt: skip
    return rows


def main(argv):
    del argv
    common.quiet_tensorflow()
    import json

    if _CHILD.value:
        print(json.dumps(measure(_CHILD.value)))
        return
    rows = common.rows_per_thread_count(__file__, [int(t) for t in _THREADS.value], sys.argv[1:])
    result = {"machine": common.machine_info(), "sparsity": _SPARSITY.value, "rows": rows}
    table = common.markdown_table(
        ["W", "batch", "threads", "form", "ms", "ratio to dense", "max abs diff"],
        [[r["width"], r["batch"], r["threads"], r["form"], f"{1000 * r['seconds']:.3f}", common.fmt_ratio(r["ratio_to_dense"]),
          f"{r['max_abs_diff']:.1e}"] for r in rows],  # fmt: skip
    )
    markdown = f"CPU: {result['machine']['cpu_model']}, sparsity {_SPARSITY.value}\n\n{table}\n"
    common.write_outputs(_OUTPUT.value, "bench_condensed", result, markdown)
    print(markdown)


if __name__ == "__main__":
    app.run(main)
