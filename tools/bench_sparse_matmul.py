"""Can a sparse kernel make a 90%-sparse Dense layer faster than the dense matmul at batch 1 on this CPU?

  python tools/bench_sparse_matmul.py --sizes=784x2048,2048x2048,4096x4096 --sparsity=0.9 --output=out/bench_perf

A Dense layer at batch 1 is a matrix-vector product, memory-bound, where skipping 90% of the weights
could pay. For each (fan_in x fan_out) layer with a random mask at --sparsity, times y = x @ W for one
example with:
- `dense`: `tf.matmul` on the masked dense kernel (what a masked layer and its SavedModel run);
- `tf_sparse`: `tf.sparse.sparse_dense_matmul` on the nonzeros (COO `SparseTensor`, W^T x^T);
- `tf_csr`: TensorFlow's CSR kernel (`CSRSparseMatrix` + `SparseMatrixMatMul`, W^T x^T);
- `numpy_dense` and `scipy_csr`: x @ W in numpy (BLAS) and `scipy.sparse.csr_matrix` @ x: not a
  TensorFlow serving path (no graph, no SavedModel) and without TensorFlow's per-call overhead; the pair
  shows what a sparse matrix-vector kernel gains on this CPU over the dense one.
TensorFlow variants run inside `tf.function`; each is called --calls times per timed window, windows
interleaved (order rotated), --repeats windows, medians; ratios to `dense` are paired per window. Every
variant's output is checked against the dense one (max abs diff). Writes sparse_matmul.json / .md.
"""

import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as common  # noqa: E402

_SIZES = flags.DEFINE_list("sizes", ["784x2048", "2048x2048", "4096x4096"], "Dense layers, FAN_INxFAN_OUT.")
_SPARSITY = flags.DEFINE_list("sparsity", ["0.9"], "Fractions of zero weights (random mask).")
_CALLS = flags.DEFINE_integer("calls", 200, "Calls per timed window.")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed windows per variant (interleaved).")
_OUTPUT = flags.DEFINE_string("output", "out/bench_perf", "Output folder.")

VARIANTS = ("dense", "tf_sparse", "tf_csr", "numpy_dense", "scipy_csr")


def _functions(kernel, x):
    """{variant: zero-argument callable returning y (1, fan_out) as numpy} for one masked kernel."""
    import numpy as np
    import scipy.sparse
    import tensorflow as tf
    from tensorflow.python.ops.linalg.sparse import sparse_csr_matrix_ops as csr

    transposed = np.ascontiguousarray(kernel.T)  # (fan_out, fan_in): y^T = W^T x^T
    coo = tf.sparse.reorder(tf.sparse.from_dense(tf.constant(transposed)))
    csr_matrix = csr.CSRSparseMatrix(tf.constant(transposed))
    dense_kernel, inputs = tf.constant(kernel), tf.constant(x)
    scipy_matrix, x_column = scipy.sparse.csr_matrix(transposed), np.ascontiguousarray(x.T)
    dense = tf.function(lambda: tf.matmul(inputs, dense_kernel))
    coo_fn = tf.function(lambda: tf.transpose(tf.sparse.sparse_dense_matmul(coo, inputs, adjoint_b=True)))
    csr_fn = tf.function(lambda: tf.transpose(csr.matmul(csr_matrix, inputs, transpose_b=True)))
    return {
        "dense": lambda: dense().numpy(),
        "tf_sparse": lambda: coo_fn().numpy(),
        "tf_csr": lambda: csr_fn().numpy(),
        "numpy_dense": lambda: x @ kernel,
        "scipy_csr": lambda: (scipy_matrix @ x_column).T,
    }


def measure(fan_in, fan_out, sparsity, calls, repeats, seed=0):
    """Median microseconds per call of each variant, paired ratios to dense, max abs diffs."""
    import numpy as np

    rng = np.random.default_rng(seed)
    kernel = (rng.standard_normal((fan_in, fan_out)) * (rng.random((fan_in, fan_out)) >= sparsity)).astype("float32")
    x = rng.standard_normal((1, fan_in)).astype("float32")
    functions = _functions(kernel, x)
    reference = functions["dense"]()
    diffs = {name: float(np.max(np.abs(fn() - reference))) for name, fn in functions.items()}  # also warms up
    times = {name: [] for name in functions}
    names = list(functions)
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            fn = functions[name]
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            times[name].append((time.perf_counter() - start) / calls)
    return {
        "fan_in": fan_in, "fan_out": fan_out, "sparsity": sparsity, "nonzeros": int(np.count_nonzero(kernel)),
        "us": {name: 1e6 * common.median(values) for name, values in times.items()},
        "ratio_to_dense": {
            name: common.median([a / b for a, b in zip(values, times["dense"])]) for name, values in times.items()
        },
        "max_abs_diff": diffs,
    }  # fmt: skip


def markdown(rows):
    header = ["layer (fan_in x fan_out)", "sparsity"] + [f"{v} us (x dense)" for v in VARIANTS] + ["max abs diff"]
    table = []
    for r in rows:
        cells = [f"{r['us'][v]:.0f} ({r['ratio_to_dense'][v]:.2f}x)" for v in VARIANTS]
        worst = max(r["max_abs_diff"].values())
        table.append([f"{r['fan_in']} x {r['fan_out']}", f"{r['sparsity']:.2f}", *cells, f"{worst:.1e}"])
    return common.markdown_table(header, table)


def main(argv):
    del argv
    common.quiet_tensorflow()
    rows = []
    for size in _SIZES.value:
        fan_in, _, fan_out = size.partition("x")
        for sparsity in _SPARSITY.value:
            rows.append(measure(int(fan_in), int(fan_out), float(sparsity), _CALLS.value, _REPEATS.value))
            print(f"{size} at {sparsity}: " + ", ".join(f"{k} {v:.2f}x" for k, v in rows[-1]["ratio_to_dense"].items()))
    result = {"config": {"calls": _CALLS.value, "repeats": _REPEATS.value}, "machine": common.machine_info(), "rows": rows}
    table = markdown(rows)
    json_path, _ = common.write_outputs(_OUTPUT.value, "sparse_matmul", result, table)
    print(table)
    print(f"\n(wrote {json_path})")


if __name__ == "__main__":
    app.run(main)
