"""Do trained tickets of any benchmark model, compacted (`tft.compact`), serve faster than their dense twin?

  python tools/bench_compact_tickets.py --model=cifar_resnet20 --methods=chase --sparsities=0.8,0.9 \
      --train_steps=1000 --batches=1,32 --threads=1 --output=out/bench_compact_tickets_resnet20

  python tools/bench_compact_tickets.py --tickets=out/structured_study/chase_0.9/seed_0/members/member_0.keras

For each method and sparsity: the model (bench_common.MODELS, 10 classes) is sparsified (`tft.sparsify`,
ERK, seed --seed) and trained --train_steps steps at batch --batch_size (SGD 0.05, momentum 0.9)
with `tft.MaskUpdate` and the method at its defaults (Chase: channel sparsity 0.5 on the code's cubic
ramp, resolved on the run length as the library's config does; RigL's drop fraction 0.3, cosine,
end_fraction 0.75), the mask update every --update_every steps (100: `config.sparse.update_every`).

**The data is synthetic**: no CIFAR is available offline, so the tool makes a deterministic
dataset of --examples images of the model's input shape (10 classes: a fixed smooth random
template per class plus Gaussian noise, `bench_common.synthetic_images`). Latency does not depend on what the
weights learned; which channels Chase removes does depend on the schedule (kept at the method's
defaults), and their constants (BatchNorm statistics) on the data: the removed-channel counts are
those of this data, not of CIFAR.

With --tickets, the saved tickets given (.keras files, e.g. a study's trained members) are used
instead and nothing is trained; their dense twin is the same architecture with fresh weights.

Then per ticket: its units (Dense and Conv2D outputs) with an all-zero kernel slice, `compact` in
both of its forms for constant channels into "same"-padded convolutions ("compact":
`padded_constants="offset"`, removed, an offset map after the convolution; "carrier": `compact`'s
default, merged into one kept channel), and
the compacted ticket against the dense twin (same architecture, random weights) served two ways:
`saved_model` (`export_member`, `tf.saved_model.load(...).serve`) and `tflite` (`export_tflite`, the
TFLite interpreter with its default XNNPACK delegate, --threads threads; the compacted ticket with
sparse weight encoding, the dense twin without). TensorFlow's intra- and inter-op pools are set to
--threads too. Timing (`bench_common.paired_latency`): --calls calls per window, the windows of the
six variants interleaved (order rotated each repeat), --repeats windows per batch size, medians;
ratios are per window to the dense twin's window in the same runtime ("offset vs carrier": per window,
the default form's to the carrier form's). File sizes: the SavedModel
folder and the .tflite file. Max abs diff: each compacted variant against the Keras ticket's output
(the dense twin against its Keras model). Writes tickets.json / tickets.md under --output.
"""

import os
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as common  # noqa: E402

METHODS = ("rigl", "srigl", "chase")

_MODEL = flags.DEFINE_string("model", "cifar_resnet20", "Model (see bench_common.MODELS).")
_METHODS = flags.DEFINE_list("methods", ["chase"], f"Methods trained, of {', '.join(METHODS)}.")
_SPARSITIES = flags.DEFINE_list("sparsities", ["0.8", "0.9"], "Global sparsities of the tickets (ERK).")
_TRAIN_STEPS = flags.DEFINE_integer("train_steps", 1000, "Training steps per ticket.")
_BATCH_SIZE = flags.DEFINE_integer("batch_size", 64, "Training batch size.")
_UPDATE_EVERY = flags.DEFINE_integer("update_every", 100, "Mask update every this many steps (config.sparse.update_every).")
_EXAMPLES = flags.DEFINE_integer("examples", 4096, "Synthetic training images.")
_SEED = flags.DEFINE_integer("seed", 0, "Seed of the data, the masks and the weights.")
_BATCHES = flags.DEFINE_list("batches", ["1", "32"], "Serving batch sizes.")
_THREADS = flags.DEFINE_integer("threads", 1, "TensorFlow and TFLite threads.")
_CALLS = flags.DEFINE_integer("calls", 20, "Calls per timed window.")
_REPEATS = flags.DEFINE_integer("repeats", 7, "Timed windows per variant and batch size (interleaved).")
_OUTPUT = flags.DEFINE_string("output", "out/bench_compact_tickets", "Output folder.")
_TICKETS = flags.DEFINE_list("tickets", [], "Saved tickets (.keras) to time instead of training (--model etc. unused).")


def train_ticket(model_name, method, sparsity, steps, batch_size, update_every, data, seed):
    """The model at `sparsity` (ERK) after `steps` steps of `method` (at its defaults) on `data`."""
    import keras
    import tensorflow as tf

    import tf_freetickets as tft

    keras.utils.set_random_seed(seed)
    model = tft.sparsify(common.build_model(model_name), sparsity, distribution="erk", seed=seed)
    updater = {"rigl": tft.RigL, "srigl": tft.SRigL, "chase": tft.Chase}[method](update_every=update_every, seed=seed)
    x, y = data
    stream = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(len(x), seed=seed).repeat().batch(batch_size)
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    update = tft.MaskUpdate(updater, gradient_data=(x[:256], y[:256]))
    model.fit(stream, steps_per_epoch=steps, epochs=1, verbose=0, callbacks=[update])
    return model


def _folder_bytes(path):
    return sum(os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files)


def _tflite_function(path, threads):
    """numpy x -> numpy output through one TFLite interpreter per input shape (XNNPACK, `threads` threads)."""
    from tf_freetickets.deploy.tflite import make_interpreter

    interpreters = {}

    def run(x):
        if x.shape not in interpreters:
            interpreter = make_interpreter(path, num_threads=threads)
            index = interpreter.get_input_details()[0]["index"]
            interpreter.resize_tensor_input(index, list(x.shape))
            interpreter.allocate_tensors()
            interpreters[x.shape] = (interpreter, index, interpreter.get_output_details()[0]["index"])
        interpreter, index, output = interpreters[x.shape]
        interpreter.set_tensor(index, x)
        interpreter.invoke()
        return interpreter.get_tensor(output).copy()

    return run


def served(models, folder, threads):
    """{"<dense|compact> / <saved_model|tflite>": (callable, reference)} and {variant: file bytes}."""
    import tensorflow as tf

    from tf_freetickets.deploy.saved_model import export_member
    from tf_freetickets.deploy.tflite import export_tflite

    functions, sizes = {}, {}
    for name, reference in (("dense", "dense"), ("compact", "ticket"), ("carrier", "ticket")):
        path = export_member(models[name], os.path.join(folder, f"{name}_saved_model"))
        loaded = tf.saved_model.load(path)
        functions[f"{name} / saved_model"] = ((lambda m: lambda x: m.serve(x).numpy())(loaded), reference)
        sizes[f"{name} / saved_model"] = _folder_bytes(path)
        tflite = os.path.join(folder, f"{name}.tflite")
        sizes[f"{name} / tflite"] = export_tflite(models[name], tflite, sparse=name != "dense")
        functions[f"{name} / tflite"] = (_tflite_function(tflite, threads), reference)
    plain = os.path.join(folder, "compact_dense_encoding.tflite")
    sizes["compact / tflite, dense encoding"] = export_tflite(models["compact"], plain, sparse=False)
    sizes["ticket / tflite"] = export_tflite(models["ticket"], os.path.join(folder, "ticket.tflite"), sparse=True)
    return functions, sizes


def trained_ticket(model_name, method, sparsity, config, data):
    """(ticket, its dense twin, row fields): one ticket trained as the module doc says."""
    import keras

    started = time.perf_counter()
    ticket = train_ticket(model_name, method, sparsity, config["train_steps"], config["batch_size"],
                          config["update_every"], data, config["seed"])  # fmt: skip
    fields = {"model": model_name, "method": method, "sparsity": sparsity, "steps": config["train_steps"],
              "train_s": time.perf_counter() - started}  # fmt: skip
    keras.utils.set_random_seed(config["seed"])
    return ticket, common.build_model(model_name), fields


def saved_ticket(path, seed):
    """(ticket, its dense twin, row fields) for a saved .keras ticket: the twin is its architecture, fresh weights."""
    import keras
    import numpy as np

    import tf_freetickets as tft

    ticket = keras.models.load_model(path)
    plain = tft.strip_masks(ticket) if tft.sparse.layers.masked_layers(ticket) else ticket
    keras.utils.set_random_seed(seed)
    dense = keras.models.clone_model(plain)
    kernels = [v for layer in plain.layers for v in getattr(layer, "weights", []) if v.name == "kernel"]
    zeros = sum(int(np.sum(keras.ops.convert_to_numpy(v) == 0)) for v in kernels)
    sparsity = zeros / max(1, sum(int(np.prod(v.shape)) for v in kernels))
    label = "/".join(os.path.normpath(path).split(os.sep)[-4:])  # e.g. chase_0.9/seed_0/members/member_0.keras
    return ticket, dense, {"model": label, "method": "saved", "sparsity": sparsity, "steps": "-", "train_s": 0.0}


def ticket_row(ticket, dense, fields, config, folder):
    """Compacts one ticket both ways, times and sizes it against its dense twin (module doc)."""
    import tf_freetickets as tft

    small, report = tft.compact(ticket, padded_constants="offset")
    carried, carrier_report = tft.compact(ticket, padded_constants="carrier")
    producers = [r for r in report.rows if r.inputs_before is not None]
    row = {
        **fields,
        "units": sum(r.before for r in producers),
        "zero_kernel_units": sum(r.dead + r.folded + r.kept_add + r.kept_other for r in producers),
        "removed": sum(r.before - r.after for r in producers),
        "kept_zero_kernel": sum(r.kept_add + r.kept_other for r in producers),
        "offsets": sum(1 for layer in small.layers if layer.name.endswith("_offset")),
        "carriers": sum(r.kept_other for r in carrier_report.rows if "carries the constants" in r.note),
        "params_dense": dense.count_params(), "params_after": report.params_after,
        "params_carrier": carrier_report.params_after, "table": str(report),
    }  # fmt: skip
    models = {"dense": dense, "compact": small, "carrier": carried, "ticket": ticket}
    name = f"{len(os.listdir(folder))}_{fields['method']}_{fields['sparsity']:.2f}"
    functions, row["bytes"] = served(models, os.path.join(folder, name), config["threads"])
    row["latency"] = {}
    for batch in config["batches"]:
        m = common.paired_latency(functions, models, batch, config["calls"], config["repeats"], tuple(dense.input.shape[1:]))
        raw = m["raw_s"]
        m["offset_vs_carrier"] = {runtime: common.median([a / b for a, b in zip(raw[f"compact / {runtime}"],
                                                                                raw[f"carrier / {runtime}"])])
                                  for runtime in ("saved_model", "tflite")}  # fmt: skip
        row["latency"][str(batch)] = m
        print(f"{_label(row)}, batch {batch}: "
              + ", ".join(f"{k} {v:.2f}x" for k, v in m["ratio_to_dense"].items() if not k.startswith("dense")))
    return row


def _label(row):
    method = "" if row["method"] == "saved" else f" {row['method']}"
    return f"{row['model']}{method} {row['sparsity']:.0%}"


def markdown(result):
    """Two tables: each ticket's structure and file sizes; its latency against the dense twin per runtime and batch."""
    mb = 1 / 2**20
    structure = [[_label(r).rsplit(" ", 1)[0], f"{r['sparsity']:.0%}", r["steps"], r["units"], r["zero_kernel_units"],
                  r["removed"], r["offsets"], r["carriers"], r["kept_zero_kernel"],
                  f"{r['params_dense']:,} -> {r['params_after']:,} ({r['params_carrier']:,})",
                  f"{r['bytes']['dense / saved_model'] * mb:.2f} -> {r['bytes']['compact / saved_model'] * mb:.2f}",
                  f"{r['bytes']['dense / tflite'] * mb:.2f} -> {r['bytes']['compact / tflite'] * mb:.2f}"]
                 for r in result["tickets"]]  # fmt: skip
    latency = []
    for r in result["tickets"]:
        for batch, m in r["latency"].items():
            for runtime in ("saved_model", "tflite"):
                dense, small = m["ms"][f"dense / {runtime}"], m["ms"][f"compact / {runtime}"]
                diff = max(m["max_abs_diff"][f"{v} / {runtime}"] for v in ("compact", "carrier"))
                latency.append([_label(r), runtime, batch, f"{dense:.3f}", f"{small:.3f}",
                                f"{m['ms'][f'carrier / {runtime}']:.3f}",
                                common.fmt_ratio(m["ratio_to_dense"][f"compact / {runtime}"]),
                                common.fmt_ratio(m["ratio_to_dense"][f"carrier / {runtime}"]),
                                common.fmt_ratio(m["offset_vs_carrier"][runtime]), f"{diff:.1e}"])  # fmt: skip
    return "\n".join([
        common.markdown_table(["ticket", "sparsity", "steps", "units", "zero-kernel units", "removed by compact",
                               "offset layers", "carriers (carrier form)", "zero-kernel kept",
                               "params dense -> compact (carrier form)",
                               "SavedModel MiB dense -> compact", "TFLite MiB dense -> compact (sparse encoding)"],
                              structure),
        "",
        common.markdown_table(["ticket", "runtime", "batch", "dense ms", "compact ms", "carrier form ms",
                               "compact vs dense", "carrier form vs dense", "offset vs carrier",
                               "max abs diff vs Keras ticket"], latency),
    ])  # fmt: skip


def _refusal(message):
    return app.UsageError(message, exitcode=2)


def _config():
    """The run's settings from the flags; exits 2 with one line on a bad value."""
    try:
        sparsities = [float(s) for s in _SPARSITIES.value]
        batches = [int(b) for b in _BATCHES.value]
    except ValueError as error:
        raise _refusal(f"--sparsities and --batches take numbers: {error}") from None
    common.input_shape(_MODEL.value)  # a ValueError naming the models for an unknown one
    bad = [m for m in _METHODS.value if m not in METHODS]
    if bad or not _METHODS.value:
        raise _refusal(f"--methods={','.join(_METHODS.value)}: use some of {', '.join(METHODS)}.")
    if any(not 0.0 < s < 1.0 for s in sparsities):
        raise _refusal(f"--sparsities={_SPARSITIES.value}: each must be in (0, 1).")
    if _UPDATE_EVERY.value < 1 or _TRAIN_STEPS.value * 0.75 < _UPDATE_EVERY.value:
        raise _refusal(f"--update_every={_UPDATE_EVERY.value} with --train_steps={_TRAIN_STEPS.value}: no mask "
                       "update before end_fraction 0.75 of the run; need 1 <= update_every <= 0.75 train_steps.")  # fmt: skip
    missing = [path for path in _TICKETS.value if not os.path.isfile(path)]
    if missing:
        raise _refusal(f"--tickets: no such file {missing[0]!r}.")
    return {"model": _MODEL.value, "methods": list(_METHODS.value), "tickets": list(_TICKETS.value),
            "sparsities": sparsities, "batches": batches,
            "train_steps": _TRAIN_STEPS.value, "batch_size": _BATCH_SIZE.value, "update_every": _UPDATE_EVERY.value,
            "examples": _EXAMPLES.value, "seed": _SEED.value, "threads": _THREADS.value, "calls": _CALLS.value,
            "repeats": _REPEATS.value, "data": "synthetic (synthetic_images): no CIFAR offline"}  # fmt: skip


def main(argv):
    del argv
    common.quiet_tensorflow()
    try:
        config = _config()
    except ValueError as error:
        raise _refusal(str(error)) from None
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(config["threads"])
    tf.config.threading.set_inter_op_parallelism_threads(config["threads"])
    started = time.perf_counter()
    result = {"config": config, "machine": common.machine_info(), "tickets": []}
    with tempfile.TemporaryDirectory(prefix="bench_compact_tickets_") as folder:
        if config["tickets"]:
            for path in config["tickets"]:
                result["tickets"].append(ticket_row(*saved_ticket(path, config["seed"]), config, folder))
        else:
            print(f"Training on SYNTHETIC {common.input_shape(config['model'])} images (no CIFAR offline): latency "
                  "and file sizes are the point; which channels go depends on this data.")  # fmt: skip
            data = common.synthetic_images(common.input_shape(config["model"]), config["examples"], config["seed"])
            for method in config["methods"]:
                for sparsity in config["sparsities"]:
                    ticket = trained_ticket(config["model"], method, sparsity, config, data)
                    result["tickets"].append(ticket_row(*ticket, config, folder))
    result["seconds"] = time.perf_counter() - started
    table = markdown(result)
    json_path, _ = common.write_outputs(_OUTPUT.value, "tickets", result, table)
    print(table)
    print(f"\nCPU: {result['machine']['cpu_model']}; load average at start {result['machine']['load_average_at_start']}")
    print(f"({result['seconds']:.0f} s; wrote {json_path})")


if __name__ == "__main__":
    app.run(main)
