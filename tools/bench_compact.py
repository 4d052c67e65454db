"""Does a compacted ticket (`tft.compact`: dead channels removed) serve faster than the masked ticket and its dense twin?

  python tools/bench_compact.py --model=small_cnn --fractions=0,0.5,0.75 --batches=1,32 \
      --calls=20 --repeats=5 --train_steps=300 --output=out/bench_compact

For the model (bench_common.MODELS, 10 classes, random weights: latency does not depend on training):
- `dense`: the dense twin;
- for each channel fraction f: a random --sparsity ERK ticket (`tft.sparsify`) in which a fraction f
  of the output channels of every masked layer but the logits is zeroed, mask and kernel (a DST
  ticket rarely has dead channels: the fraction makes the channel sparsity explicit), as `masked f`,
  and `tft.compact` of it, as `compact f`. BatchNormalization is at its initial statistics, so a
  zeroed channel's constant is 0 and every zeroed channel goes (with trained statistics, a nonzero
  constant that feeds a "same"-padded convolution keeps its channel: the real tickets below show it);
each served two ways: `keras`, the model in a `tf.function` with a fixed input signature (the masked
ticket multiplies each kernel by its mask per call, as in training), and `saved_model`, through
`tf_freetickets.deploy.saved_model.export_member` and `tf.saved_model.load(...).serve` (the masked
ticket's endpoint reads the raw kernels, its zeros already in place).
Timing: --calls calls per window, windows of every variant interleaved (order rotated each repeat),
--repeats windows per batch size, medians; ratios are paired per window, to `dense` in the same
runtime. "max abs diff": each variant against the masked ticket's (or the dense model's) Keras output.

Real tickets (--train_steps > 0, Fashion-MNIST from Debian's package): the units with an all-zero
kernel slice of small_cnn tickets at --sparsity, right after `sparsify` and after --train_steps steps
of RigL, of SRigL (neuron ablation on) and of Chase (channel removal), and what `compact` removes from them.
Writes compact.json / compact.md under --output.
"""

import os
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as common  # noqa: E402

_MODEL = flags.DEFINE_string("model", "small_cnn", "Model (see bench_common.MODELS).")
_SPARSITY = flags.DEFINE_float("sparsity", 0.9, "Global sparsity of the tickets (ERK).")
_FRACTIONS = flags.DEFINE_list(
    "fractions",
    ["0", "0.5", "0.75"],
    "Fractions of output channels zeroed per layer (empty: no latency, only the real-ticket counts).",
)
_BATCHES = flags.DEFINE_list("batches", ["1", "32"], "Batch sizes.")
_CALLS = flags.DEFINE_integer("calls", 20, "Calls per timed window.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed windows per variant and batch size (interleaved).")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 300, "RigL / SRigL steps for the real-ticket counts (0: sparsify only).")
_METHODS = flags.DEFINE_list(
    "methods", ["rigl", "srigl", "chase"], "Methods trained for the real-ticket counts (rigl, srigl, chase)."
)
_OUTPUT = flags.DEFINE_string("output", "out/bench_compact", "Output folder.")


def _served(model, shape):
    import tensorflow as tf

    fn = tf.function(lambda x: model(x, training=False), input_signature=[tf.TensorSpec((None, *shape), tf.float32)])
    return lambda x: fn(x).numpy()


def variants(model_name, sparsity, fractions, folder):
    """{name: (callable x -> numpy, reference name)} and {name: facts} for the dense twin and each fraction."""
    import keras
    import tensorflow as tf

    import tf_freetickets as tft
    from tf_freetickets.deploy.saved_model import export_member

    shape = common.input_shape(model_name)
    keras.utils.set_random_seed(0)
    dense = common.build_model(model_name)
    models = {"dense": dense}
    facts = {"dense": {"fraction": None, "params": dense.count_params()}}
    for fraction in fractions:
        masked = common.zero_channels(tft.sparsify(dense, sparsity, distribution="erk", seed=0), fraction, seed=1)
        small, report = tft.compact(masked)
        models[f"masked {fraction:g}"], models[f"compact {fraction:g}"] = masked, small
        params = report.params_before
        facts[f"masked {fraction:g}"] = {"fraction": fraction, "params": params}
        facts[f"compact {fraction:g}"] = {"fraction": fraction, "params": report.params_after,
                                          "units": [(r.layer, r.before, r.after) for r in report.rows]}  # fmt: skip
    functions = {}
    for name, model in models.items():
        reference = name.replace("compact", "masked")
        functions[f"{name} / keras"] = (_served(model, shape), reference)
        path = export_member(model, os.path.join(folder, name.replace(" ", "_")))
        loaded = tf.saved_model.load(path)
        functions[f"{name} / saved_model"] = ((lambda m: lambda x: m.serve(x).numpy())(loaded), reference)
    return functions, models, facts


def trained_ticket(method, steps, sparsity, seed=0):
    """small_cnn at `sparsity` after `steps` steps of `method` (rigl, srigl, chase) on Fashion-MNIST (0: just sparsified).

    Chase runs its defaults (channel sparsity 0.5 on the code's cubic ramp, ending at the last mask update).
    """
    import keras

    import tf_freetickets as tft
    from tf_freetickets.data.fashion_mnist import load_fashion_mnist

    keras.utils.set_random_seed(seed)
    model = tft.sparsify(tft.models.small_cnn(), sparsity, distribution="erk", seed=seed)
    if not steps:
        return model
    x, y = load_fashion_mnist("train")
    x, y = x[: steps * 128].astype("float32") / 255.0, y[: steps * 128]
    updater_class = {"rigl": tft.RigL, "srigl": tft.SRigL, "chase": tft.Chase}[method]
    updater = updater_class(update_every=max(1, steps // 10), end_step=steps, seed=seed)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, batch_size=128, epochs=1, verbose=0,
              callbacks=[tft.MaskUpdate(updater, gradient_data=(x[:1024], y[:1024]))])  # fmt: skip
    return model


def ticket_latency(ticket, small, batches, calls, repeats, folder):
    """{batch: ratio of the compacted ticket's SavedModel to its dense twin's}, paired and interleaved (`paired_latency`)."""
    import keras
    import tensorflow as tf

    import tf_freetickets as tft
    from tf_freetickets.deploy.saved_model import export_member

    keras.utils.set_random_seed(0)
    models = {"dense": tft.models.small_cnn(), "masked": ticket}
    functions = {}
    for name, model, reference in (("dense", models["dense"], "dense"), ("compact", small, "masked")):
        loaded = tf.saved_model.load(export_member(model, os.path.join(folder, f"{name}_{id(ticket)}")))
        functions[f"{name} / saved_model"] = ((lambda m: lambda x: m.serve(x).numpy())(loaded), reference)
    shape = common.input_shape("small_cnn")
    ratios = [common.paired_latency(functions, models, b, calls, repeats, shape)["ratio_to_dense"] for b in batches]
    return {batch: r["compact / saved_model"] for batch, r in zip(batches, ratios)}


def real_tickets(steps, sparsity, methods, batches=(), calls=20, repeats=5, folder=None):
    """Zero-kernel units of real small_cnn tickets, what `compact` removes and (with `batches`) its latency.

    The latency: the compacted ticket's SavedModel against its dense twin's, batch by batch (`ticket_latency`).
    """
    import tf_freetickets as tft

    rows = []
    labels = {"rigl": "RigL", "srigl": "SRigL", "chase": "Chase"}
    runs = [("sparsify only", "rigl", 0)] + [(labels[m], m, steps) for m in methods if steps]
    for label, method, n in runs:
        started = time.perf_counter()
        ticket = trained_ticket(method, n, sparsity)
        small, report = tft.compact(ticket)
        producers = [r for r in report.rows if r.inputs_before is not None]
        rows.append({
            "ticket": label, "steps": n, "train_s": time.perf_counter() - started,
            "units": sum(r.before for r in producers),
            "zero_kernel_units": sum(r.dead + r.folded + r.kept_add + r.kept_other for r in producers),
            "removed": sum(r.before - r.after for r in producers), "unread_removed": sum(r.unread for r in producers),
            "kept_zero_kernel": sum(r.kept_add + r.kept_other for r in producers),
            "params_before": report.params_before, "params_after": report.params_after, "table": str(report),
            "compact_vs_dense": ticket_latency(ticket, small, batches, calls, repeats, folder) if batches else {},
        })  # fmt: skip
    return rows


def markdown(result):
    cfg = result["config"]
    header = ["variant", "channels zeroed", "params"]
    for batch in cfg["batches"]:
        header += [f"b={batch} keras ms", "vs dense", f"b={batch} SavedModel ms", "vs dense"]
    header.append("max abs diff")
    rows = []
    for name, facts in result["facts"].items() if cfg["fractions"] else []:
        row = [name, "-" if facts["fraction"] is None else f"{facts['fraction']:.0%}", facts["params"]]
        diff = 0.0
        for batch in cfg["batches"]:
            m = result["latency"][str(batch)]
            for runtime in ("keras", "saved_model"):
                key = f"{name} / {runtime}"
                row += [f"{m['ms'][key]:.2f}", common.fmt_ratio(m["ratio_to_dense"][key])]
                diff = max(diff, m["max_abs_diff"][key])
        rows.append(row + [f"{diff:.1e}"])
    lines = [common.markdown_table(header, rows)] if cfg["fractions"] else []
    if result["real_tickets"]:
        lines += ["", common.markdown_table(
            ["small_cnn ticket", "steps", "units (Conv2D + Dense)", "zero-kernel units", "removed by compact",
             "of which unread", "zero-kernel units kept", "params before -> after",
             *(f"compact SavedModel vs dense, b={b}" for b in cfg["batches"])],
            [[r["ticket"], r["steps"], r["units"], r["zero_kernel_units"], r["removed"], r["unread_removed"],
              r["kept_zero_kernel"], f"{r['params_before']} -> {r['params_after']}",
              *(common.fmt_ratio(r["compact_vs_dense"][b]) if b in r["compact_vs_dense"] else "-" for b in cfg["batches"])]
             for r in result["real_tickets"]],
        )]  # fmt: skip
    return "\n".join(lines)


def main(argv):
    del argv
    common.quiet_tensorflow()
    fractions = [float(f) for f in _FRACTIONS.value]
    batches = [int(b) for b in _BATCHES.value]
    config = {"model": _MODEL.value, "sparsity": _SPARSITY.value, "fractions": fractions, "batches": batches,
              "calls": _CALLS.value, "repeats": _REPEATS.value, "train_steps": _TRAIN_STEPS.value}  # fmt: skip
    started = time.perf_counter()
    result = {"config": config, "machine": common.machine_info(), "latency": {}}
    with tempfile.TemporaryDirectory(prefix="bench_compact_") as folder:
        functions, models, result["facts"] = variants(_MODEL.value, _SPARSITY.value, fractions, folder)
        for batch in batches if fractions else []:
            result["latency"][str(batch)] = common.paired_latency(functions, models, batch, _CALLS.value, _REPEATS.value,
                                                    common.input_shape(_MODEL.value))  # fmt: skip
            ratios = result["latency"][str(batch)]["ratio_to_dense"]
            print(f"batch {batch}: " + ", ".join(f"{k} {v:.2f}x" for k, v in ratios.items()))
        result["real_tickets"] = real_tickets(_TRAIN_STEPS.value, _SPARSITY.value, _METHODS.value, batches,
                                              _CALLS.value, _REPEATS.value, folder)  # fmt: skip
    result["seconds"] = time.perf_counter() - started
    table = markdown(result)
    json_path, _ = common.write_outputs(_OUTPUT.value, "compact", result, table)
    print(table)
    print(f"\nCPU: {result['machine']['cpu_model']}; load average at start {result['machine']['load_average_at_start']}")
    print(f"({result['seconds']:.0f} s; wrote {json_path})")


if __name__ == "__main__":
    app.run(main)
