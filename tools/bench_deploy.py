"""TFLite file size and CPU latency of dense vs sparse models and of a sparse ensemble.

  python tools/bench_deploy.py --models=small_cnn,wrn16_4 --runs=200 --repeats=3 --output=out/bench

For every model (`tft.models`, 10 classes, random weights: size and latency do not depend on training):
- dense float32 (`export_tflite(..., sparse=False)`) and dense int8 (dynamic-range quantization);
- 80% and 90% sparse (ERK, `tft.sparsify`), float32 with sparse encoding
  (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`), and 90% sparse + int8;
- an ensemble of 3 members at 80% sparsity (EDST's M=3, S=0.8): the three member files (sizes and
  latencies summed) and one converted `EnsembleModel` (mean of the members' probabilities).
Latency: one example per `invoke()`, --threads interpreter threads, median of --runs invocations after a
warm-up, measured --repeats times with the files interleaved; the median of those medians is reported.
Sparse int8 files run on TFLite's builtin kernels (TF 2.21's XNNPACK delegate rejects them), every other
file with the default XNNPACK delegate. "max |Δ|" compares the TFLite output with Keras on 8 random inputs.
Writes deploy.json / deploy.md under --output.
"""

import os
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as common  # noqa: E402

_MODELS = flags.DEFINE_list("models", ["small_cnn", "wrn16_4"], "Models (see bench_common.MODELS).")
_RUNS = flags.DEFINE_integer("runs", 200, "Timed invocations per latency measurement.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Latency measurements per file (interleaved).")
_THREADS = flags.DEFINE_integer("threads", 1, "TFLite interpreter threads.")
_MEMBERS = flags.DEFINE_integer("members", 3, "Ensemble members.")
_OUTPUT = flags.DEFINE_string("output", "out/bench", "Output folder.")


def _kernel_nonzeros(model):
    import numpy as np

    from tf_freetickets.sparse import layers as masking

    members = getattr(model, "members", None) or [model]
    total = 0
    for member in members:
        for layer in member._flatten_layers(include_self=False):
            if masking.is_masked(layer):
                total += int(np.count_nonzero(layer.kernel_mask.numpy()))
            elif any(w.name == "kernel" or w.path.endswith("/kernel") for w in layer.weights):
                total += int(np.prod(layer.kernel.shape))
    return total


def variants(model_name, members):
    """(label, keras model, export kwargs, default_delegates, member count) for one model."""
    import keras

    import tf_freetickets as tft

    keras.utils.set_random_seed(0)
    dense = common.build_model(model_name)
    sparse80 = tft.sparsify(dense, 0.8, distribution="erk", seed=0)
    sparse90 = tft.sparsify(dense, 0.9, distribution="erk", seed=0)
    ensemble_members = [tft.sparsify(common.build_model(model_name), 0.8, distribution="erk", seed=s) for s in range(members)]
    return [
        ("dense f32", dense, {"sparse": False}, True, 1),
        ("dense int8", dense, {"sparse": False, "quantize": True}, True, 1),
        ("80% sparse f32", sparse80, {"sparse": True}, True, 1),
        ("90% sparse f32", sparse90, {"sparse": True}, True, 1),
        ("90% sparse int8", sparse90, {"sparse": True, "quantize": True}, False, 1),
        (f"ensemble {members}x80% f32, {members} files", ensemble_members, {"sparse": True}, True, members),
        (f"ensemble {members}x80% f32, one file", tft.EnsembleModel(ensemble_members), {"sparse": True}, True, 1),
    ]


def measure_model(model_name, runs, repeats, threads, members, folder):
    import numpy as np

    from tf_freetickets.deploy import tflite

    rng = np.random.default_rng(0)
    x = rng.random((8, *common.input_shape(model_name)), dtype=np.float32)
    entries = []
    for label, model, kwargs, delegates, _ in variants(model_name, members):
        models = model if isinstance(model, list) else [model]
        paths, sizes, errors, sparse_count, nonzeros = [], [], [], 0, 0
        started = time.perf_counter()
        for index, m in enumerate(models):
            path = os.path.join(
                folder, f"{model_name}_{label.replace(' ', '_').replace('%', '').replace(',', '')}_{index}.tflite"
            )
            sizes.append(tflite.export_tflite(m, path, **kwargs))
            paths.append(path)
            got = tflite.tflite_predict(path, x, default_delegates=delegates)
            errors.append(float(np.max(np.abs(got - m.predict(x, verbose=0)))))
            sparse_count += len(tflite.sparse_tensors(path))
        nonzeros = sum(_kernel_nonzeros(m) for m in models)
        entries.append(
            {
                "label": label,
                "paths": paths,
                "bytes": int(sum(sizes)),
                "member_bytes": sizes,
                "sparse_tensors": sparse_count,
                "kernel_nonzeros": nonzeros,
                "bytes_per_kernel_nonzero": sum(sizes) / max(nonzeros, 1),
                "max_abs_diff_vs_keras": max(errors),
                "runtime": "xnnpack" if delegates else "builtin kernels",
                "default_delegates": delegates,
                "convert_s": time.perf_counter() - started,
                "latency_s": [],
            }
        )
    one = x[:1]
    for repeat in range(repeats):
        order = entries if repeat % 2 == 0 else entries[::-1]
        for entry in order:
            total = 0.0
            for path in entry["paths"]:
                total += tflite.tflite_latency(
                    path, one, runs=runs, warmup=10, num_threads=threads, default_delegates=entry["default_delegates"]
                )
            entry["latency_s"].append(total)
    base = entries[0]
    for entry in entries:
        entry["latency_median_s"] = common.median(entry["latency_s"])
        entry["size_ratio_to_dense"] = entry["bytes"] / base["bytes"]
        entry["latency_ratio_to_dense"] = entry["latency_median_s"] / common.median(base["latency_s"])
        del entry["paths"]
    return entries


def markdown(result):
    cfg = result["config"]
    lines = [
        f"TFLite size and latency (1 example per invoke, {cfg['threads']} thread(s), median of {cfg['repeats']} x "
        f"{cfg['runs']} runs); ratios are to the same model's dense float32 file.",
        "",
    ]
    header = [
        "model",
        "variant",
        "file KB",
        "size vs dense",
        "B per nonzero weight",
        "sparse tensors",
        "latency ms",
        "latency vs dense",
        "runtime",
        "max abs diff vs Keras",
    ]
    rows = []
    for model_name, entries in result["models"].items():
        for e in entries:
            rows.append(
                [
                    model_name,
                    e["label"],
                    f"{e['bytes'] / 1024:.0f}",
                    common.fmt_ratio(e["size_ratio_to_dense"]),
                    f"{e['bytes_per_kernel_nonzero']:.2f}",
                    e["sparse_tensors"],
                    f"{1000 * e['latency_median_s']:.3f}",
                    common.fmt_ratio(e["latency_ratio_to_dense"]),
                    e["runtime"],
                    f"{e['max_abs_diff_vs_keras']:.1e}",
                ]
            )
    lines.append(common.markdown_table(header, rows))
    return "\n".join(lines)


def main(argv):
    del argv
    common.quiet_tensorflow()
    config = {
        "models": list(_MODELS.value),
        "runs": _RUNS.value,
        "repeats": _REPEATS.value,
        "threads": _THREADS.value,
        "members": _MEMBERS.value,
    }
    started = time.perf_counter()
    result = {"config": config, "machine": common.machine_info(), "models": {}}
    with tempfile.TemporaryDirectory(prefix="bench_deploy_") as folder:
        for model_name in config["models"]:
            result["models"][model_name] = measure_model(
                model_name, _RUNS.value, _REPEATS.value, _THREADS.value, _MEMBERS.value, folder
            )
    result["seconds"] = time.perf_counter() - started
    table = markdown(result)
    json_path, _ = common.write_outputs(_OUTPUT.value, "deploy", result, table)
    print(table)
    print(f"\n({result['seconds']:.0f} s; wrote {json_path})")


if __name__ == "__main__":
    app.run(main)
