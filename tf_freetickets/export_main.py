"""Export saved members as one ensemble SavedModel (and each member as its own).

  python -m tf_freetickets.export_main --source=out/edst --output=out/edst/ensemble_savedmodel

The ensemble SavedModel has the endpoints `serve` (mean probabilities),
`member_probabilities` and `uncertainty` (see tf_freetickets.export). After
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


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not _SOURCE.value or not _OUTPUT.value:
        raise app.UsageError("--source and --output are required.")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    import numpy as np
    import tensorflow as tf

    from tf_freetickets.ensembles import EnsembleModel
    from tf_freetickets.experiments.evaluation import members_source
    from tf_freetickets.export import export_member

    try:
        ensemble = EnsembleModel.from_saved_models(members_source(_SOURCE.value))
    except (FileNotFoundError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    ensemble.export(_OUTPUT.value)
    if _MEMBERS.value:
        for index, member in enumerate(ensemble.members):
            export_member(member, os.path.join(f"{_OUTPUT.value}_members", f"member_{index}"))
    x = np.random.default_rng(0).random((8, *ensemble.input_shape_per_example)).astype("float32")
    loaded = tf.saved_model.load(_OUTPUT.value)
    error = float(np.abs(loaded.serve(x).numpy() - ensemble.predict(x, verbose=0)).max())
    print(f"wrote {_OUTPUT.value}: {ensemble.num_members} members, reload max |diff| = {error:.2e}")
    if error > 1e-5:
        print("error: the reloaded SavedModel does not match the in-memory ensemble", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    app.run(main)
