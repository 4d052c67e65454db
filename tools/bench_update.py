"""Cost of one mask update (RigL with its dense gradient, SET) against one training step.

  python tools/bench_update.py --model=cifar_resnet56 --batch_size=64 --repeats=5 --output=out/bench

One sparse model (`tft.sparsify(model, --sparsity, "erk")`, SGD momentum 0.9) on a fixed synthetic batch:
- training step: `model.fit` windows of --steps steps; the clock runs from the end of batch 0 to the end
  of the last batch (no callbacks but the clock), so it is the steady-state compiled step.
- RigL update: `MaskEngine(model, RigL(...)).update(step, drop_fraction=0.3)`, i.e. one dense-gradient
  batch of the training batch size (forward + backward with unmasked kernels, BatchNorm state restored)
  plus drop/grow over every masked layer, new weights and optimizer slots zeroed. Its two parts are also
  reported: `MaskEngine.dense_gradients()` alone, and the rest (update minus gradient medians).
- SET update: the same drop/grow with random growth (no gradient).
- dense step (--dense): the same model, unmasked, for reference.
- RigL with growth_gradient="step_batch" (--step_batch; FreeTickets' choice, a switch here): a twin
  sparse model whose train step keeps each batch's dense gradient (`StepGradientTap`), so the update
  has no gradient batch of its own; both its step (tap included) and its update are timed.
Every quantity is measured --repeats times, interleaved (order rotated), after a warm-up that traces
every function; medians are reported. Writes update_<model>.json / .md under --output.
"""

import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as common  # noqa: E402

_MODEL = flags.DEFINE_enum(
    "model", "cifar_resnet56", ["small_cnn", "cifar_resnet20", "cifar_resnet56", "wrn16_4", "resnet50_32"], "Model."
)
_BATCH = flags.DEFINE_integer("batch_size", 64, "Training (and dense-gradient) batch size.")
_STEPS = flags.DEFINE_integer("steps", 5, "Training steps per timed window.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed repetitions of every quantity (interleaved).")
_SPARSITY = flags.DEFINE_float("sparsity", 0.9, "Sparsity (ERK).")
_DENSE = flags.DEFINE_boolean("dense", True, "Also time the dense model's training step.")
_STEP_BATCH = flags.DEFINE_boolean(
    "step_batch", True, "Also time RigL with growth_gradient='step_batch' (no extra gradient batch) on a twin model."
)
_OUTPUT = flags.DEFINE_string("output", "out/bench", "Output folder.")

DROP_FRACTION = 0.3


def _compile(model):
    import keras

    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _step_batch_twin(model_name, sparsity, dataset, schedule, timer):
    """A sparse twin whose train step keeps the batch gradient, and its RigL(growth_gradient="step_batch") engine."""
    import keras

    import tf_freetickets as tft
    from tf_freetickets.sparse.mask_engine import MaskEngine

    keras.utils.set_random_seed(0)
    twin = _compile(tft.sparsify(common.build_model(model_name), sparsity, distribution="erk", seed=0))
    twin.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0, callbacks=[timer])  # builds the optimizer
    updater = tft.RigL(growth_gradient="step_batch", **schedule)
    if updater.attach(twin):
        twin.make_train_function(force=True)
    twin.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0, callbacks=[timer])  # the tap holds a gradient
    return twin, MaskEngine(twin, updater)


def measure(model_name, batch_size, steps, repeats, sparsity, with_dense, with_step_batch=True):
    import keras

    import tf_freetickets as tft
    from tf_freetickets.sparse.mask_engine import MaskEngine

    x, y = common.synthetic_batch(model_name, batch_size)
    dataset = common.repeated_dataset(x, y)
    keras.utils.set_random_seed(0)
    dense_model = common.build_model(model_name)
    params = int(dense_model.count_params())
    model = _compile(tft.sparsify(dense_model, sparsity, distribution="erk", seed=0))
    import keras

    timer = common.batch_end_timer_class(keras.callbacks.Callback)()
    model.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0, callbacks=[timer])  # builds the optimizer
    schedule = {"update_every": 100, "drop_fraction": DROP_FRACTION, "decay": "constant", "end_step": 10**9, "seed": 0}
    rigl = MaskEngine(model, tft.RigL(**schedule), gradient_data=dataset)
    set_engine = MaskEngine(model, tft.SET(**schedule))
    dense = None
    if with_dense:
        keras.utils.set_random_seed(0)
        dense = _compile(common.build_model(model_name))
        dense.fit(dataset, steps_per_epoch=2, epochs=1, verbose=0, callbacks=[timer])

    def train_window(m):
        m.fit(dataset, steps_per_epoch=steps + 1, epochs=1, verbose=0, callbacks=[timer])
        return (timer.stamps[-1] - timer.stamps[0]) / steps

    def timed(fn):
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start

    def step_now():
        return int(model.optimizer.iterations.numpy())

    tasks = {
        "sparse_step": lambda: train_window(model),
        "rigl_update": lambda: timed(lambda: rigl.update(step_now(), drop_fraction=DROP_FRACTION)),
        "rigl_dense_gradient": lambda: timed(rigl.dense_gradients),
        "set_update": lambda: timed(lambda: set_engine.update(step_now(), drop_fraction=DROP_FRACTION)),
    }
    if dense is not None:
        tasks["dense_step"] = lambda: train_window(dense)
    if with_step_batch:
        twin, twin_engine = _step_batch_twin(model_name, sparsity, dataset, schedule, timer)
        tasks["step_batch_step"] = lambda: train_window(twin)
        tasks["step_batch_update"] = lambda: timed(
            lambda: twin_engine.update(int(twin.optimizer.iterations.numpy()), drop_fraction=DROP_FRACTION)
        )
    for task in tasks.values():  # warm-up: trace everything
        task()
    times = {name: [] for name in tasks}
    names = list(tasks)
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            times[name].append(tasks[name]())
    med = {name: common.median(values) for name, values in times.items()}
    step = med["sparse_step"]
    result = {
        "params": params,
        "global_sparsity": float(tft.global_sparsity(model)),
        "masked_layers": len(rigl.layers),
        "masked_weights": int(sum(int(layer.kernel_mask.shape.num_elements()) for layer in rigl.layers)),
        "times_s": times,
        "median_s": med,
        "rigl_apply_s": max(med["rigl_update"] - med["rigl_dense_gradient"], 0.0),
        "rigl_update_over_step": med["rigl_update"] / step,
        "set_update_over_step": med["set_update"] / step,
        "rigl_dense_gradient_over_step": med["rigl_dense_gradient"] / step,
    }
    if dense is not None:
        result["rigl_update_over_dense_step"] = med["rigl_update"] / med["dense_step"]
        result["sparse_step_over_dense_step"] = step / med["dense_step"]
    result["rigl_update_amortised_over_100_steps"] = med["rigl_update"] / (100 * step)
    if with_step_batch:
        result["step_batch_step_over_step"] = med["step_batch_step"] / step
        result["step_batch_update_over_its_step"] = med["step_batch_update"] / med["step_batch_step"]
    return result


def markdown(result):
    cfg, r = result["config"], result["result"]
    med = r["median_s"]
    step = med["sparse_step"]
    lines = [
        f"Mask update vs training step, {cfg['model']} ({r['params']:,} params, {r['masked_layers']} masked layers, "
        f"{r['masked_weights']:,} maskable weights), batch {cfg['batch_size']}, sparsity {cfg['sparsity']} ERK, "
        f"median of {cfg['repeats']} interleaved repeats.",
        "",
    ]
    rows = [["training step (sparse model)", common.fmt_ms(step), "1.00x"]]
    if "dense_step" in med:
        rows.append(["training step (dense model)", common.fmt_ms(med["dense_step"]), common.fmt_ratio(med["dense_step"] / step)])
    rows += [
        [
            "RigL update (dense gradient + drop/grow)",
            common.fmt_ms(med["rigl_update"]),
            common.fmt_ratio(r["rigl_update_over_step"]),
        ],
        [
            "RigL part 1: dense gradient (1 batch)",
            common.fmt_ms(med["rigl_dense_gradient"]),
            common.fmt_ratio(r["rigl_dense_gradient_over_step"]),
        ],
        ["RigL part 2: drop/grow + slot reset", common.fmt_ms(r["rigl_apply_s"]), common.fmt_ratio(r["rigl_apply_s"] / step)],
        ["SET update (drop/random grow)", common.fmt_ms(med["set_update"]), common.fmt_ratio(r["set_update_over_step"])],
    ]
    if "step_batch_step" in med:
        rows += [
            ["training step, twin keeping the batch gradient (step_batch)", common.fmt_ms(med["step_batch_step"]),
             common.fmt_ratio(r["step_batch_step_over_step"])],
            ["RigL update, growth_gradient='step_batch' (no gradient batch)", common.fmt_ms(med["step_batch_update"]),
             common.fmt_ratio(med["step_batch_update"] / step)
             + f" ({r['step_batch_update_over_its_step']:.2f}x the twin's own step)"],
        ]  # fmt: skip
    lines.append(common.markdown_table(["operation", "median ms", "vs one sparse training step"], rows))
    lines.append("")
    lines.append(f"RigL update amortised over ΔT = 100 steps: +{100 * r['rigl_update_amortised_over_100_steps']:.1f}% per step.")
    return "\n".join(lines)


def main(argv):
    del argv
    common.quiet_tensorflow()
    config = {
        "model": _MODEL.value,
        "batch_size": _BATCH.value,
        "steps": _STEPS.value,
        "repeats": _REPEATS.value,
        "sparsity": _SPARSITY.value,
        "drop_fraction": DROP_FRACTION,
    }
    started = time.perf_counter()
    result = {"config": config, "machine": common.machine_info()}
    result["result"] = measure(
        _MODEL.value, _BATCH.value, _STEPS.value, _REPEATS.value, _SPARSITY.value, _DENSE.value, _STEP_BATCH.value
    )
    config["step_batch"] = _STEP_BATCH.value
    result["seconds"] = time.perf_counter() - started
    table = markdown(result)
    json_path, _ = common.write_outputs(_OUTPUT.value, f"update_{_MODEL.value}", result, table)
    print(table)
    print(f"\n({result['seconds']:.0f} s; wrote {json_path})")


if __name__ == "__main__":
    app.run(main)
