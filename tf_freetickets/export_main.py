"""Export saved members as one ensemble SavedModel (and each member as its own).

  python -m tf_freetickets.export_main --source=out/edst --output=out/edst/ensemble_savedmodel

The ensemble SavedModel has the endpoints `serve` (mean probabilities),
`member_probabilities` and `uncertainty` (see tf_freetickets.deploy.saved_model), which
take float32 images scaled to [0, 1] and reject values outside that range
(raw 0..255 pixels) and NaN/Inf with an InvalidArgumentError. After
writing, it is reloaded with `tf.saved_model.load` and checked against the
in-memory ensemble on random inputs; a mismatch exits with code 1.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads: hide its C++ INFO/WARNING lines

from absl import app, flags, logging

_SOURCE = flags.DEFINE_string("source", None, "Training workdir, folder of members, or comma-separated member paths.")
_OUTPUT = flags.DEFINE_string("output", None, "Folder of the ensemble SavedModel.")
_MEMBERS = flags.DEFINE_bool("members", True, "Also write each member as a SavedModel under <output>_members/.")
_INPUT_RANGE = flags.DEFINE_string(
    "input_range", "auto",
    "Input values the endpoints accept, 'low,high' or 'none'; auto: [0, 1] (images scaled by 1/255) except for "
    "imagenet2012 runs (mean/std-normalised, no range). NaN/Inf inputs are always rejected.",
)  # fmt: skip


def _input_range(source):
    """(low, high) from --input_range, or None; auto reads the dataset the source run recorded."""
    value = _INPUT_RANGE.value.strip().lower()
    if value == "none":
        return None
    if value != "auto":
        try:
            low, high = (float(v) for v in value.split(","))
        except ValueError:
            raise ValueError(f"--input_range={_INPUT_RANGE.value!r} must be 'auto', 'none' or 'low,high'.") from None
        return (low, high)
    from tf_freetickets.experiments.workdir import recorded_config

    dataset = recorded_config(source).get("dataset", "") if "," not in source else ""
    return None if dataset == "imagenet2012" else (0.0, 1.0)


def _parse_flags(argv):
    from tf_freetickets.experiments.cli import parse_flags

    return parse_flags(argv)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not _SOURCE.value or not _OUTPUT.value:
        raise app.UsageError("--source and --output are required.")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    import numpy as np
    import tensorflow as tf

    from tf_freetickets.deploy.saved_model import export_member
    from tf_freetickets.ensembles import EnsembleModel
    from tf_freetickets.experiments.cli import fail, user_errors
    from tf_freetickets.experiments.evaluation import members_source

    try:
        ensemble = EnsembleModel.from_saved_models(members_source(_SOURCE.value))
        input_range = _input_range(_SOURCE.value)
    except (FileNotFoundError, ValueError, *user_errors()) as error:
        fail(error)
    ensemble.export(_OUTPUT.value, input_range=input_range)
    if _MEMBERS.value:
        for index, member in enumerate(ensemble.members):
            export_member(member, os.path.join(f"{_OUTPUT.value}_members", f"member_{index}"), input_range=input_range)
    x = np.random.default_rng(0).random((8, *ensemble.input_shape_per_example)).astype("float32")
    loaded = tf.saved_model.load(_OUTPUT.value)
    error = float(np.abs(loaded.serve(x).numpy() - ensemble.predict(x, verbose=0)).max())
    print(f"wrote {_OUTPUT.value}: {ensemble.num_members} members, reload max |diff| = {error:.2e}")
    if error > 1e-5:
        print("error: the reloaded SavedModel does not match the in-memory ensemble", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main, flags_parser=_parse_flags)
