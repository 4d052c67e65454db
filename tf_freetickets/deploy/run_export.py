"""A run's saved members as SavedModels, reload checked: what `python -m tf_freetickets.export_main` runs.

The source is a training workdir (the members its manifest lists), a folder of
members or comma-separated member paths (`experiments.evaluation.members_source`).
The ensemble SavedModel (`deploy.saved_model.export_ensemble`) is written to
OUTPUT and each member's (`export_member`) to OUTPUT_members/member_<i>; the
ensemble is then reloaded with `tf.saved_model.load` and its `serve` compared
with the in-memory ensemble on random inputs.

Both binaries (export_main and evaluate) read their source and check where
they will write with the functions here: a training workdir's members/
folder is read through the workdir's manifest (`members_source_of`), and an
output that is a file where a folder is needed (or the reverse), or that
cannot be written, is refused before any work (`check_output_folder`,
`check_output_file`), each in one line (`OutputError`).
"""

import os

import numpy as np
import tensorflow as tf

from tf_freetickets.deploy.saved_model import export_member, input_range_for_dataset
from tf_freetickets.ensembles import EnsembleModel
from tf_freetickets.experiments.evaluation import members_source
from tf_freetickets.experiments.workdir import is_run_workdir, manifest_members, recorded_config

#: Largest |reloaded - in-memory| probability that passes the reload check.
RELOAD_TOLERANCE = 1e-5


class OutputError(ValueError):
    """The output path cannot take what a binary writes; the message names the path and what is needed."""


def run_workdir_of(source):
    """The training workdir `source` names: the workdir itself or its members/ folder; None for anything else."""
    if "," in source:
        return None
    folder = os.path.normpath(source)
    if is_run_workdir(folder):
        return folder
    parent = os.path.dirname(folder)
    return parent if os.path.basename(folder) == "members" and is_run_workdir(parent) else None


def members_source_of(source):
    """What `EnsembleModel.from_saved_models` should load for `source` (`experiments.evaluation.members_source`),
    a training workdir's members/ folder included: read through the workdir's manifest, never a glob of it.

    Raises:
      WorkdirError: the workdir's run has not finished (no manifest: a run
        killed between two members would be scored as a smaller ensemble), or
        a member file was changed or damaged.
    """
    workdir = run_workdir_of(source)
    return manifest_members(workdir) if workdir else members_source(source)


def recorded_config_of(source):
    """The config the run of `source` recorded (`workdir.recorded_config`; a workdir's members/ folder gives its
    workdir's); {} for a list of paths."""
    workdir = run_workdir_of(source)
    return recorded_config(workdir or source) if "," not in source else {}


def load_ensemble(source):
    """The `EnsembleModel` of the members `source` names (workdir, folder of members or comma-separated paths)."""
    return EnsembleModel.from_saved_models(members_source_of(source))


def _open_problem(path, mode):
    """Why `path` cannot be opened with `mode`, or None. A real open, so root and read-only mounts are
    judged right (permission bits alone are not)."""
    try:
        with open(path, mode):
            return None
    except OSError as error:
        return error.strerror or type(error).__name__


def _write_problem(folder):
    """Why a file cannot be created in `folder` (an existing folder), or None."""
    probe = os.path.join(folder, f".tft_write_test.{os.getpid()}")
    problem = _open_problem(probe, "w")
    if problem is None:
        os.remove(probe)
    return problem


def _existing_ancestor(path):
    """(the nearest existing folder above `path`, None), or (None, the file that stands where a folder should)."""
    folder = os.path.dirname(os.path.abspath(path))
    while not os.path.isdir(folder):
        if os.path.exists(folder):
            return None, folder
        folder = os.path.dirname(folder)
    return folder, None


def _check_writable(path, label, needed):
    folder, blocking = _existing_ancestor(path)
    if blocking:
        raise OutputError(f"{label} cannot be created: {blocking} is a file; {needed}.")
    where = path if os.path.isdir(path) else folder
    problem = _write_problem(where)
    if problem:
        raise OutputError(f"{label} cannot be written ({where}: {problem}); {needed}.")


def members_folder(output):
    """Where the members' SavedModels go beside `output`.

    Args:
      output: the export's --output (a SavedModel folder or a .tflite file).

    Returns:
      `output`_members, or `x`_members for `x.tflite`.
    """
    root, extension = os.path.splitext(os.path.normpath(output))
    return f"{root if extension == '.tflite' else os.path.normpath(output)}_members"


def check_output_folder(output, members=True):
    """Refuses, in one line, an export `--output` that cannot become the SavedModel folder.

    Args:
      output: the ensemble SavedModel's folder (new, or an existing folder).
      members: the members will be written beside it, in `output`_members/.

    Raises:
      OutputError: `output` (or `output`_members) is a file, lies under a
        file, or its folder cannot be written (read-only).
    """
    needed = "pass --output=<a folder path in a writable place>"
    for path in [output, members_folder(output)] if members else [output]:
        if os.path.exists(path) and not os.path.isdir(path):
            raise OutputError(f"--output={output}: {path} is a file, and a SavedModel is a folder; {needed}.")
        _check_writable(path, f"--output={output}", needed)


def check_output_file(output, label=None, kind="JSON", example_name="evaluation.json"):
    """Refuses, in one line, an output file path that is a folder or cannot be written.

    Args:
      output: the file to be written.
      label: how the message names it (default: `--output=<output>`).
      kind, example_name: what the file is ("JSON", "TFLite") and a file name
        the message suggests inside a folder given by mistake.

    Raises:
      OutputError: `output` is a folder, lies under a file, or its folder (or
        the file itself) cannot be written.
    """
    label = label or f"--output={output}"
    needed = f"pass --output=<a {kind} file path in a writable place>"
    if os.path.isdir(output):
        raise OutputError(f"{label} is a folder; {needed} (e.g. {os.path.join(output, example_name)}).")
    _check_writable(output, label, needed)
    problem = _open_problem(output, "a") if os.path.exists(output) else None  # "a": the content stays
    if problem:
        raise OutputError(f"{label} cannot be written ({output}: {problem}); {needed}.")


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
    return input_range_for_dataset(recorded_config_of(source).get("dataset", ""))


def write_saved_models(ensemble, output, input_range=None, members=True, ensemble_model=True):
    """Writes the ensemble SavedModel to `output` and, with `members`, each member to `output`_members/member_<i>.

    Args:
      ensemble: an `EnsembleModel`.
      output: folder of the ensemble SavedModel (or the path `export_fastest` wrote).
      input_range: optional (low, high) every endpoint enforces (see `input_range_for`).
      members: also write each member as its own SavedModel.
      ensemble_model: write the ensemble SavedModel (False: `output` holds another form already).
    """
    if ensemble_model:
        ensemble.export(output, input_range=input_range)
    if members:
        for index, member in enumerate(ensemble.members):
            export_member(member, os.path.join(members_folder(output), f"member_{index}"), input_range=input_range)


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
    x = _random_examples(ensemble, examples, seed)
    loaded = tf.saved_model.load(path)
    return float(np.abs(loaded.serve(x).numpy() - ensemble.predict(x, verbose=0)).max())


def serving_example(ensemble, batch):
    """The batch `export_fastest` times the forms on: `batch` random images in [0, 1) (zeros for integer inputs)."""
    shape = (batch, *ensemble.input_shape_per_example)
    if np.issubdtype(np.dtype(ensemble.member_input_dtype), np.floating):
        return np.random.default_rng(0).random(shape).astype("float32")
    return np.zeros(shape, ensemble.member_input_dtype)


def served_max_difference(ensemble, path, runtime, examples=8, seed=0):
    """Largest |difference| between what the file or folder `export_fastest` wrote serves and `ensemble.predict`.

    Args:
      ensemble: the in-memory `EnsembleModel`.
      path: the SavedModel folder (runtime "saved_model", its `serve`) or the .tflite file ("tflite").
      runtime: "saved_model" or "tflite".
      examples, seed: as for `reload_max_difference`.
    """
    if runtime == "saved_model":
        return reload_max_difference(ensemble, path, examples, seed)
    from tf_freetickets.deploy.tflite import tflite_predict

    x = _random_examples(ensemble, examples, seed)
    return float(np.abs(tflite_predict(path, x) - ensemble.predict(x, verbose=0)).max())


def _random_examples(ensemble, examples, seed):
    """`examples` float32 inputs in [0, 1), shaped like one example of the ensemble's input, from numpy seed `seed`."""
    return np.random.default_rng(seed).random((examples, *ensemble.input_shape_per_example)).astype("float32")
