"""Op-level profile of a training step: where the time goes, per TensorFlow op type.

  python tools/bench_profile_step.py --model=small_cnn --variant=keras3_dense --output=out/bench_perf

Variants: keras3_dense (the `tft.models` build), keras3_sparse (`tft.sparsify`, 90% ERK), keras3_sparse_jit
(the same compiled with `jit_compile=True`), keras3_fused / keras3_sparse_fused (BatchNorm through
`tft.models.with_fused_batchnorm`), tf_keras (`bench_tfmot.tf_keras_twin`, needs tf_keras).
Batch --batch_size of one synthetic batch, SGD momentum 0.9; after a warm-up `fit`, --steps steps are traced
with `tf.profiler.experimental` and the trace's host events are summed by op type (the part of the event
name after ':'; TensorFlow op events only). Nested events (the step function, its executor) are listed too,
so shares are of all listed time; compare op types between variants, not the totals. Writes
profile_<model>_<variant>.json / .md under --output.
"""

import collections
import glob
import os
import shutil
import sys
import tempfile
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as common  # noqa: E402

_MODEL = flags.DEFINE_enum("model", "small_cnn", ["small_cnn", "cifar_resnet20"], "Model.")
_VARIANT = flags.DEFINE_enum(
    "variant", "keras3_dense",
    ["keras3_dense", "keras3_sparse", "keras3_sparse_jit", "keras3_fused", "keras3_sparse_fused", "tf_keras"],
    "What to profile.",
)  # fmt: skip
_BATCH = flags.DEFINE_integer("batch_size", 64, "Batch size.")
_STEPS = flags.DEFINE_integer("steps", 20, "Traced steps.")
_TOP = flags.DEFINE_integer("top", 20, "Op types listed.")
_OUTPUT = flags.DEFINE_string("output", "out/bench", "Output folder.")


def op_time_by_type(logdir):
    """{op type: (total ms, count)} over the host planes of the newest .xplane.pb under `logdir`."""
    from tensorflow.tsl.profiler.protobuf import xplane_pb2

    path = sorted(glob.glob(os.path.join(logdir, "**", "*.xplane.pb"), recursive=True))[-1]
    space = xplane_pb2.XSpace()
    with open(path, "rb") as f:
        space.ParseFromString(f.read())
    totals = collections.defaultdict(lambda: [0.0, 0])
    for plane in space.planes:
        if "Host" not in plane.name and "CPU" not in plane.name:
            continue
        for line in plane.lines:
            for event in line.events:
                name = plane.event_metadata[event.metadata_id].name
                if ":" in name and not name.startswith("$"):
                    entry = totals[name.rsplit(":", 1)[1]]
                    entry[0] += event.duration_ps / 1e9
                    entry[1] += 1
    return {k: tuple(v) for k, v in totals.items()}


def _model(model_name, variant):
    if variant == "tf_keras":
        import bench_tfmot
        import tf_keras

        model = bench_tfmot.tf_keras_twin(model_name)
        model.compile(optimizer=tf_keras.optimizers.SGD(0.01, momentum=0.9),
                      loss=tf_keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        return model
    import keras

    import tf_freetickets as tft

    keras.utils.set_random_seed(0)
    model = common.build_model(model_name)
    if variant.endswith("fused"):
        model = tft.models.with_fused_batchnorm(model)
    if "sparse" in variant:
        model = tft.sparsify(model, 0.9, distribution="erk", seed=0)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=variant.endswith("jit"))
    return model


def main(argv):
    del argv
    common.quiet_tensorflow()
    import tensorflow as tf

    x, y = common.synthetic_batch(_MODEL.value, _BATCH.value)
    dataset = common.repeated_dataset(x, y)
    model = _model(_MODEL.value, _VARIANT.value)
    model.fit(dataset, steps_per_epoch=_STEPS.value, epochs=1, verbose=0)  # warm-up, traces the step
    logdir = tempfile.mkdtemp(prefix="tft_profile_")
    start = time.perf_counter()
    tf.profiler.experimental.start(logdir)
    model.fit(dataset, steps_per_epoch=_STEPS.value, epochs=1, verbose=0)
    tf.profiler.experimental.stop()
    traced_s = time.perf_counter() - start
    totals = op_time_by_type(logdir)
    shutil.rmtree(logdir, ignore_errors=True)
    ranked = sorted(totals.items(), key=lambda kv: -kv[1][0])
    listed = sum(ms for ms, _ in totals.values())
    rows = [[name, f"{ms:.1f}", str(count), f"{100 * ms / listed:.1f}%"] for name, (ms, count) in ranked[: _TOP.value]]
    table = "\n".join([
        f"{_MODEL.value}, {_VARIANT.value}: {_STEPS.value} traced steps in {traced_s:.2f} s (profiler on).",
        "",
        common.markdown_table(["op type / event", "total ms", "count", "share of listed"], rows),
    ])
    result = {"config": {"model": _MODEL.value, "variant": _VARIANT.value, "steps": _STEPS.value,
                         "batch_size": _BATCH.value},
              "machine": common.machine_info(), "traced_s": traced_s, "op_ms": {k: v[0] for k, v in totals.items()},
              "op_count": {k: v[1] for k, v in totals.items()}}
    json_path, _ = common.write_outputs(_OUTPUT.value, f"profile_{_MODEL.value}_{_VARIANT.value}", result, table)
    print(table)
    print(f"\n(wrote {json_path})")


if __name__ == "__main__":
    app.run(main)
