"""Shared pieces of the benchmark tools (bench_train, bench_update, bench_deploy, bench_flops).

Nothing here imports TensorFlow or Keras at module level: `bench_train.py` starts a child process
that must set TF_USE_LEGACY_KERAS before TensorFlow is first imported, and it imports this module.
"""

import json
import os
import platform
import statistics
import subprocess
import sys
import time


def median(values):
    values = [float(v) for v in values]
    return statistics.median(values) if values else float("nan")


def cpu_model_name():
    """The `Model name:` line of lscpu (falls back to /proc/cpuinfo, then platform)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for line in out.splitlines():
            if line.strip().startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from reporting.environment import cpu_model  # late: imports TensorFlow (see the module doc)

    return cpu_model()


def machine_info():
    """CPU model, core count, load average and library versions, for the JSON reports."""
    import keras
    import tensorflow as tf

    try:
        load = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        load = None
    return {
        "cpu_model": cpu_model_name(),
        "cpu_count": os.cpu_count(),
        "load_average_at_start": load,
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "timestamp": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


def quiet_tensorflow():
    """Fewer log lines: TF's C++ logs (set before TensorFlow is imported) and absl INFO lines."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from absl import logging

    logging.set_verbosity(logging.WARNING)


# -- models ------------------------------------------------------------------

#: name -> (input shape, builder description)
MODELS = {
    "small_cnn": (28, 28, 1),
    "cifar_resnet20": (32, 32, 3),
    "cifar_resnet56": (32, 32, 3),
    "wrn16_4": (32, 32, 3),
    "wrn28_10": (32, 32, 3),
    "resnet50_32": (32, 32, 3),  # keras.applications ResNet-50 (tft.models.build_model) on 32x32 inputs
}


def input_shape(name):
    if name not in MODELS:
        raise ValueError(f"Unknown model {name!r}; use one of {sorted(MODELS)}.")
    return MODELS[name]


def build_model(name):
    """The library's Keras 3 model for a benchmark name (10 classes, logits)."""
    import tf_freetickets as tft

    shape = input_shape(name)
    if name == "small_cnn":
        return tft.models.small_cnn(input_shape=shape)
    if name.startswith("cifar_resnet"):
        return tft.models.cifar_resnet(int(name[len("cifar_resnet") :]), input_shape=shape)
    if name == "resnet50_32":
        return tft.models.build_model("resnet50", shape, 10)
    if name.startswith("wrn"):
        depth, width = (int(p) for p in name[3:].split("_"))
        return tft.models.wide_resnet(depth, width, input_shape=shape)
    raise ValueError(f"Unknown model {name!r}.")


def synthetic_batch(name, batch_size, seed=0, num_classes=10):
    """One fixed random (x, y) batch as numpy arrays (the tools repeat it: no input-pipeline cost)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.random((batch_size, *input_shape(name)), dtype=np.float32)
    y = rng.integers(0, num_classes, size=(batch_size,)).astype("int32")
    return x, y


def repeated_dataset(x, y):
    import tensorflow as tf

    return tf.data.Dataset.from_tensors((x, y)).repeat()


# -- output ------------------------------------------------------------------


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def write_outputs(output_dir, stem, result, markdown):
    """Writes `<stem>.json` and `<stem>.md` under `output_dir` (created); returns the two paths."""
    os.makedirs(output_dir, exist_ok=True)
    json_path = os.path.join(output_dir, f"{stem}.json")
    md_path = os.path.join(output_dir, f"{stem}.md")
    with open(json_path, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    with open(md_path, "w", encoding="utf-8") as f:
        f.write(markdown + "\n")
    return json_path, md_path


def fmt_ms(seconds):
    return f"{1000.0 * seconds:.1f}"


def fmt_ratio(value):
    return f"{value:.2f}x"


def batch_end_timer_class(base):
    """A callback recording the wall clock at every batch end (after the callbacks before it)."""

    class BatchEndTimer(base):
        def __init__(self):
            super().__init__()
            self.stamps = []

        def on_train_begin(self, logs=None):
            self.stamps = []

        def on_train_batch_end(self, batch, logs=None):
            self.stamps.append(time.perf_counter())

    return BatchEndTimer


def zero_channels(ticket, fraction, seed):
    """Zeroes (mask and kernel) round(fraction * units) random output units of every masked layer but the last.

    A ticket with dead channels, as structured training leaves them, for the compaction benchmarks.
    """
    import numpy as np

    from tf_freetickets.sparse import layers as masking

    rng = np.random.default_rng(seed)
    for layer in masking.masked_layers(ticket)[:-1]:
        units = layer.kernel_mask.shape[-1]
        chosen = rng.choice(units, int(round(fraction * units)), replace=False)
        for variable in (layer.kernel_mask, layer.kernel_variable):
            value = variable.numpy()
            value[..., chosen] = 0.0
            variable.assign(value)
    return ticket


def paired_latency(functions, models, batch, calls, repeats, shape):
    """Median seconds per call, paired ratios to the dense twin in the same runtime, max abs diffs.

    Args:
      functions: {"<variant> / <runtime>": (callable numpy x -> numpy, name of the reference model)};
        every runtime needs a "dense / <runtime>" entry (the ratios' denominator).
      models: {reference name: Keras model}, whose output each function is compared with.
      batch, shape: the input is one fixed random (batch, *shape) array.
      calls, repeats: calls per timed window; windows per function, interleaved (order rotated each repeat).

    Returns:
      {"ms": median ms per call, "ratio_to_dense": median over windows of window / the dense twin's
      window of the same repeat, "max_abs_diff", "raw_s": seconds per call of every window}.
    """
    import numpy as np

    x = np.random.default_rng(0).random((batch, *shape), dtype=np.float32)
    diffs = {}
    for name, (fn, reference) in functions.items():
        want = np.asarray(models[reference](x, training=False))
        diffs[name] = float(np.max(np.abs(fn(x) - want)))
        fn(x)  # warm-up
    times = interleaved_times({name: (lambda fn=fn: fn(x)) for name, (fn, _) in functions.items()}, repeats, calls)
    ratios = {}
    for name, values in times.items():
        base = times["dense / " + name.split(" / ")[1]]
        ratios[name] = median([a / b for a, b in zip(values, base)])
    return {"ms": {n: 1000 * median(v) for n, v in times.items()}, "ratio_to_dense": ratios,
            "max_abs_diff": diffs, "raw_s": times}  # fmt: skip


def rows_per_thread_count(script, threads, argv):
    """Runs `script --child_threads=N` once per N in `threads` (TensorFlow fixes its threads at start-up).

    Args:
      script: the benchmark's path; its child prints its rows as JSON on its last stdout line.
      threads: thread counts.
      argv: the parent's flags, passed on to each child.

    Returns:
      the children's rows, in order.
    """
    rows = []
    for count in threads:
        command = [sys.executable, script, f"--child_threads={count}"] + [a for a in argv if "child" not in a]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        rows += json.loads(out.strip().splitlines()[-1])
    return rows


def interleaved_window_times(functions, repeats, window_s, warmup=3):
    """Per-window seconds per call of each function: windows interleaved, order rotated each repeat.

    Args:
      functions: {key: callable with no arguments}; each is called `warmup` times untimed first
        (tracing; a TFLite interpreter's first invoke packs its weights: ~100 ms).
      repeats: timed windows per function.
      window_s: approximate seconds per window (calls per window calibrated per function).
      warmup: untimed calls before calibration.

    Returns:
      {key: [seconds per call in each window]}, windows in the order they ran.
    """
    calls = {}
    for key, function in functions.items():
        for _ in range(warmup):
            function()
        start, n = time.perf_counter(), 0
        while time.perf_counter() - start < window_s / 3:
            function()
            n += 1
        calls[key] = max(1, int(n * 3))
    return interleaved_times(functions, repeats, calls)


def interleaved_times(functions, repeats, calls):
    """Per-window seconds per call of each function, windows interleaved and their order rotated each repeat.

    Args:
      functions: {key: callable with no arguments}, already warm.
      repeats: timed windows per function.
      calls: calls per window: one int for all, or {key: int}.

    Returns:
      {key: [seconds per call in each window]}, windows in the order they ran.
    """
    keys, times = list(functions), {key: [] for key in functions}
    for repeat in range(repeats):
        shift = repeat % len(keys)
        for key in keys[shift:] + keys[:shift]:
            function, count = functions[key], calls[key] if isinstance(calls, dict) else calls
            start = time.perf_counter()
            for _ in range(count):
                function()
            times[key].append((time.perf_counter() - start) / count)
    return times


def synthetic_images(shape, examples, seed, num_classes=10):
    """Deterministic (x, y): per class a smooth template (a 4x4 random grid upsampled), plus N(0, 0.5) noise.

    Args:
      shape: (H, W, C) of one image.
      examples, seed: how many, and the seed of everything drawn.

    Returns:
      float32 x (examples, H, W, C) in about [-1.5, 2.5], int32 y (examples,).
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    height, width, channels = shape
    coarse = rng.random((num_classes, 4, 4, channels), dtype=np.float32)
    rows, cols = np.arange(height) * 4 // height, np.arange(width) * 4 // width
    templates = coarse[:, rows][:, :, cols]
    y = rng.integers(0, num_classes, examples).astype("int32")
    x = templates[y] + rng.normal(0.0, 0.5, (examples, *shape)).astype(np.float32)
    return x.astype(np.float32), y
