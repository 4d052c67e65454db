"""Training step time of TF-MOT's prune_low_magnitude against a dense tf_keras twin (run by bench_train.py).

  TF_USE_LEGACY_KERAS=1 python tools/bench_tfmot.py --model=small_cnn --result=out/tfmot.json

`prune_low_magnitude` (ConstantSparsity(--sparsity), pruning frequency ΔT) wraps a tf_keras twin of the
library's model (same layers and parameter count); both are timed with windows of exactly ΔT steps (one
pruning step each), interleaved, on one synthetic batch. Importing tfmot switches the whole process to
tf_keras, so this runs in its own process: `bench_train.py --tfmot` starts it and folds its JSON into its
table. Needs `pip install 'tf_freetickets[tfmot]'`.
"""

import json
import os
import subprocess
import sys
import tempfile

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as common  # noqa: E402


def _define_flags():
    # Only when run as a program: bench_train.py imports this module and has flags of the same names.
    flags.DEFINE_enum("model", "small_cnn", ["small_cnn", "cifar_resnet20", "cifar_resnet56", "wrn16_4"], "Model.")
    flags.DEFINE_integer("batch_size", 64, "Training batch size.")
    flags.DEFINE_integer("warmup", 5, "Warm-up steps per model before timing.")
    flags.DEFINE_integer("repeats", 3, "Timed windows per model (interleaved).")
    flags.DEFINE_integer("update_every", 100, "ΔT: steps between pruning steps (one per window).")
    flags.DEFINE_float("sparsity", 0.9, "Target sparsity (uniform).")
    flags.DEFINE_string("result", None, "JSON file to write.", required=True)


def tf_keras_twin(model_name):
    """The tf_keras twin of `common.build_model(model_name)`: same layers, shapes and parameter count."""
    import tf_keras

    layers = tf_keras.layers
    shape = common.input_shape(model_name)
    inputs = tf_keras.Input(shape)
    if model_name == "small_cnn":
        x = inputs
        for channels in (32, 64):
            for _ in range(2):
                x = layers.Conv2D(channels, 3, padding="same", use_bias=False)(x)
                x = layers.ReLU()(layers.BatchNormalization()(x))
            x = layers.MaxPooling2D()(x)
        x = layers.Dense(128, activation="relu")(layers.Flatten()(x))
        return tf_keras.Model(inputs, layers.Dense(10)(x))
    if model_name.startswith("cifar_resnet"):
        blocks = (int(model_name[len("cifar_resnet") :]) - 2) // 6
        x = layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
        x = layers.ReLU()(layers.BatchNormalization()(x))
        for stage, filters in enumerate((16, 32, 64)):
            for block in range(blocks):
                stride = 2 if stage > 0 and block == 0 else 1
                shortcut = x
                if stride != 1 or x.shape[-1] != filters:
                    shortcut = layers.BatchNormalization()(layers.Conv2D(filters, 1, strides=stride, use_bias=False)(x))
                y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(x)
                y = layers.ReLU()(layers.BatchNormalization()(y))
                y = layers.BatchNormalization()(layers.Conv2D(filters, 3, padding="same", use_bias=False)(y))
                x = layers.ReLU()(layers.Add()([shortcut, y]))
        x = layers.GlobalAveragePooling2D()(x)
        return tf_keras.Model(inputs, layers.Dense(10)(x))
    if model_name.startswith("wrn"):
        depth, width = (int(p) for p in model_name[3:].split("_"))
        blocks = (depth - 4) // 6
        x = layers.Conv2D(16, 3, padding="same", use_bias=False)(inputs)
        for group, base in enumerate((16, 32, 64)):
            filters = base * width
            for block in range(blocks):
                stride = 2 if group > 0 and block == 0 else 1
                preact = layers.ReLU()(layers.BatchNormalization()(x))
                shortcut = x
                if stride != 1 or x.shape[-1] != filters:
                    shortcut = layers.Conv2D(filters, 1, strides=stride, use_bias=False)(preact)
                y = layers.Conv2D(filters, 3, strides=stride, padding="same", use_bias=False)(preact)
                y = layers.ReLU()(layers.BatchNormalization()(y))
                y = layers.Conv2D(filters, 3, padding="same", use_bias=False)(y)
                x = layers.Add()([shortcut, y])
        x = layers.GlobalAveragePooling2D()(layers.ReLU()(layers.BatchNormalization()(x)))
        return tf_keras.Model(inputs, layers.Dense(10)(x))
    raise ValueError(f"No tf_keras twin for {model_name!r}.")


def measure_tfmot(model_name, batch_size, warmup, repeats, update_every, sparsity):
    """Times TF-MOT and its dense tf_keras twin; needs TF_USE_LEGACY_KERAS=1 set before TensorFlow is imported.

    Returns a dict of median step times (s), their ratio, the windows and the pruned masks' sparsity.
    """
    import numpy as np
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras

    x, y = common.synthetic_batch(model_name, batch_size)
    dataset = tf.data.Dataset.from_tensors((x, y)).repeat()
    timer_class = common.batch_end_timer_class(tf_keras.callbacks.Callback)

    def compiled(model):
        model.compile(
            optimizer=tf_keras.optimizers.SGD(0.01, momentum=0.9),
            loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        return model

    tf_keras.utils.set_random_seed(0)
    dense = compiled(tf_keras_twin(model_name))
    tf_keras.utils.set_random_seed(0)
    schedule = tfmot.sparsity.keras.ConstantSparsity(sparsity, begin_step=0, frequency=update_every)
    pruned = compiled(tfmot.sparsity.keras.prune_low_magnitude(tf_keras_twin(model_name), pruning_schedule=schedule))
    runs = {
        "tf_keras_dense": (dense, [timer_class()]),
        "tfmot_prune_low_magnitude": (pruned, [tfmot.sparsity.keras.UpdatePruningStep(), timer_class()]),
    }
    for model, callbacks in runs.values():
        model.fit(dataset, steps_per_epoch=warmup + 1, epochs=1, verbose=0, callbacks=callbacks)
    windows = {name: [] for name in runs}
    names = list(runs)
    for repeat in range(repeats):
        order = names if repeat % 2 == 0 else names[::-1]
        for name in order:
            model, callbacks = runs[name]
            # ΔT + 1 steps; the clock skips batch 0, so it covers ΔT steps and exactly one pruning step.
            model.fit(dataset, steps_per_epoch=update_every + 1, epochs=1, verbose=0, callbacks=callbacks)
            stamps = callbacks[-1].stamps
            windows[name].append((stamps[-1] - stamps[0]) / update_every)
    kernels = [w for w in pruned.weights if w.name.endswith("mask:0")]
    zero = sum(int(np.sum(w.numpy() == 0)) for w in kernels) / max(sum(int(np.prod(w.shape)) for w in kernels), 1)
    ratios = [p / d for p, d in zip(windows["tfmot_prune_low_magnitude"], windows["tf_keras_dense"])]
    result = {
        "tf_keras_dense_step_s": common.median(windows["tf_keras_dense"]),
        "tfmot_step_s": common.median(windows["tfmot_prune_low_magnitude"]),
        "ratio_to_tf_keras_dense": common.median(ratios),
        "windows": windows,
        "steps_per_window": update_every,
        "mask_sparsity": zero,
        "params": int(dense.count_params()),
        "tf_keras": tf_keras.__version__,
        "tfmot": tfmot.__version__ if hasattr(tfmot, "__version__") else "0.8.x",
    }
    return result


def run_in_subprocess(model, batch_size, warmup, repeats, update_every, sparsity):
    """Runs this tool in a child process with TF_USE_LEGACY_KERAS=1; returns its result dict (or {"error": ...})."""
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tfmot.json")
        env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="3")
        command = [
            sys.executable, os.path.abspath(__file__), f"--result={path}", f"--model={model}",
            f"--batch_size={batch_size}", f"--warmup={warmup}", f"--repeats={repeats}",
            f"--update_every={update_every}", f"--sparsity={sparsity}",
        ]  # fmt: skip
        completed = subprocess.run(command, env=env, capture_output=True, text=True)
        if completed.returncode != 0 or not os.path.exists(path):
            return {"error": completed.stderr[-2000:]}
        with open(path, encoding="utf-8") as f:
            return json.load(f)


def main(argv):
    del argv
    common.quiet_tensorflow()
    f = flags.FLAGS
    result = measure_tfmot(f.model, f.batch_size, f.warmup, f.repeats, f.update_every, f.sparsity)
    with open(f.result, "w", encoding="utf-8") as out:
        json.dump(result, out)


if __name__ == "__main__":
    _define_flags()
    app.run(main)
