"""Export saved members as one ensemble SavedModel (and each member as its own).

  python -m tf_freetickets.export_main --source=out/edst --output=out/edst/ensemble_savedmodel

  python -m tf_freetickets.export_main --source=out/edst --output=out/edst/ensemble.tflite --fastest=tflite

The ensemble SavedModel has the endpoints `serve` (mean probabilities),
`member_probabilities` and `uncertainty` (see tf_freetickets.deploy.saved_model),
which take float32 images scaled to [0, 1] and reject values outside that
range (raw 0..255 pixels) and NaN/Inf with an InvalidArgumentError. After
writing, it is reloaded with `tf.saved_model.load` and checked against the
in-memory ensemble on random inputs; a mismatch exits with code 1. A source
that is a training workdir (or its members/ folder) gives the members its
manifest lists; an unfinished run, missing members, and an --output that is a
file or cannot be written end in one error line, exit code 2.

With --fastest=saved_model (or tflite) the ensemble is written instead in
the form that serves a batch of --fastest_batch examples fastest on this
machine (`EnsembleModel.export_fastest`: every form checked against the
members' mean, timed, the fastest kept and printed): a SavedModel folder
with `serve` (or one .tflite file, which has no input contract: no range or
NaN check) at --output; an existing --output is replaced only if it is a
SavedModel (or a .tflite file). This file reads the flags;
`tf_freetickets.deploy.run_export` does the work.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads: hide its C++ INFO/WARNING lines

from absl import app, flags, logging

_SOURCE = flags.DEFINE_string("source", None, "Training workdir, folder of members, or comma-separated member paths.")
_OUTPUT = flags.DEFINE_string(
    "output", None, "Folder of the ensemble SavedModel (with --fastest=tflite: the .tflite file to write)."
)
_MEMBERS = flags.DEFINE_bool(
    "members", True, "Also write each member as a SavedModel under <output>_members/ (x.tflite: x_members/)."
)
_INPUT_RANGE = flags.DEFINE_string(
    "input_range", "auto",
    "Input values the endpoints accept, 'low,high' or 'none'; auto: [0, 1] (images scaled by 1/255) except for "
    "imagenet2012 runs (mean/std-normalised, no range). NaN/Inf inputs are always rejected.",
)  # fmt: skip
_FASTEST = flags.DEFINE_enum(
    "fastest", None, ["saved_model", "tflite"],
    "Write the form that serves fastest here instead of the ensemble SavedModel: a SavedModel folder among "
    "members/stacked/compacted/compacted_offsets, or (tflite) one .tflite file among "
    "stacked/compacted/compacted_offsets/grouped.",
)  # fmt: skip
_FASTEST_BATCH = flags.DEFINE_integer("fastest_batch", 1, "Batch size the --fastest forms are timed at (your serving batch).")


def _parse_flags(argv):
    from tf_freetickets.experiments.cli import parse_flags

    return parse_flags(argv)


def main(argv):
    """absl entry point: exports the ensemble `--source` names to `--output` (see the module docstring).

    Args:
      argv: the command line left after absl parsed the flags (must be empty).
    """
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not _SOURCE.value or not _OUTPUT.value:
        raise app.UsageError("--source and --output are required.")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    from tf_freetickets.deploy import run_export
    from tf_freetickets.experiments.cli import fail, user_errors

    try:
        _check_outputs()  # before loading: fail in seconds
        ensemble = run_export.load_ensemble(_SOURCE.value)
        input_range = run_export.input_range_for(_INPUT_RANGE.value, _SOURCE.value)
    except (FileNotFoundError, ValueError, *user_errors()) as error:
        fail(error)
    if _FASTEST.value:
        example = run_export.serving_example(ensemble, _FASTEST_BATCH.value)
        try:
            chosen, _ = ensemble.export_fastest(_OUTPUT.value, example, input_range=input_range, runtime=_FASTEST.value)
        except ValueError as error:  # no form passed its check: each form's reason, in one line
            fail(error)
        run_export.write_saved_models(
            ensemble, _OUTPUT.value, input_range=input_range, members=_MEMBERS.value, ensemble_model=False
        )
        error = run_export.served_max_difference(ensemble, _OUTPUT.value, _FASTEST.value)
        what = f" as the {chosen} form ({_FASTEST.value})"
    else:
        run_export.write_saved_models(ensemble, _OUTPUT.value, input_range=input_range, members=_MEMBERS.value)
        error = run_export.reload_max_difference(ensemble, _OUTPUT.value)
        what = ""
    print(f"wrote {_OUTPUT.value}: {ensemble.num_members} members{what}, reload max |diff| = {error:.2e}")
    if error > run_export.RELOAD_TOLERANCE:
        written = "TFLite file" if _FASTEST.value == "tflite" else "SavedModel"
        print(f"error: the reloaded {written} does not match the in-memory ensemble", file=sys.stderr)
        sys.exit(1)


def _check_outputs():
    """One-line refusals of an --output (and --fastest_batch) that cannot take what will be written."""
    from tf_freetickets.deploy import run_export
    from tf_freetickets.ensembles.serving_choice import check_target

    if _FASTEST_BATCH.value < 1:
        raise ValueError(f"--fastest_batch={_FASTEST_BATCH.value} must be >= 1.")
    if flags.FLAGS["fastest_batch"].present and not _FASTEST.value:
        raise ValueError("--fastest_batch only applies with --fastest=saved_model or --fastest=tflite.")
    if _FASTEST.value == "tflite":
        if flags.FLAGS["input_range"].present:
            raise ValueError("--input_range applies to SavedModels; a TFLite file has no input contract (drop the flag).")
        run_export.check_output_file(_OUTPUT.value, kind="TFLite", example_name="ensemble.tflite")
        if _MEMBERS.value:
            run_export.check_output_folder(run_export.members_folder(_OUTPUT.value), members=False)
    else:
        run_export.check_output_folder(_OUTPUT.value, members=_MEMBERS.value)
    if _FASTEST.value:
        check_target(_OUTPUT.value, _FASTEST.value)  # never replace a workdir or a file of something else


def console_main():
    """Entry point of the `tft-export` console script (and of `python -m tf_freetickets.export_main`): absl runs `main`."""
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    console_main()
