"""The serving forms of the frontier benchmark (tools/bench_frontier.py): each exported, reloaded and checked.

A row's members (Keras models) become every form that applies: for one model its SavedModel, TFLite
file and their `tft.compact`ed versions; for an ensemble `EnsembleModel`'s SavedModel, the stacked
graph (plain and after `tft.compact`) as SavedModel and TFLite, and the grouped TFLite file; `CSRPredictor`
is tried and its refusal kept. Each form's `serve` returns the mean probability.
"""

import os


def member_paths(cell, seed, workdir, cells_by_name):
    """The member files of `cell` for study seed `seed`: its own run's, or for a composed row its source runs'.

    Returns:
      (paths, missing): model file paths in member order, and [(cell name, run seed)] of the runs
      whose files are not in `workdir` (then `paths` is empty).
    """
    from tf_freetickets.experiments.workdir import WorkdirError, manifest_members

    if cell.composed_of:
        source = cells_by_name[cell.composed_of]
        runs = [(source.name, s) for s in cell.run_seeds(seed)]
    else:
        runs = [(cell.name, seed)]
    paths, missing = [], []
    for name, run_seed in runs:
        try:
            paths += manifest_members(os.path.join(workdir, name, f"seed_{run_seed}"))
        except (WorkdirError, FileNotFoundError, OSError):
            missing.append((name, run_seed))
    return ([] if missing else paths), missing


def _folder_bytes(path):
    if os.path.isfile(path):
        return os.path.getsize(path)
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path) for f in files)


def _saved_model_serve(path, softmax):
    import tensorflow as tf

    loaded = tf.saved_model.load(path)
    if softmax:
        return lambda x: tf.nn.softmax(loaded.serve(x)).numpy()
    return lambda x: loaded.serve(x).numpy()


def _tflite_serve(path, threads, batch_shape, softmax):
    import numpy as np

    from tf_freetickets.deploy.tflite import make_interpreter

    interpreter = make_interpreter(path, num_threads=threads)
    detail = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(detail["index"], list(batch_shape))
    interpreter.allocate_tensors()
    output = interpreter.get_output_details()[0]["index"]

    def serve(x):
        interpreter.set_tensor(detail["index"], np.asarray(x, np.float32))
        interpreter.invoke()
        z = interpreter.get_tensor(output)
        if not softmax:
            return np.array(z)
        e = np.exp(z - z.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)

    return serve


def _exports(members, folder):
    """{form: (writer, kind)}; a writer saves the form under `folder` and returns its path."""
    from tf_freetickets.deploy.compact import compact
    from tf_freetickets.deploy.grouped import group_ensemble
    from tf_freetickets.deploy.saved_model import export_member
    from tf_freetickets.deploy.stacked import stack_ensemble
    from tf_freetickets.deploy.tflite import export_tflite
    from tf_freetickets.ensembles import EnsembleModel

    def at(name):
        return os.path.join(folder, name)

    def tflite(model, name):
        export_tflite(model, at(name))
        return at(name)

    if len(members) == 1:
        member = members[0]
        return {
            "SavedModel": (lambda: export_member(member, at("saved_model")), "saved_model_logits"),
            "TFLite": (lambda: tflite(member, "model.tflite"), "tflite_logits"),
            "compacted SavedModel": (lambda: export_member(compact(member)[0], at("compact")), "saved_model_logits"),
            "compacted TFLite": (lambda: tflite(compact(member)[0], "compact.tflite"), "tflite_logits"),
            "compacted (offsets) TFLite": (lambda: tflite(compact(member, padded_constants="offset")[0],
                                                          "compact_offsets.tflite"), "tflite_logits"),
        }
    return {
        "EnsembleModel": (lambda: EnsembleModel(members).export(at("ensemble")), "saved_model"),
        "stacked": (lambda: export_member(stack_ensemble(members), at("stacked")), "saved_model"),
        "compacted stacked": (
            lambda: export_member(stack_ensemble([compact(m)[0] for m in members]), at("compact_stacked")),
            "saved_model",
        ),
        "stacked TFLite": (lambda: tflite(stack_ensemble(members), "stacked.tflite"), "tflite"),
        "grouped TFLite": (lambda: tflite(group_ensemble(members), "grouped.tflite"), "tflite"),
        "compacted stacked TFLite": (
            lambda: tflite(stack_ensemble([compact(m)[0] for m in members]), "compact_stacked.tflite"),
            "tflite",
        ),
        "compacted (offsets) stacked TFLite": (
            lambda: tflite(stack_ensemble([compact(m, padded_constants="offset")[0] for m in members]),
                           "compact_offsets_stacked.tflite"),
            "tflite",
        ),
    }


def _csr_reason(members):
    """ "" when `CSRPredictor` serves these members, else its one-line refusal."""
    from tf_freetickets.deploy.csr import CSRPredictor
    from tf_freetickets.ensembles import EnsembleModel

    try:
        CSRPredictor.from_ensemble(EnsembleModel(members)) if len(members) > 1 else CSRPredictor.from_model(members[0])
    except (ValueError, TypeError) as error:
        return str(error).splitlines()[0]
    return ""


def row_forms(row, members, folder, threads, x):
    """Exports, reloads and checks each serving form of one row.

    Returns:
      (serves, forms): {form: serve function batch -> probabilities} for the forms that exported,
      and a list of dicts (form, bytes, max_abs_diff or skipped) for every form tried.
    """
    import keras
    import numpy as np

    reference = np.mean([keras.ops.convert_to_numpy(keras.ops.softmax(m(x, training=False))) for m in members], 0)
    serves, forms = {}, []
    for form, (write, kind) in _exports(members, os.path.join(folder, row)).items():
        try:
            path = write()
        except (ValueError, TypeError, NotImplementedError) as error:
            forms.append({"form": form, "skipped": str(error).splitlines()[0]})
            continue
        softmax = kind.endswith("_logits")
        if kind.startswith("tflite"):
            serve = _tflite_serve(path, threads, x.shape, softmax)
        else:
            serve = _saved_model_serve(path, softmax)
        serves[form] = serve
        forms.append({"form": form, "bytes": _folder_bytes(path),
                      "max_abs_diff": float(np.abs(serve(x) - reference).max())})  # fmt: skip
    csr = _csr_reason(members)
    forms.append({"form": "CSR", "skipped": csr or "serves this row, but is not timed here (section 6c times it)"})
    return serves, forms


def study_cells(workdir, structured_workdir):
    """{row: (Cell, the workdir of its study)} over the long_v2 and structured studies."""
    from reporting.long_study import fashion_mnist_decided_study
    from reporting.structured_study import fashion_mnist_structured_study

    cells = {c.name: (c, workdir) for c in fashion_mnist_decided_study()}
    cells.update({c.name: (c, structured_workdir) for c in fashion_mnist_structured_study()})
    return cells
