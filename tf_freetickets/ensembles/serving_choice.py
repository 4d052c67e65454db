"""Serve an ensemble in the fastest measured form: each candidate exported, checked, timed; the fastest kept.

Forms (all one SavedModel with the library's input contract, `deploy.saved_model`):

- "members": `EnsembleModel.export`, the M members side by side behind
  `serve`, `member_probabilities` and `uncertainty`;
- "stacked": `deploy.stacked.stack_ensemble`, the members copied into one
  plain Keras graph returning the mean probability (`serve` only);
- "compacted": the same of the members after `tft.compact` (dead units and
  channels removed, constants folded): faster where the tickets have dead
  channels (Chase, SRigL's ablation), the same as "stacked" where they have
  none (BENCHMARKS.md 6e, 7).

Each candidate is exported to a temporary folder, reloaded, checked against
the members' mean probability (a form off by more than `tolerance` is
refused, never kept) and timed on `example` batches through its reloaded
`serve` endpoint, interleaved, medians. The fastest is moved to the target
path and the choice is printed with every form's figures.
"""

import dataclasses
import os
import shutil
import tempfile
import time

import numpy as np
import tensorflow as tf

SERVING_FORMS = ("members", "stacked", "compacted")


@dataclasses.dataclass
class FormTiming:
    """One candidate: median seconds per `serve` call, max abs diff to the members' mean, or why it was skipped."""

    form: str
    seconds: float = float("nan")
    max_abs_diff: float = float("nan")
    skipped: str = ""


def _export_form(ensemble, form, path, input_range):
    from tf_freetickets.deploy.compact import compact
    from tf_freetickets.deploy.saved_model import export_member
    from tf_freetickets.deploy.stacked import stack_ensemble

    if form == "members":
        return ensemble.export(path, input_range=input_range)
    members = ensemble.members if form == "stacked" else [compact(member)[0] for member in ensemble.members]
    return export_member(stack_ensemble(members, from_logits=ensemble.from_logits), path, input_range=input_range)


def _median_seconds(serves, batch, repeats, calls):
    times = {form: [] for form in serves}
    for _ in range(repeats):
        for form, serve in serves.items():
            start = time.perf_counter()
            for _ in range(calls):
                serve(batch)
            times[form].append((time.perf_counter() - start) / calls)
    return {form: float(np.median(t)) for form, t in times.items()}


def export_fastest(ensemble, path, example, forms=SERVING_FORMS, input_range="auto", repeats=5, calls=20,
                   tolerance=1e-5, verbose=True):  # fmt: skip
    """Exports `ensemble` to `path` in whichever of `forms` serves `example` fastest (module doc).

    Args:
      ensemble: an `EnsembleModel`.
      path: the SavedModel folder to write (its parent must exist).
      example: a batch shaped as the serving traffic, e.g. (1, 28, 28, 1)
        float32 in [0, 1]: the forms are timed on it (batch 1 and batch 32
        can rank differently).
      forms: candidates among SERVING_FORMS.
      input_range: the input contract's range ("auto", (low, high) or None).
      repeats, calls: timed windows per form (interleaved) and calls per window.
      tolerance: the largest max abs diff to the members' mean probability a form may have.
      verbose: print every form's figures and the choice.

    Returns:
      (chosen form, [FormTiming]).

    Raises:
      ValueError: an unknown form, or no form passed the check.
    """
    unknown = [f for f in forms if f not in SERVING_FORMS]
    if unknown or not forms:
        raise ValueError(f"Unknown serving forms {unknown or list(forms)}; choose from {SERVING_FORMS}.")
    example = np.asarray(example, np.float32)
    reference = np.mean(ensemble.member_probabilities(example), axis=0)
    with tempfile.TemporaryDirectory(dir=os.path.dirname(os.path.abspath(path))) as scratch:
        timings, serves, loaded = [], {}, []
        for form in forms:
            timing = FormTiming(form)
            try:
                folder = _export_form(ensemble, form, os.path.join(scratch, form), input_range)
            except (ValueError, TypeError) as error:  # e.g. compact refusing a layer it cannot slice
                timing.skipped = f"{type(error).__name__}: {error}"
                timings.append(timing)
                continue
            loaded.append(tf.saved_model.load(folder))  # kept alive: `serve` references its variables
            serve = loaded[-1].serve
            timing.max_abs_diff = float(np.max(np.abs(np.asarray(serve(example)) - reference)))
            if timing.max_abs_diff > tolerance:
                timing.skipped = f"max abs diff {timing.max_abs_diff:.2e} > tolerance {tolerance:g}"
            else:
                serves[form] = serve
            timings.append(timing)
        if not serves:
            raise ValueError("No serving form passed the check: " + "; ".join(f"{t.form}: {t.skipped}" for t in timings))
        medians = _median_seconds(serves, example, repeats, calls)
        for timing in timings:
            timing.seconds = medians.get(timing.form, float("nan"))
        chosen = min(medians, key=medians.get)
        if os.path.exists(path):
            shutil.rmtree(path)
        shutil.move(os.path.join(scratch, chosen), path)
    if verbose:
        _print_choice(chosen, timings, example.shape[0], path)
    return chosen, timings


def _print_choice(chosen, timings, batch, path):
    fastest = next(t.seconds for t in timings if t.form == chosen)
    for t in timings:
        if t.skipped:
            print(f"  {t.form:10s} skipped: {t.skipped}")
        else:
            print(f"  {t.form:10s} {1e3 * t.seconds:8.3f} ms per batch of {batch} ({t.seconds / fastest:.2f}x), "
                  f"max abs diff {t.max_abs_diff:.1e}")  # fmt: skip
    print(f"Serving form: {chosen} (fastest measured at batch {batch}), written to {path}")
