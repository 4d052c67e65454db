"""Training step time of dense vs sparse training (Static, SET, RigL, CigL) and TF-MOT pruning.

  python tools/bench_train.py --model=small_cnn --batch_size=64 --steps=100 --repeats=3 --output=out/bench

Every method trains the same model (`tft.models`, 10 classes) on one fixed synthetic batch repeated by
tf.data, with SGD(0.01, momentum 0.9). Sparse models are `tft.sparsify(model, --sparsity, "erk")`.
Methods named `<method>_fused` (e.g. `--methods=dense,dense_fused,rigl,rigl_fused`) first swap the
model's BatchNormalization layers for `tft.models.FusedBatchNormalization` (`config.fused_batchnorm`).

How it is timed (model.fit + tft.MaskUpdate, updates included):
- Each method is compiled once and warmed up (train function traced, one mask update run so the update's
  tf.functions are traced). The `MaskUpdate` callback keeps its `MaskEngine` across `fit` calls, as one
  long `fit` does (a fresh engine per call would retrace the update functions every window).
- With --steps_per_execution=k (Keras' switch, library models only) Keras runs k steps per call and calls
  the batch-end hooks once per call, so a window is `fit(steps_per_epoch=steps + k)` timed from the first
  call's end; k must divide --steps and ΔT.
- A timed window is `model.fit(steps_per_epoch=steps + 1)`: the clock runs from the end of batch 0 to the
  end of the last batch, so it covers `--steps` optimizer steps, the per-batch callback work and every mask
  update due in them. Updaters use ΔT = --update_every, drop fraction 0.3 (constant) and no end step, so
  with --steps = ΔT (the default) every window holds exactly one mask update (RigL: its dense-gradient
  batch plus drop/grow). Each update is also timed on its own (around `MaskEngine.update`).
- Reported per method: step = (window - time inside updates) / steps; update = median update time;
  amortised = step + update / ΔT (equal to window / steps when steps = ΔT); ratio = amortised / dense step,
  taken per repeat (methods interleaved, order rotated) and the median over repeats.
- TF-MOT: `prune_low_magnitude` (ConstantSparsity(--sparsity), pruning frequency ΔT) on a tf_keras twin of
  the model, timed in a child process (importing tfmot sets TF_USE_LEGACY_KERAS for the whole process)
  against a dense tf_keras twin in that same child (tools/bench_tfmot.py), with windows of exactly ΔT steps.

Writes train_<model>.json and train_<model>.md under --output and prints the table.
"""

import os
import sys
import time

from absl import app, flags

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_common as common  # noqa: E402
import bench_tfmot  # noqa: E402

_MODEL = flags.DEFINE_enum("model", "small_cnn", ["small_cnn", "cifar_resnet20", "cifar_resnet56", "wrn16_4"], "Model.")
_BATCH = flags.DEFINE_integer("batch_size", 64, "Training batch size.")
_STEPS = flags.DEFINE_integer("steps", 100, "Timed optimizer steps per window (default ΔT: one update per window).")
_WARMUP = flags.DEFINE_integer("warmup", 5, "Warm-up steps per method before timing.")
_REPEATS = flags.DEFINE_integer("repeats", 3, "Timed windows per method (interleaved across methods).")
_UPDATE_EVERY = flags.DEFINE_integer("update_every", 100, "ΔT: steps between mask updates (SET, RigL, CigL, TF-MOT).")
_SPARSITY = flags.DEFINE_float("sparsity", 0.9, "Sparsity of the sparse models (ERK for the library, uniform for TF-MOT).")
_METHODS = flags.DEFINE_list(
    "methods", ["dense", "static", "set", "rigl", "cigl"],
    "Library methods to time; a name ending in _fused (dense_fused, rigl_fused) uses the fused BatchNorm layer.",
)  # fmt: skip
_STEPS_PER_EXECUTION = flags.DEFINE_integer(
    "steps_per_execution", 1, "Keras' steps_per_execution for the library's models (must divide --steps and ΔT)."
)
_TFMOT = flags.DEFINE_boolean("tfmot", True, "Also time TF-MOT prune_low_magnitude in a child process.")
_OUTPUT = flags.DEFINE_string("output", "out/bench", "Output folder for the JSON and markdown files.")

DROP_FRACTION = 0.3
NO_END = 10**9


# -- the library's methods (Keras 3) -------------------------------------------


FUSED_SUFFIX = "_fused"  # a method name ending in it runs with tft.models.with_fused_batchnorm


def _updater(method, update_every):
    import tf_freetickets as tft

    schedule = {"update_every": update_every, "drop_fraction": DROP_FRACTION, "decay": "constant", "end_step": NO_END, "seed": 0}
    if method == "static":
        return tft.Static()
    if method == "set":
        return tft.SET(**schedule)
    if method == "rigl":
        return tft.RigL(**schedule)
    if method == "cigl":
        return tft.CigL(random_drop_rate=0.01, **schedule)
    raise ValueError(f"Unknown method {method!r}; use dense, static, set, rigl, cigl.")


def _persistent_mask_update_class():
    import tf_freetickets as tft

    class PersistentMaskUpdate(tft.MaskUpdate):
        """MaskUpdate that keeps its first MaskEngine (traced functions, gradient iterator) across fits,
        and times every `MaskEngine.update` call."""

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self.update_log = []  # (start time, seconds)
            self._kept = None

        def on_epoch_begin(self, epoch, logs=None):
            # MaskUpdate builds its engine at the first epoch start of a fit; hand it the kept one.
            if self._kept is not None and self.engine is None:
                self.engine = self._kept
            super().on_epoch_begin(epoch, logs)
            if self._kept is None:
                self._kept = self.engine
                original = self.engine.update

                def timed_update(*args, **kwargs):
                    start = time.perf_counter()
                    result = original(*args, **kwargs)
                    self.update_log.append((start, time.perf_counter() - start))
                    return result

                self._kept.update = timed_update

    return PersistentMaskUpdate


class _Run:
    def __init__(self, method, model, callbacks, mask_update):
        self.method = method
        self.model = model
        self.callbacks = callbacks
        self.mask_update = mask_update
        self.windows = []  # dicts: seconds, steps, updates (list of seconds)
        self.extra_updates = []


def _compile(model):
    import keras

    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        steps_per_execution=_STEPS_PER_EXECUTION.value,
    )


def _per_call(model):
    """Steps one call of the compiled train function runs (Keras calls the batch-end hooks once per call)."""
    return int(getattr(model, "steps_per_execution", 1) or 1)


def _make_runs(methods, model_name, sparsity, update_every, dataset):
    import keras

    import tf_freetickets as tft

    timer_class = common.batch_end_timer_class(keras.callbacks.Callback)
    mask_update_class = _persistent_mask_update_class()
    runs = []
    for method in methods:
        keras.utils.set_random_seed(0)
        model = common.build_model(model_name)
        base = method.removesuffix(FUSED_SUFFIX)
        if base != method:  # BatchNorm through TF's fused kernel (config.fused_batchnorm)
            model = tft.models.with_fused_batchnorm(model)
        mask_update = None
        callbacks = []
        if base != "dense":
            model = tft.sparsify(model, sparsity, distribution="erk", seed=0)
            mask_update = mask_update_class(_updater(base, update_every), gradient_data=dataset)
            callbacks.append(mask_update)
        _compile(model)
        callbacks.append(timer_class())
        runs.append(_Run(method, model, callbacks, mask_update))
    return runs


def _fit_window(run, dataset, steps):
    """One timed window of `steps` steps; returns (seconds, [update seconds inside it])."""
    timer = run.callbacks[-1]
    before = len(run.mask_update.update_log) if run.mask_update else 0
    run.model.fit(dataset, steps_per_epoch=steps + _per_call(run.model), epochs=1, verbose=0, callbacks=run.callbacks)
    start, end = timer.stamps[0], timer.stamps[-1]
    updates = []
    if run.mask_update:
        updates = [seconds for began, seconds in run.mask_update.update_log[before:] if began >= start]
    return end - start, updates


def _warm_up(run, dataset, warmup):
    per_call = _per_call(run.model)
    run.model.fit(dataset, steps_per_epoch=per_call * (max(warmup, 1) + 1), epochs=1, verbose=0, callbacks=run.callbacks)
    if run.mask_update is not None and run.mask_update.updater.updates_masks:
        step = int(run.model.optimizer.iterations.numpy())
        run.mask_update.engine.update(step, drop_fraction=DROP_FRACTION)  # traces the update functions
        run.mask_update.update_log.clear()


def _summarise(runs, steps, update_every):
    """Per-method medians and per-repeat paired ratios to dense."""
    dense = next((r for r in runs if r.method == "dense"), None)
    rows = {}
    for run in runs:
        updates = [u for w in run.windows for u in w["updates"]] + run.extra_updates
        update = common.median(updates) if updates else 0.0
        step_times = [(w["seconds"] - sum(w["updates"])) / steps for w in run.windows]
        fit_times = [w["seconds"] / steps for w in run.windows]
        amortised = [s + update / update_every for s in step_times]
        row = {
            "method": run.method,
            "step_s": common.median(step_times),
            "update_s": update if updates else None,
            "updates_timed": len(updates),
            "amortised_step_s": common.median(amortised),
            "fit_window_step_s": common.median(fit_times),
            "windows_s": [w["seconds"] for w in run.windows],
            "updates_per_window": [len(w["updates"]) for w in run.windows],
        }
        if dense is not None:
            base = [w["seconds"] / steps for w in dense.windows]
            row["ratio_to_dense"] = common.median([a / b for a, b in zip(amortised, base)])
            row["fit_window_ratio_to_dense"] = common.median([a / b for a, b in zip(fit_times, base)])
            if updates:
                row["update_over_dense_step"] = update / common.median(base)
        rows[run.method] = row
    return rows


def measure_library(model_name, batch_size, steps, warmup, repeats, update_every, sparsity, methods):
    import tf_freetickets as tft

    x, y = common.synthetic_batch(model_name, batch_size)
    dataset = common.repeated_dataset(x, y)
    runs = _make_runs(methods, model_name, sparsity, update_every, dataset)
    for run in runs:
        _warm_up(run, dataset, warmup)
    for repeat in range(repeats):
        shift = repeat % len(runs)
        for run in runs[shift:] + runs[:shift]:
            seconds, updates = _fit_window(run, dataset, steps)
            run.windows.append({"seconds": seconds, "steps": steps, "updates": updates})
    for run in runs:
        # With steps < ΔT a window may hold no update: time a few on their own.
        if run.mask_update and run.mask_update.updater.updates_masks and not any(w["updates"] for w in run.windows):
            for _ in range(3):
                step = int(run.model.optimizer.iterations.numpy())
                start = time.perf_counter()
                run.mask_update.engine.update(step, drop_fraction=DROP_FRACTION)
                run.extra_updates.append(time.perf_counter() - start)
    summary = _summarise(runs, steps, update_every)
    sparse = next((r for r in runs if r.mask_update is not None), None)
    if sparse is not None:
        summary["_global_sparsity"] = float(tft.global_sparsity(sparse.model))
    summary["_dense_params"] = int(common.build_model(model_name).count_params())
    return summary


# -- TF-MOT (child process, tf_keras) ---------------------------------------------


# -- report ------------------------------------------------------------------------


def markdown(result):
    cfg = result["config"]
    lines = [
        f"Training step time, {cfg['model']} ({result['library']['_dense_params']:,} params), batch {cfg['batch_size']}, "
        f"sparsity {cfg['sparsity']} (ERK, measured {result['library'].get('_global_sparsity', 0):.3f}), "
        f"ΔT = {cfg['update_every']}, {cfg['steps']} steps per window, median of {cfg['repeats']} interleaved windows.",
        "",
    ]
    header = ["method", "step ms", "mask update ms", "amortised step ms", "ratio to dense", "fit window ratio"]
    rows = []
    for method in cfg["methods"]:
        r = result["library"][method]
        update = common.fmt_ms(r["update_s"]) if r["update_s"] is not None else "-"
        rows.append(
            [
                method,
                common.fmt_ms(r["step_s"]),
                update,
                common.fmt_ms(r["amortised_step_s"]),
                common.fmt_ratio(r.get("ratio_to_dense", float("nan"))),
                common.fmt_ratio(r.get("fit_window_ratio_to_dense", float("nan"))),
            ]
        )
    tfmot = result.get("tfmot")
    if tfmot and "error" not in tfmot:
        rows.append(
            [
                "tf_keras dense twin (child process)",
                common.fmt_ms(tfmot["tf_keras_dense_step_s"]),
                "-",
                common.fmt_ms(tfmot["tf_keras_dense_step_s"]),
                "1.00x (its own baseline)",
                "-",
            ]
        )
        rows.append(
            [
                f"TF-MOT prune_low_magnitude ({tfmot['mask_sparsity']:.2f} uniform)",
                "-",
                "in step",
                common.fmt_ms(tfmot["tfmot_step_s"]),
                common.fmt_ratio(tfmot["ratio_to_tf_keras_dense"]) + " (vs tf_keras dense)",
                "-",
            ]
        )
    elif tfmot:
        rows.append(["TF-MOT", "failed", "-", "-", "-", "-"])
    lines.append(common.markdown_table(header, rows))
    return "\n".join(lines)


def main(argv):
    del argv
    common.quiet_tensorflow()
    per_call = _STEPS_PER_EXECUTION.value
    if per_call < 1 or _STEPS.value % per_call or _UPDATE_EVERY.value % per_call:
        raise app.UsageError(
            f"--steps_per_execution={per_call} must be >= 1 and divide --steps={_STEPS.value} and "
            f"--update_every={_UPDATE_EVERY.value}."
        )
    config = {
        "model": _MODEL.value,
        "batch_size": _BATCH.value,
        "steps": _STEPS.value,
        "warmup": _WARMUP.value,
        "repeats": _REPEATS.value,
        "update_every": _UPDATE_EVERY.value,
        "sparsity": _SPARSITY.value,
        "methods": list(_METHODS.value),
        "steps_per_execution": per_call,
        "timing": "model.fit + MaskUpdate windows (updates included, also timed alone); amortised = step + update / ΔT",
    }
    started = time.perf_counter()
    result = {"config": config, "machine": common.machine_info()}
    result["library"] = measure_library(
        _MODEL.value,
        _BATCH.value,
        _STEPS.value,
        _WARMUP.value,
        _REPEATS.value,
        _UPDATE_EVERY.value,
        _SPARSITY.value,
        config["methods"],
    )
    if _TFMOT.value:
        result["tfmot"] = bench_tfmot.run_in_subprocess(
            _MODEL.value, _BATCH.value, _WARMUP.value, _REPEATS.value, _UPDATE_EVERY.value, _SPARSITY.value
        )
    result["seconds"] = time.perf_counter() - started
    table = markdown(result)
    json_path, _ = common.write_outputs(_OUTPUT.value, f"train_{_MODEL.value}", result, table)
    print(table)
    print(f"\n({result['seconds']:.0f} s; wrote {json_path})")


if __name__ == "__main__":
    app.run(main)
