"""Does a 90%-sparse Dense-layer ticket (and an ensemble of three) serve faster than its dense twin at batch 1?

  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 python tools/bench_csr_serving.py --widths=1024,2048,4096 \
      --sparsity=0.9 --members=3 --output=out/bench_perf

For each hidden width W, an MLP 784 -> W -> W -> 10 (the Dense-heavy class; ERK densities by
default), its sparse tickets (`tft.sparsify`, seeds 0..M-1) and a dense twin, timed at batch 1:
- `keras_dense`, `keras_ticket`, `keras_ensemble`: the Keras model (the ticket after `tft.strip`,
  or the `EnsembleModel` of the M stripped tickets) in a `tf.function` with a fixed signature, what a
  SavedModel's `serve` endpoint runs; `keras_masked_ticket`: the ticket as trained, masks unfolded
  (every call multiplies each kernel by its mask); `saved_model_ticket`: the masked ticket through
  `tf_freetickets.deploy.saved_model.export_member` and `tf.saved_model.load(...).serve`;
- `numpy_dense`, `numpy_dense_ensemble`: `CSRPredictor(..., matrix_format="dense")`, the same
  chain with dense numpy matrices (BLAS): the dense twin in the same runtime as the CSR path;
- `csr_ticket`, `csr_ensemble`: `tf_freetickets.deploy.csr.CSRPredictor`, scipy CSR products (the
  ensemble's M tickets stacked into one product per layer).
Each variant is called --calls times per timed window, windows interleaved (order rotated),
--repeats windows, medians; ratios are paired per window, to `numpy_dense` (same runtime) and to
`keras_dense` (the dense model as served today). Every variant's output is checked against its Keras
model (max abs diff). Writes csr_serving.json / .md.
"""

import os
import sys
import tempfile

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as common  # noqa: E402

_WIDTHS = flags.DEFINE_list("widths", ["1024", "2048", "4096"], "Hidden widths W of the MLP 784 -> W -> W -> 10.")
_SPARSITY = flags.DEFINE_float("sparsity", 0.9, "Global sparsity of each ticket.")
_DISTRIBUTION = flags.DEFINE_string("distribution", "erk", "Layer-wise densities (uniform, er, erk).")
_MEMBERS = flags.DEFINE_integer("members", 3, "Tickets in the ensemble.")
_CALLS = flags.DEFINE_integer("calls", 100, "Calls per timed window.")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed windows per variant (interleaved).")
_OUTPUT = flags.DEFINE_string("output", "out/bench_perf", "Output folder.")

VARIANTS = ("keras_dense", "numpy_dense", "keras_masked_ticket", "keras_ticket", "saved_model_ticket", "csr_ticket",
            "keras_ensemble", "numpy_dense_ensemble", "csr_ensemble")  # fmt: skip


def mlp(width, seed):
    """The Dense-heavy model: 28x28x1 -> Flatten -> W relu -> W relu -> 10 logits."""
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(width, activation="relu"),
         keras.layers.Dense(width, activation="relu"), keras.layers.Dense(10)], name=f"mlp_{width}",
    )  # fmt: skip


def _functions(width, sparsity, distribution, members):
    """{variant: (callable x -> numpy outputs, keras reference callable)} and the nonzero counts."""
    import tensorflow as tf

    import tf_freetickets as tft
    from tf_freetickets.deploy.csr import CSRPredictor
    from tf_freetickets.deploy.saved_model import export_member

    dense = mlp(width, seed=100)
    masked = [tft.sparsify(mlp(width, seed=s), sparsity=sparsity, distribution=distribution, seed=s) for s in range(members)]
    tickets = [tft.strip(ticket) for ticket in masked]  # what a user deploys: masks folded into the kernels
    ensemble = tft.EnsembleModel(tickets)

    def served(model):
        spec = tf.TensorSpec((None, 28, 28, 1), tf.float32)
        fn = tf.function(lambda x: model(x, training=False), input_signature=[spec])
        return lambda x: fn(x).numpy()

    folder = tempfile.mkdtemp()
    saved = tf.saved_model.load(export_member(masked[0], os.path.join(folder, "ticket")))

    functions = {
        "keras_dense": (served(dense), dense),
        "numpy_dense": (CSRPredictor.from_model(dense, matrix_format="dense").predict, dense),
        "keras_masked_ticket": (served(masked[0]), masked[0]),
        "keras_ticket": (served(tickets[0]), tickets[0]),
        "saved_model_ticket": (lambda x: saved.serve(x).numpy(), masked[0]),
        "csr_ticket": (CSRPredictor.from_model(tickets[0]).predict, tickets[0]),
        "keras_ensemble": (served(ensemble), ensemble),
        "numpy_dense_ensemble": (CSRPredictor.from_ensemble(ensemble, matrix_format="dense").predict, ensemble),
        "csr_ensemble": (CSRPredictor.from_ensemble(ensemble).predict, ensemble),
    }
    counts = {"ticket_nonzeros": CSRPredictor.from_model(tickets[0]).nonzeros,
              "dense_weights": CSRPredictor.from_model(dense).dense_size}  # fmt: skip
    return functions, counts


def measure(width, sparsity, distribution, members, calls, repeats):
    """Median microseconds per call of each variant, paired ratios, max abs diffs to the Keras outputs."""
    import keras
    import numpy as np

    functions, counts = _functions(width, sparsity, distribution, members)
    x = np.random.default_rng(0).random((1, 28, 28, 1), dtype=np.float32)  # in [0, 1): the SavedModel's input contract
    diffs = {}
    for name, (fn, reference) in functions.items():
        diffs[name] = float(np.max(np.abs(fn(x) - keras.ops.convert_to_numpy(reference(x, training=False)))))
    times = common.interleaved_times({name: (lambda fn=fn: fn(x)) for name, (fn, _) in functions.items()}, repeats, calls)

    def paired(base):
        return {n: common.median([a / b for a, b in zip(v, times[base])]) for n, v in times.items()}

    return {
        "width": width, "sparsity": sparsity, "distribution": distribution, "members": members, **counts,
        "us": {name: 1e6 * common.median(values) for name, values in times.items()},
        "ratio_to_numpy_dense": paired("numpy_dense"), "ratio_to_keras_dense": paired("keras_dense"),
        "max_abs_diff": diffs,
    }  # fmt: skip


def markdown(rows):
    header = ["MLP 784-W-W-10", "variant", "latency us", "vs numpy_dense", "vs keras_dense", "max abs diff"]
    table = []
    for r in rows:
        label = f"W = {r['width']} ({r['ticket_nonzeros']} of {r['dense_weights']} weights per ticket)"
        for i, v in enumerate(VARIANTS):
            table.append([label if i == 0 else "", v, f"{r['us'][v]:.0f}", f"{r['ratio_to_numpy_dense'][v]:.2f}x",
                          f"{r['ratio_to_keras_dense'][v]:.2f}x", f"{r['max_abs_diff'][v]:.1e}"])  # fmt: skip
    return common.markdown_table(header, table)


def main(argv):
    del argv
    common.quiet_tensorflow()
    rows = []
    for width in _WIDTHS.value:
        rows.append(measure(int(width), _SPARSITY.value, _DISTRIBUTION.value, _MEMBERS.value, _CALLS.value, _REPEATS.value))
        print(f"W={width}: " + ", ".join(f"{k} {v:.2f}x" for k, v in rows[-1]["ratio_to_numpy_dense"].items()))
    config = {"calls": _CALLS.value, "repeats": _REPEATS.value, "threads": {
        k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}}  # fmt: skip
    result = {"config": config, "machine": common.machine_info(), "rows": rows}
    table = markdown(rows)
    json_path, _ = common.write_outputs(_OUTPUT.value, "csr_serving", result, table)
    print(table)
    print(f"\n(wrote {json_path})")


if __name__ == "__main__":
    app.run(main)
