"""A run's saved members as SavedModels, reload checked: what `python -m tf_freetickets.export_main` runs.

The source is a training workdir (the members its manifest lists), a folder of
members or comma-separated member paths (`experiments.evaluation.members_source`).
The ensemble SavedModel (`deploy.saved_model.export_ensemble`) is written to
OUTPUT and each member's (`export_member`) to OUTPUT_members/member_<i>; the
ensemble is then reloaded with `tf.saved_model.load` and its `serve` compared
with the in-memory ensemble on random inputs.
"""

import os

import numpy as np
import tensorflow as tf

from tf_freetickets.deploy.saved_model import export_member, input_range_for_dataset
from tf_freetickets.ensembles import EnsembleModel
from tf_freetickets.experiments.evaluation import members_source
from tf_freetickets.experiments.workdir import recorded_config

#: Largest |reloaded - in-memory| probability that passes the reload check.
RELOAD_TOLERANCE = 1e-5


def load_ensemble(source):
    """The `EnsembleModel` of the members `source` names (workdir, folder of members or comma-separated paths)."""
    return EnsembleModel.from_saved_models(members_source(source))


def input_range_for(setting, source):
    """The input range the endpoints will accept: (low, high), "auto" or None for no range.

    Args:
      setting: the `--input_range` value: 'none', 'low,high' (e.g. '0,1') or
        'auto': [0, 1] for float inputs (images scaled by 1/255) unless the
        run recorded in `source` trained on imagenet2012 (mean/std-normalised:
        no range), none for integer ids (`deploy.saved_model.input_range_for_dataset`).
      source: the members' source; only a training workdir records a dataset.

    Raises:
      ValueError: `setting` is none of the above.
    """
    value = setting.strip().lower()
    if value == "none":
        return None
    if value != "auto":
        try:
            low, high = (float(v) for v in value.split(","))
        except ValueError:
            raise ValueError(f"--input_range={setting!r} must be 'auto', 'none' or 'low,high'.") from None
        return (low, high)
    dataset = recorded_config(source).get("dataset", "") if "," not in source else ""
    return input_range_for_dataset(dataset)


def write_saved_models(ensemble, output, input_range=None, members=True):
    """Writes the ensemble SavedModel to `output` and, with `members`, each member to `output`_members/member_<i>.

    Args:
      ensemble: an `EnsembleModel`.
      output: folder of the ensemble SavedModel.
      input_range: optional (low, high) every endpoint enforces (see `input_range_for`).
      members: also write each member as its own SavedModel.
    """
    ensemble.export(output, input_range=input_range)
    if members:
        for index, member in enumerate(ensemble.members):
            export_member(member, os.path.join(f"{output}_members", f"member_{index}"), input_range=input_range)


def reload_max_difference(ensemble, path, examples=8, seed=0):
    """Largest |difference| between the SavedModel at `path`'s `serve` and `ensemble.predict`.

    Args:
      ensemble: the in-memory `EnsembleModel` that was exported.
      path: its ensemble SavedModel.
      examples: random inputs in [0, 1) compared, shaped like one example of the ensemble's input.
      seed: their numpy seed.

    Returns:
      the largest absolute difference of the mean probabilities, a float.
    """
    x = np.random.default_rng(seed).random((examples, *ensemble.input_shape_per_example)).astype("float32")
    loaded = tf.saved_model.load(path)
    return float(np.abs(loaded.serve(x).numpy() - ensemble.predict(x, verbose=0)).max())
