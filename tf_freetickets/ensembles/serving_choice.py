"""Serve an ensemble in the fastest measured form: each candidate exported, checked, timed; the fastest kept.

Two runtimes (`runtime`):

- "saved_model" (default): one SavedModel with the library's input contract
  (`deploy.saved_model`), in one of these forms:
  - "members": `EnsembleModel.export`, the M members side by side behind
    `serve`, `member_probabilities` and `uncertainty`;
  - "stacked": `deploy.stacked.stack_ensemble`, the members copied into one
    plain Keras graph returning the mean probability (`serve` only);
  - "compacted": the same of the members after `tft.compact` (dead units and
    channels removed, constants folded): faster where the tickets have dead
    channels (Chase, SRigL's ablation), the same as "stacked" where they have
    none (BENCHMARKS.md 6e, 7);
  - "compacted_offsets": the same with `tft.compact(padded_constants="offset")`
    (no carrier channel; an offset map after each convolution that reads
    removed constants): 4-9% faster than "compacted" on small_cnn Chase
    tickets in TFLite, not on ResNet-20 ones (BENCHMARKS.md 7c).
  The grouped form is not a candidate here: Keras runs grouped convolutions
  through XLA on TensorFlow's CPU, 2.4-4.8x the stacked form (BENCHMARKS.md 6e).
- "tflite": one .tflite file (`deploy.tflite.convert_to_tflite`, mean
  probability output; TFLite has no input contract) of "stacked",
  "compacted", "compacted_offsets" or "grouped" (`deploy.grouped.group_ensemble`, members of one
  architecture). At batch 1 the TFLite interpreter served this library's
  small CNNs in 0.15x the SavedModel runtime's time (BENCHMARKS.md 8).

Each candidate is exported to a temporary folder, reloaded, checked against
the members' mean probability (a form off by more than `tolerance` is
refused, never kept) and timed on `example` batches through its reloaded
`serve` endpoint (or one TFLite interpreter), interleaved, medians. The
fastest is moved to the target path and the choice is printed with every
form's figures.
"""

import dataclasses
import os
import shutil
import tempfile
import time

import numpy as np
import tensorflow as tf

SERVING_FORMS = ("members", "stacked", "compacted", "compacted_offsets")
TFLITE_FORMS = ("stacked", "compacted", "compacted_offsets", "grouped")
RUNTIME_FORMS = {"saved_model": SERVING_FORMS, "tflite": TFLITE_FORMS}


@dataclasses.dataclass
class FormTiming:
    """One candidate: median seconds per `serve` call, max abs diff to the members' mean, or why it was skipped."""

    form: str
    seconds: float = float("nan")
    max_abs_diff: float = float("nan")
    skipped: str = ""


def check_target(path, runtime):
    """Refuses, in one line, a `path` whose content `export_fastest` must not replace.

    Args:
      path: where the chosen form goes.
      runtime: "saved_model" (a folder: new, empty or a SavedModel's) or
        "tflite" (a file whose name ends in .tflite: new or a TFLite file).

    Raises:
      ValueError: a tflite path without the .tflite suffix or that is a
        folder; a saved_model path that is a file, or a folder holding
        anything but a SavedModel (a training workdir, say).
    """
    if runtime == "tflite":
        if os.path.isdir(path) or not os.fspath(path).endswith(".tflite"):
            raise ValueError(f"{path} is not a .tflite file path; runtime 'tflite' writes one file, named *.tflite.")
        return
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{path} is a file; runtime 'saved_model' writes a SavedModel folder.")
    if os.path.isdir(path) and os.listdir(path) and not os.path.exists(os.path.join(path, "saved_model.pb")):
        raise ValueError(
            f"{path} holds files that are not a SavedModel, and export_fastest replaces what is at its path; "
            "give a new folder (or a SavedModel's)."
        )


def _keras_form(ensemble, form):
    """The one-graph Keras model of `form` ("stacked", "compacted", "compacted_offsets" or "grouped")."""
    from tf_freetickets.deploy.compact import compact
    from tf_freetickets.deploy.grouped import group_ensemble
    from tf_freetickets.deploy.stacked import stack_ensemble

    if form == "grouped":
        return group_ensemble(ensemble.members, from_logits=ensemble.from_logits)
    if form == "stacked":
        members = ensemble.members
    else:
        padded = "offset" if form == "compacted_offsets" else "carrier"
        members = [compact(member, padded_constants=padded)[0] for member in ensemble.members]
    return stack_ensemble(members, from_logits=ensemble.from_logits)


def _saved_model_candidate(ensemble, form, scratch, input_range, example, alive):
    """(serve function, written folder) of `form` as a SavedModel, reloaded from `scratch`."""
    from tf_freetickets.deploy.saved_model import export_member

    if form == "members":
        folder = ensemble.export(scratch, input_range=input_range)
    else:
        folder = export_member(_keras_form(ensemble, form), scratch, input_range=input_range)
    alive.append(tf.saved_model.load(folder))  # kept alive: `serve` references its variables
    return alive[-1].serve, folder


def _tflite_candidate(ensemble, form, scratch, input_range, example, alive):
    """(serve function, written file) of `form` converted to TFLite, run by one interpreter."""
    from tf_freetickets.deploy.tflite import export_tflite, tflite_function

    path = scratch + ".tflite"
    export_tflite(_keras_form(ensemble, form), path)
    return tflite_function(path, example.shape), path


def _median_seconds(serves, batch, repeats, calls):
    times = {form: [] for form in serves}
    for _ in range(repeats):
        for form, serve in serves.items():
            start = time.perf_counter()
            for _ in range(calls):
                serve(batch)
            times[form].append((time.perf_counter() - start) / calls)
    return {form: float(np.median(t)) for form, t in times.items()}


def export_fastest(ensemble, path, example, forms=None, input_range="auto", repeats=5, calls=20, tolerance=1e-5,
                   verbose=True, runtime="saved_model"):  # fmt: skip
    """Exports `ensemble` to `path` in whichever of `forms` serves `example` fastest in `runtime` (module doc).

    Args:
      ensemble: an `EnsembleModel`.
      path: the SavedModel folder (runtime "saved_model") or .tflite file
        ("tflite") to write; its parent must exist; what is there is replaced.
      example: a batch shaped as the serving traffic, e.g. (1, 28, 28, 1)
        float32 in [0, 1]: the forms are timed on it (batch 1 and batch 32
        can rank differently).
      forms: candidates among the runtime's forms (None: all of them):
        SERVING_FORMS for "saved_model", TFLITE_FORMS for "tflite".
      input_range: the SavedModel input contract's range ("auto", (low, high) or None).
      repeats, calls: timed windows per form (interleaved) and calls per window.
      tolerance: the largest max abs diff to the members' mean probability a form may have.
      verbose: print every form's figures and the choice.
      runtime: "saved_model" or "tflite".

    Returns:
      (chosen form, [FormTiming]).

    Raises:
      ValueError: an unknown runtime or form, a `path` whose content must not
        be replaced (`check_target`), or no form passed the check (each
        form's reason named).
    """
    if runtime not in RUNTIME_FORMS:
        raise ValueError(f"Unknown runtime {runtime!r}; choose from {tuple(RUNTIME_FORMS)}.")
    allowed = RUNTIME_FORMS[runtime]
    forms = allowed if forms is None else tuple(forms)
    unknown = [f for f in forms if f not in allowed]
    if unknown or not forms:
        raise ValueError(f"Unknown serving forms {unknown or list(forms)} for runtime {runtime!r}; choose from {allowed}.")
    check_target(path, runtime)
    candidate = _saved_model_candidate if runtime == "saved_model" else _tflite_candidate
    example = np.asarray(example, np.float32)
    reference = np.mean(ensemble.member_probabilities(example), axis=0)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(path))) as scratch:
        timings, serves, written, alive = [], {}, {}, []
        for form in forms:
            timing = FormTiming(form)
            timings.append(timing)
            try:
                serve, written[form] = candidate(ensemble, form, os.path.join(scratch, form), input_range, example, alive)
            except Exception as error:  # e.g. compact refusing a layer, the TFLite converter refusing an op
                timing.skipped = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                continue
            timing.max_abs_diff = float(np.max(np.abs(np.asarray(serve(example)) - reference)))
            if timing.max_abs_diff > tolerance:
                timing.skipped = f"max abs diff {timing.max_abs_diff:.2e} > tolerance {tolerance:g}"
            else:
                serves[form] = serve
        if not serves:
            raise ValueError("No serving form passed the check: " + "; ".join(f"{t.form}: {t.skipped}" for t in timings))
        medians = _median_seconds(serves, example, repeats, calls)
        for timing in timings:
            timing.seconds = medians.get(timing.form, float("nan"))
        chosen = min(medians, key=medians.get)
        if os.path.isdir(path):
            shutil.rmtree(path)
        elif os.path.exists(path):
            os.remove(path)
        shutil.move(written[chosen], path)
    if verbose:
        _print_choice(chosen, timings, example.shape[0], path, runtime)
    return chosen, timings


def _print_choice(chosen, timings, batch, path, runtime):
    fastest = next(t.seconds for t in timings if t.form == chosen)
    for t in timings:
        if t.skipped:
            print(f"  {t.form:17s} skipped: {t.skipped}")
        else:
            print(f"  {t.form:17s} {1e3 * t.seconds:8.3f} ms per batch of {batch} ({t.seconds / fastest:.2f}x), "
                  f"max abs diff {t.max_abs_diff:.1e}")  # fmt: skip
    where = "" if runtime == "saved_model" else f" in {runtime}"
    print(f"Serving form: {chosen}{where} (fastest measured at batch {batch}), written to {path}")
