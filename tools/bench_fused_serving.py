"""Does an ensemble of three 90%-sparse MLP tickets, fused, serve at one dense model's latency?

  OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 NUMBA_NUM_THREADS=1 python tools/bench_fused_serving.py \
      --widths=1024,2048,4096 --batches=1,32 --shared=0.5 --output=out/bench_fused

For each hidden width W, an MLP 784 -> W -> W -> 10 (Flatten first; `mlp`, as bench_csr_serving), M tickets
at --sparsity with ERK densities (`tft.sparsify`, seeds 0..M-1) and a dense twin (seed 100). With
--shared=s the tickets are EDST-like: every ticket keeps the same random fraction s of ticket 0's
support in each layer (a common core) and draws the rest of its own count outside ticket 0's support,
its weights being its own initial weights there; --shared=0 leaves sparsify's independent random masks.
Variants, each timed at every batch size of --batches:
- `numpy_dense`: the dense twin as dense numpy products (`CSRPredictor(..., matrix_format="dense")`,
  BLAS): the dense twin in the same runtime as the fused path (numpy + compiled kernels, one thread
  each with the variables above). This is the fair comparison.
- `keras_dense`: the dense twin in a `tf.function` with a fixed signature (what a SavedModel's serve
  runs), TensorFlow's intra-op threads set by --tf_threads (1: the same thread count).
- `fused`: `FusedMLPEnsemble.predict` (path auto: the vector kernel at batch 1, the block kernel at
  batch 32), positions of one ticket in its own part; `fused_union`: the same with `split=False`, every
  union position stored with M values (zeros included); `fused_per_example` (batches > 1): the vector
  kernel example by example, the one-thread form of a prange over examples (each example reads the
  unions again).
- `csr_separate`: M `CSRPredictor`s, one per stripped ticket, called one after the other, then the mean
  of their softmax; `csr_stacked`: `CSRPredictor.from_ensemble`, the M tickets stacked into one scipy
  product per layer (section 6c of BENCHMARKS.md).
- `keras_ensemble`: the `EnsembleModel` of the M stripped tickets in a `tf.function`.
Windows of calls (about --window_ms each, the same count for a variant across windows) are interleaved
with the order rotated, --repeats windows, medians; ratios are paired per window. Max abs diff: the
ensemble variants' mean probabilities against the Keras `EnsembleModel`, the dense ones' outputs
against the Keras dense twin. Writes fused_serving.json / .md.
"""

import math
import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as common  # noqa: E402

_WIDTHS = flags.DEFINE_list("widths", ["1024", "2048", "4096"], "Hidden widths W of the MLP 784 -> W -> W -> 10.")
_BATCHES = flags.DEFINE_list("batches", ["1", "32"], "Batch sizes.")
_SPARSITY = flags.DEFINE_float("sparsity", 0.9, "Global sparsity of each ticket (ERK).")
_MEMBERS = flags.DEFINE_integer("members", 3, "Tickets in the ensemble.")
_SHARED = flags.DEFINE_list("shared", ["0.5"], "Fractions of ticket 0's support every ticket keeps (0: independent).")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed windows per variant (interleaved).")
_WINDOW_MS = flags.DEFINE_float("window_ms", 60.0, "Target length of one timed window.")
_TF_THREADS = flags.DEFINE_integer("tf_threads", 1, "TensorFlow intra-op threads (0: TensorFlow's default).")
_OUTPUT = flags.DEFINE_string("output", "out/bench_fused", "Output folder.")

VARIANTS = ("numpy_dense", "keras_dense", "fused", "fused_union", "fused_per_example", "csr_separate", "csr_stacked",
            "keras_ensemble")  # fmt: skip


def _share_supports(tickets, bases, shared, seed=0):
    """Gives tickets 1.. a common core: `shared` of ticket 0's support per layer, the rest drawn outside it.

    Each ticket keeps its layer's count; where too few positions lie outside ticket 0's support (a dense
    layer), the rest comes from ticket 0's support outside the core.
    """
    import keras
    import numpy as np

    import tf_freetickets as tft

    rng = np.random.default_rng(seed)
    layers = [tft.sparse.masked_layers(t) for t in tickets]
    for position, first in enumerate(layers[0]):
        mask0 = keras.ops.convert_to_numpy(first.kernel_mask).ravel()
        active, inactive = np.flatnonzero(mask0), np.flatnonzero(mask0 == 0)
        core = rng.choice(active, int(round(shared * active.size)), replace=False)
        for member in range(1, len(tickets)):
            own = rng.choice(inactive, min(active.size - core.size, inactive.size), replace=False)
            rest = np.setdiff1d(active, core)  # a layer too dense to draw outside (ERK's dense last layer)
            own = np.concatenate([own, rng.choice(rest, active.size - core.size - own.size, replace=False)])
            mask = np.zeros(mask0.size, np.float32)
            mask[np.concatenate([core, own])] = 1.0
            mask = mask.reshape(tuple(first.kernel_mask.shape))
            layer = layers[member][position]
            dense_kernel = keras.ops.convert_to_numpy(bases[member].get_layer(layer.name).kernel)
            layer.kernel_mask.assign(mask)
            layer.kernel_variable.assign(dense_kernel * mask)


def _support_overlap(tickets):
    """Mean over ticket pairs of |S_a & S_b| / |S_a| over all layers, and the supports' sizes."""
    import itertools

    import keras
    import numpy as np

    import tf_freetickets as tft

    supports = [np.concatenate([keras.ops.convert_to_numpy(layer.kernel).ravel() != 0 for layer in
                                tft.sparse.masked_layers(t)]) for t in tickets]  # fmt: skip
    pairs = [float(np.sum(a & b) / max(np.sum(a), 1)) for a, b in itertools.combinations(supports, 2)]
    return (sum(pairs) / len(pairs)) if pairs else 1.0


def mlp(width, seed):
    """The Dense-heavy model of bench_csr_serving: 28x28x1 -> Flatten -> W relu -> W relu -> 10 logits."""
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(width, activation="relu"),
         keras.layers.Dense(width, activation="relu"), keras.layers.Dense(10)], name=f"mlp_{width}",
    )  # fmt: skip


def _models(width, sparsity, members, shared):
    import tf_freetickets as tft

    dense = mlp(width, seed=100)
    bases = [mlp(width, seed=s) for s in range(members)]
    masked = [tft.sparsify(base, sparsity=sparsity, distribution="erk", seed=s) for s, base in enumerate(bases)]
    if shared > 0:
        _share_supports(masked, bases, shared)
    return dense, masked, [tft.strip(ticket) for ticket in masked]


def _functions(dense, masked, stripped):
    """{variant: callable x -> numpy outputs (mean probabilities for the ensembles)} and the predictors."""
    import numpy as np
    import tensorflow as tf

    import tf_freetickets as tft
    from tf_freetickets.deploy.csr import CSRPredictor
    from tf_freetickets.deploy.fused import FusedMLPEnsemble

    def served(model):
        fn = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec((None, 28, 28, 1), tf.float32)])
        return lambda x: fn(x).numpy()

    def softmax(z):
        z = np.exp(z - z.max(axis=-1, keepdims=True))
        return z / z.sum(axis=-1, keepdims=True)

    ensemble = tft.EnsembleModel(stripped)
    fused = FusedMLPEnsemble.from_models(masked)
    union = FusedMLPEnsemble.from_models(masked, split=False)
    separate = [CSRPredictor.from_model(t) for t in stripped]
    functions = {
        "numpy_dense": CSRPredictor.from_model(dense, matrix_format="dense").predict,
        "keras_dense": served(dense),
        "fused": lambda x: fused.predict(x)[0],
        "fused_union": lambda x: union.predict(x)[0],
        "fused_per_example": lambda x: fused.predict(x, path="vector")[0],
        "csr_separate": lambda x: np.mean([softmax(p.predict(x)) for p in separate], axis=0),
        "csr_stacked": CSRPredictor.from_ensemble(ensemble).predict,
        "keras_ensemble": served(ensemble),
    }
    return functions, ensemble, (fused, union), separate


def _stored_bytes(fused):
    """Bytes of a FusedMLPEnsemble's layer arrays (biases aside)."""
    return sum(a.nbytes for layer in fused.layers for a in layer.arrays()[:6])


def _time_windows(functions, x, repeats, window_ms):
    """Per variant: seconds per call in each of `repeats` interleaved windows (order rotated)."""
    calls = {}
    for name, fn in functions.items():
        fn(x)  # warm: kernels compiled, tf.function traced
        start = time.perf_counter()
        fn(x)
        calls[name] = max(1, min(200, math.ceil(window_ms / 1000.0 / max(time.perf_counter() - start, 1e-6))))
    times, names = {name: [] for name in functions}, list(functions)
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            fn = functions[name]
            start = time.perf_counter()
            for _ in range(calls[name]):
                fn(x)
            times[name].append((time.perf_counter() - start) / calls[name])
    return times, calls


def measure(width, sparsity, members, shared, batches, repeats, window_ms):
    """One width: latencies, paired ratios and max abs diffs per batch size, and the storage counts."""
    import keras
    import numpy as np

    dense, masked, stripped = _models(width, sparsity, members, shared)
    functions, ensemble, (fused, union), separate = _functions(dense, masked, stripped)
    M = members
    counts = {"dense_weights": fused.dense_size, "member_nonzeros": fused.member_nonzeros, "union_nonzeros": fused.nonzeros,
              "support_overlap": _support_overlap(masked),
              "bytes": {"numpy_dense": 4 * fused.dense_size,
                        "fused": _stored_bytes(fused), "fused_union": _stored_bytes(union),
                        "csr_separate": sum(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes for p in separate
                                            for m in (s[1] for s in p._chain if s[0] == "dense"))}}  # fmt: skip
    per_batch = {}
    for batch in batches:
        x = np.random.default_rng(0).standard_normal((batch, 28, 28, 1)).astype("float32")
        run = dict(functions) if batch > 1 else {k: v for k, v in functions.items() if k != "fused_per_example"}
        expected_ensemble = keras.ops.convert_to_numpy(ensemble(x, training=False))
        expected_dense = keras.ops.convert_to_numpy(dense(x, training=False))
        diffs = {name: float(np.max(np.abs(fn(x) - (expected_dense if "dense" in name else expected_ensemble))))
                 for name, fn in run.items()}  # fmt: skip
        times, calls = _time_windows(run, x, repeats, window_ms)

        def paired(base, times=times):
            return {n: common.median([a / b for a, b in zip(v, times[base])]) for n, v in times.items()}

        per_batch[str(batch)] = {"us": {n: 1e6 * common.median(v) for n, v in times.items()}, "calls_per_window": calls,
                                 "ratio_to_numpy_dense": paired("numpy_dense"), "ratio_to_keras_dense": paired("keras_dense"),
                                 "max_abs_diff": diffs}  # fmt: skip
    return {"width": width, "sparsity": sparsity, "members": M, "shared": shared, **counts, "batches": per_batch,
            "index_dtypes": [d.name for d in fused.index_dtypes]}  # fmt: skip


def markdown(rows):
    """The results table: one block of variants per (width, shared, batch)."""
    header = ["MLP 784-W-W-10", "batch", "variant", "latency us", "vs numpy dense twin", "vs Keras dense twin", "max abs diff"]
    table = []
    for r in rows:
        mb = {k: f"{v / 1e6:.1f} MB" for k, v in r["bytes"].items()}
        label = (f"W = {r['width']}, shared {r['shared']:.0%} (overlap {r['support_overlap']:.0%}): union "
                 f"{r['union_nonzeros']:,} of {r['member_nonzeros']:,} ticket nonzeros; {mb['fused']} fused "
                 f"({mb['fused_union']} union) vs {mb['csr_separate']} CSR vs {mb['numpy_dense']} dense")  # fmt: skip
        for batch, b in r["batches"].items():
            for i, v in enumerate(n for n in VARIANTS if n in b["us"]):
                table.append([label if i == 0 else "", batch if i == 0 else "", v, f"{b['us'][v]:.0f}",
                              f"{b['ratio_to_numpy_dense'][v]:.2f}x", f"{b['ratio_to_keras_dense'][v]:.2f}x",
                              f"{b['max_abs_diff'][v]:.1e}"])  # fmt: skip
                label = ""
    return common.markdown_table(header, table)


def main(argv):
    del argv
    common.quiet_tensorflow()
    import tensorflow as tf

    if _TF_THREADS.value:
        tf.config.threading.set_intra_op_parallelism_threads(_TF_THREADS.value)
        tf.config.threading.set_inter_op_parallelism_threads(_TF_THREADS.value)
    batches = [int(b) for b in _BATCHES.value]
    rows = []
    for shared in (float(s) for s in _SHARED.value):
        for width in (int(w) for w in _WIDTHS.value):
            rows.append(measure(width, _SPARSITY.value, _MEMBERS.value, shared, batches, _REPEATS.value, _WINDOW_MS.value))
            for batch, b in rows[-1]["batches"].items():
                print(f"W={width} shared={shared} batch={batch}: "
                      + ", ".join(f"{k} {v:.2f}x" for k, v in b["ratio_to_numpy_dense"].items()), flush=True)  # fmt: skip
    threads = {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")}
    config = {"repeats": _REPEATS.value, "window_ms": _WINDOW_MS.value, "tf_threads": _TF_THREADS.value, "threads": threads}
    result = {"config": config, "machine": common.machine_info(), "rows": rows}
    table = markdown(rows)
    json_path, _ = common.write_outputs(_OUTPUT.value, "fused_serving", result, table)
    print(table)
    print(f"\n(wrote {json_path})")


if __name__ == "__main__":
    app.run(main)
