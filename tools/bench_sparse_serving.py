"""Batch-1 CPU serving of sparse tickets through XNNPACK's sparse (SpMM) path, against a dense twin.

  python tools/bench_sparse_serving.py --width=256 --sparsity=0.9 --members=3 --output=out/bench

XNNPACK (TFLite's default CPU delegate) switches a float32 subgraph to its sparse NCHW kernels when the
subgraph is a chain it can run in channels-first layout: a 3x3 stride-2 convolution on the 3-channel input,
then depthwise 3x3 convolutions and 1x1 convolutions (with bias and ReLU), ending in a global average pool.
The 1x1 convolutions whose static weights are at least about 2/3 zeros then run as sparse-matrix x
dense-matrix products that skip the zeros. No converter or interpreter option is needed: the delegate reads
the zeros from the (dense or sparse-encoded, densified at load) weights. Plain 3x3 convolutions and Dense
layers have no sparse kernel, which is why tft.models' CNNs, ResNets and WRNs run at dense speed
(BENCHMARKS.md section 4).

The model here is such a chain ("MobileNet-style": stem conv, --blocks x [depthwise 3x3 + 1x1 conv],
GAP, Dense head). Its 1x1 convolutions are masked with `tft.sparsify(..., "uniform", exclude=[stem, head])`
(the depthwise kernels are not maskable and stay dense). Timed, each as one example per invoke() with one
interpreter thread, median of --runs invocations, --repeats times interleaved; ratios are medians of the
per-repeat ratios to the dense model:
- dense twin, XNNPACK; the sparse ticket, XNNPACK (sparse-encoded file, `export_tflite(sparse=True)`);
- both again without the XNNPACK delegate (TFLite builtin kernels: the control, no sparse kernels);
- an ensemble of --members sparse tickets (different mask seeds), run one after the other.
"max |Δ|" compares TFLite with Keras on 8 random inputs. Writes sparse_serving.json / .md under --output.
"""

import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as common  # noqa: E402

_WIDTH = flags.DEFINE_integer("width", 256, "Channels of the 1x1 convolutions (the last blocks use 2x).")
_BLOCKS = flags.DEFINE_integer("blocks", 6, "Depthwise + 1x1 blocks.")
_SIZE = flags.DEFINE_integer("size", 64, "Input height = width (3 channels).")
_SPARSITY = flags.DEFINE_float("sparsity", 0.9, "Sparsity of the 1x1 convolutions (uniform).")
_MEMBERS = flags.DEFINE_integer("members", 3, "Ensemble members.")
_RUNS = flags.DEFINE_integer("runs", 100, "Timed invocations per latency measurement.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Latency measurements per variant (interleaved).")
_OUTPUT = flags.DEFINE_string("output", "out/bench", "Output folder.")


def mobilenet_style(size, width, blocks, classes=10):
    """A Keras chain XNNPACK can run sparse: stem 3x3/2 conv, blocks of depthwise 3x3 + 1x1 conv, GAP, Dense."""
    import keras

    inputs = keras.Input((size, size, 3))
    x = keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="stem")(inputs)
    for i in range(blocks):
        x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu", name=f"dw{i}")(x)
        x = keras.layers.Conv2D(width * (1 + 2 * i // blocks), 1, activation="relu", name=f"pw{i}")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(classes, name="head")(x))


def _latency_fn(content, default_delegates, x, runs):
    from tf_freetickets.deploy.tflite import make_interpreter

    interpreter = make_interpreter(content, num_threads=1, default_delegates=default_delegates)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]["index"]
    out = interpreter.get_output_details()[0]["index"]

    def predict(batch):
        outputs = []
        for row in batch:
            interpreter.set_tensor(inp, row[None])
            interpreter.invoke()
            outputs.append(interpreter.get_tensor(out)[0])
        return outputs

    def timed():
        interpreter.set_tensor(inp, x)
        start = time.perf_counter()
        for _ in range(runs):
            interpreter.invoke()
        return (time.perf_counter() - start) / runs

    timed()  # warm-up
    return timed, predict


def measure(size, width, blocks, sparsity, members, runs, repeats):
    import keras
    import numpy as np

    import tf_freetickets as tft
    from tf_freetickets.deploy.tflite import convert_to_tflite

    keras.utils.set_random_seed(0)
    dense = mobilenet_style(size, width, blocks)
    tickets = [
        tft.sparsify(dense, sparsity, distribution="uniform", exclude=["stem", "head"], seed=seed)
        for seed in range(members)
    ]
    rng = np.random.default_rng(0)
    inputs = rng.random((8, size, size, 3)).astype("float32")
    x = inputs[:1]
    files = {"dense": convert_to_tflite(dense, sparse=False)}
    files.update({f"ticket{i}": convert_to_tflite(t, sparse=True) for i, t in enumerate(tickets)})
    keras_out = {"dense": dense.predict(inputs, verbose=0)}
    keras_out.update({f"ticket{i}": t.predict(inputs, verbose=0) for i, t in enumerate(tickets)})

    variants, max_diff = {}, {}
    for name, content in files.items():
        for delegates in (True, False):
            key = f"{name}{'' if delegates else ' (no XNNPACK)'}"
            timed, predict = _latency_fn(content, delegates, x, runs)
            variants[key] = timed
            max_diff[key] = float(np.max(np.abs(np.stack(predict(inputs)) - keras_out[name])))
    times = {key: [] for key in variants}
    keys = list(variants)
    for repeat in range(repeats):
        shift = repeat % len(keys)
        for key in keys[shift:] + keys[:shift]:
            times[key].append(variants[key]())
    ensemble = [sum(times[f"ticket{i}"][r] for i in range(members)) for r in range(repeats)]
    ensemble_plain = [sum(times[f"ticket{i} (no XNNPACK)"][r] for i in range(members)) for r in range(repeats)]

    def ratio(values, base):
        return common.median([v / b for v, b in zip(values, times[base])])

    rows = {
        "dense twin, XNNPACK": (times["dense"], "dense", files["dense"], max_diff["dense"]),
        "sparse ticket, XNNPACK": (times["ticket0"], "dense", files["ticket0"], max_diff["ticket0"]),
        f"ensemble of {members} sparse tickets, XNNPACK": (
            ensemble, "dense", b"".join(files[f"ticket{i}"] for i in range(members)),
            max(max_diff[f"ticket{i}"] for i in range(members)),
        ),
        "dense twin, builtin kernels": (
            times["dense (no XNNPACK)"], "dense (no XNNPACK)", files["dense"], max_diff["dense (no XNNPACK)"]
        ),
        "sparse ticket, builtin kernels": (
            times["ticket0 (no XNNPACK)"], "dense (no XNNPACK)", files["ticket0"], max_diff["ticket0 (no XNNPACK)"]
        ),
        f"ensemble of {members} sparse tickets, builtin kernels": (
            ensemble_plain, "dense (no XNNPACK)", b"", max(max_diff[f"ticket{i} (no XNNPACK)"] for i in range(members))
        ),
    }
    result = {"params": int(dense.count_params()), "global_sparsity": float(tft.global_sparsity(tickets[0])),
              "times_s": times, "rows": {}}
    for label, (values, base, content, diff) in rows.items():
        result["rows"][label] = {
            "median_ms": 1e3 * common.median(values),
            "ratio_to_dense": ratio(values, base),
            "file_kb": len(content) / 1024,
            "max_abs_diff": diff,
        }
    return result


def markdown(result):
    cfg, r = result["config"], result["result"]
    lines = [
        f"Batch-1 serving, MobileNet-style chain ({r['params']:,} params, input {cfg['size']}x{cfg['size']}x3, "
        f"{cfg['blocks']} blocks, 1x1 width {cfg['width']}), 1x1 convolutions {cfg['sparsity']:.0%} sparse, "
        f"1 thread, median of {cfg['repeats']} x {cfg['runs']} invokes.",
        "",
    ]
    rows = [
        [label, f"{row['median_ms']:.3f}", common.fmt_ratio(row["ratio_to_dense"]),
         f"{row['file_kb']:.0f}" if row["file_kb"] else "-", f"{row['max_abs_diff']:.1e}"]
        for label, row in r["rows"].items()
    ]
    lines.append(common.markdown_table(["variant", "latency ms", "vs dense twin (same runtime)", "file KB",
                                        "max abs diff vs Keras"], rows))
    return "\n".join(lines)


def main(argv):
    del argv
    common.quiet_tensorflow()
    config = {"size": _SIZE.value, "width": _WIDTH.value, "blocks": _BLOCKS.value, "sparsity": _SPARSITY.value,
              "members": _MEMBERS.value, "runs": _RUNS.value, "repeats": _REPEATS.value}
    started = time.perf_counter()
    result = {"config": config, "machine": common.machine_info()}
    result["result"] = measure(_SIZE.value, _WIDTH.value, _BLOCKS.value, _SPARSITY.value, _MEMBERS.value,
                               _RUNS.value, _REPEATS.value)
    result["seconds"] = time.perf_counter() - started
    table = markdown(result)
    json_path, _ = common.write_outputs(_OUTPUT.value, "sparse_serving", result, table)
    print(table)
    print(f"\n({result['seconds']:.0f} s; wrote {json_path})")


if __name__ == "__main__":
    app.run(main)
