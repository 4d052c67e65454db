"""Evaluate saved members (a training workdir, a folder of members, or paths).

  python -m tf_freetickets.evaluate --source=out/edst [--output=out/edst/evaluation.json]
      [--ood=True] [--corruptions=all|none|gaussian_noise,contrast] [--corruption_examples=2000]
      [--per_member=False]

Prints the evaluation table (accuracy, NLL, ECE, Brier, disagreement, KL, OoD
AUROC, corruption accuracy) and the per-corruption accuracies, and writes
every figure to a JSON file. With --per_member, each member is also
evaluated alone on the clean test set (one row each, "member_results" in the
JSON): whether an ensemble's gain comes from diverse members or from one weak
member (an EDST ticket after a global exploration) shows there. The test set is the one the run trained for: the
dataset of <source>/results.json when the source is a training workdir, else
--dataset. OoD sets: `data.ood.ood_sets_for` (Fashion-MNIST: digits and noise;
CIFAR/SVHN: noise plus SVHN / the other CIFAR when prepared for tfds).
Corruptions are the project's CIFAR-10-C-style ones at 5 severities. A line
with the elapsed time is printed before each set. Only the members a
training workdir's run wrote are read (its members/manifest.json), also
when --source names the workdir's members/ folder; an unfinished run, a
damaged member, missing data or members, and an --output that is a folder or
cannot be written (checked before the evaluation starts) end with one error
line and exit code 2.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before TensorFlow loads: hide its C++ INFO/WARNING lines

from absl import app, flags, logging

_SOURCE = flags.DEFINE_string("source", None, "Training workdir, folder of members, or comma-separated member paths.")
_OUTPUT = flags.DEFINE_string("output", None, "JSON file to write (default: <source>/evaluation.json).")
_DATASET = flags.DEFINE_string("dataset", "", "Test dataset (default: the source run's, else fashion_mnist).")
_DATA_DIR = flags.DEFINE_string("data_dir", "", "Data folder (default: the source run's, else each dataset's default).")
_OOD = flags.DEFINE_bool("ood", True, "Evaluate OoD detection on the offline OoD sets.")
_OOD_EXAMPLES = flags.DEFINE_integer("ood_examples", 2000, "Examples per OoD set.")
_CORRUPTIONS = flags.DEFINE_string("corruptions", "all", "all, none, or a comma-separated list of corruption names.")
_CORRUPTION_EXAMPLES = flags.DEFINE_integer("corruption_examples", 2000, "Test examples corrupted (0 = all).")
_PER_MEMBER = flags.DEFINE_bool("per_member", False, "Also evaluate each member alone on the clean test set.")
_NAME = flags.DEFINE_string("name", None, "Row name in the table (default: the source folder's name).")


def _dataset_of(source):
    """(dataset, data_dir) to test on: the flags, else the training run's recorded config, else Fashion-MNIST."""
    from tf_freetickets.deploy.run_export import recorded_config_of

    config = recorded_config_of(source)
    dataset = _DATASET.value or config.get("dataset") or "fashion_mnist"
    return dataset, (_DATA_DIR.value or config.get("data_dir") or None)


def _output_path():
    """The JSON file to write: --output, else <source>/evaluation.json (./evaluation.json for a list of paths)."""
    if _OUTPUT.value:
        return _OUTPUT.value
    return os.path.join(_SOURCE.value if "," not in _SOURCE.value else ".", "evaluation.json")


def _parse_flags(argv):
    from tf_freetickets.experiments.cli import parse_flags

    return parse_flags(argv)


def main(argv):
    """absl entry point: evaluates the members of `--source` and writes the JSON (see the module docstring).

    Args:
      argv: the arguments left after absl parsed the flags (only the program name).
    """
    if len(argv) > 1:
        raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
    if not _SOURCE.value:
        raise app.UsageError("--source is required.")
    if not flags.FLAGS["verbosity"].present:
        logging.set_verbosity(logging.WARNING)
    import time

    from tf_freetickets import data
    from tf_freetickets.deploy.run_export import check_output_file, members_source_of
    from tf_freetickets.ensembles import EnsembleModel
    from tf_freetickets.experiments.cli import fail, user_errors
    from tf_freetickets.experiments.evaluation import corruption_table, evaluate_members
    from tf_freetickets.metrics.summary import format_table

    start = time.time()

    def progress(message):
        print(f"[{time.time() - start:6.1f}s] {message}", flush=True)

    output = _output_path()
    try:
        # Before any work: an output that cannot be written would lose the whole evaluation at the end.
        check_output_file(output, label=None if _OUTPUT.value else f"the evaluation JSON {output} (default --output)")
        sources = members_source_of(_SOURCE.value)
        members = EnsembleModel.from_saved_models(sources).members
        progress(f"loaded {len(members)} members from {_SOURCE.value}")
        dataset, data_dir = _dataset_of(_SOURCE.value)
        x_test, y_test = data.load_split(dataset, "test", data_dir)
        ood_sets = None
        if _OOD.value:
            from tf_freetickets.data.ood import ood_sets_for

            ood_sets = ood_sets_for(dataset, num=_OOD_EXAMPLES.value, data_dir=data_dir)
        corruptions = None
        if _CORRUPTIONS.value != "none":
            from tf_freetickets.data.corruptions import available_corruptions

            known = list(available_corruptions(x_test.shape[-1]))
            corruptions = known if _CORRUPTIONS.value == "all" else _CORRUPTIONS.value.split(",")
            unknown = sorted(set(corruptions) - set(known))
            if unknown:
                raise ValueError(f"Unknown corruptions {unknown} for {x_test.shape[-1]}-channel images; known: {known}.")
        result = evaluate_members(members, x_test, y_test, ood_sets=ood_sets, progress=progress)
        if corruptions:
            count = _CORRUPTION_EXAMPLES.value or len(x_test)
            corrupted = evaluate_members(members, x_test[:count], y_test[:count], corruptions=corruptions, progress=progress)
            result["corruption"] = corrupted["corruption"]
            result["corruption_accuracy"] = corrupted["corruption_accuracy"]
            result["corruption_examples"] = count
        member_results = []
        if _PER_MEMBER.value and len(members) > 1:
            for i, member in enumerate(members):
                progress(f"member {i + 1}/{len(members)} alone")
                member_results.append(evaluate_members([member], x_test, y_test))
    except (FileNotFoundError, ValueError, *user_errors()) as error:
        fail(error)

    name = _NAME.value or os.path.basename(os.path.normpath(_SOURCE.value.split(",")[0]))
    rows = {name: result, **{f"{name} member {i + 1}": r for i, r in enumerate(member_results)}}
    print(format_table(rows))
    if "corruption" in result:
        print(corruption_table(result))
    saved = {"name": name, "source": _SOURCE.value, "results": result}
    if member_results:
        saved["member_results"] = member_results
    try:
        os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
        with open(output, "w") as f:
            json.dump(saved, f, indent=2)
    except OSError as error:  # e.g. the disk filled up during the evaluation
        fail(f"--output={output} cannot be written ({error.strerror}); the table above holds the figures.")
    print(f"wrote {output}")


def console_main():
    """Entry point of the `tft-evaluate` console script (and of `python -m tf_freetickets.evaluate`): absl runs `main`."""
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    console_main()
