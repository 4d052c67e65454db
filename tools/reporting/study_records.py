"""A study run's record: the flat figures the tables read, a composed ensemble's run-level figures, fit measures.

Used by `study_runner.StudyRunner` for every (cell, seed) it evaluates.
"""

import numpy as np

from tf_freetickets.metrics.summary import record_metrics

_SUMMARY_KEYS = (
    "accuracy", "nll", "ece", "brier", "disagreement", "kl", "sparsity", "members", "member_accuracy_mean",
    "member_ece_mean", "training_flops", "inference_flops", "dense_inference_flops",
)  # fmt: skip


def flatten_results(results, evaluation, corrupted):
    """The per-run figures the tables read, one flat dict of numbers.

    Args:
      results: the dict `experiments.runner.run` returns (or a composed
        ensemble's equivalent).
      evaluation: `evaluate_members` on the test set with OoD sets.
      corrupted: `evaluate_members` on the corrupted test images.
    """
    record = {k: results[k] for k in _SUMMARY_KEYS if k in results}
    overlaps = results.get("ticket_mask_overlap")
    if overlaps is not None and len(overlaps) > 1:
        matrix = np.asarray(overlaps, dtype=np.float64)
        record["ticket_overlap"] = float(matrix[~np.eye(len(matrix), dtype=bool)].mean())
    record["ood_auroc"], record["ood_aupr"] = evaluation["ood_auroc"], evaluation["ood_aupr"]
    for name, cell in evaluation["ood"].items():
        record[f"ood_auroc_{name}"] = cell["auroc"]
    record["corruption_accuracy"] = corrupted["corruption_accuracy"]
    by_severity = {}
    for name, cells in corrupted["corruption"].items():
        accuracies = [cell["accuracy"] for cell in cells.values()]
        record[f"corruption_{name}"] = sum(accuracies) / len(accuracies)
        for severity, cell in cells.items():
            by_severity.setdefault(severity, []).append(cell["accuracy"])
    for severity, accuracies in by_severity.items():
        record[f"corruption_s{severity}"] = sum(accuracies) / len(accuracies)
    # FPR@95, Gibbs NLL, adaptive and 10-bin ECE, the Brier decomposition, corruption ECE and, where a
    # validation split was given, temperature scaling (`metrics.summary.record_metrics`).
    record.update(record_metrics(evaluation, corrupted))
    return record


def validation_split(config):
    """The (images, labels) the run held out (config.validation_examples), or None: temperature scaling fits on it."""
    if not config.validation_examples:
        return None
    from tf_freetickets.experiments.data_sources import data_source

    source = data_source(config)
    return source.x_val, source.y_val


def composed_results(parts, paths):
    """A composed ensemble's run-level figures: FLOPs summed over its member runs, mask overlap of sparse members."""
    import keras

    from tf_freetickets.sparse.layers import masked_layers
    from tf_freetickets.sparse.report import mask_overlap

    results = {
        "training_flops": sum(p["metrics"]["training_flops"] for p in parts),
        "inference_flops": sum(p["metrics"]["inference_flops"] for p in parts),
    }
    for key in ("sparsity", "dense_inference_flops"):
        if key in parts[0]["metrics"]:
            results[key] = parts[0]["metrics"][key]
    keras_files = [p for p in paths if str(p).endswith(".keras")]
    if "sparsity" in results and len(keras_files) == len(paths) > 1:
        # Keyed by position: runs built in one process may carry different layer names.
        masks = [{i: layer.kernel_mask.numpy() for i, layer in enumerate(masked_layers(keras.models.load_model(p)))}
                 for p in keras_files]  # fmt: skip
        if all(masks):
            results["ticket_mask_overlap"] = [[1.0 if i == j else mask_overlap(a, b) for j, b in enumerate(masks)]
                                              for i, a in enumerate(masks)]  # fmt: skip
    return results


def fit_measures(members, config):
    """Ensemble accuracy / NLL / ECE on the clean training subset and, if held out, the validation examples."""
    from tf_freetickets.experiments.data_sources import data_source
    from tf_freetickets.metrics.summary import member_probabilities, summarize_members

    source = data_source(config)
    splits = {"train": (source.x_train, source.y_train)}
    if source.x_val is not None:
        splits["val"] = (source.x_val, source.y_val)
    out = {}
    for prefix, (images, labels) in splits.items():
        probs = member_probabilities(members, np.asarray(images, np.float32) / 255.0)
        summary = summarize_members(probs, labels)
        for key in ("accuracy", "nll", "ece"):
            out[f"{prefix}_{key}"] = summary[key]
    return out


def structure_measures(members):
    """How much of the members' structure is gone: dead output units and what `tft.compact` keeps.

    A unit (a Dense output or a convolution's output channel) is dead when
    its whole mask column is zero. `compact` then removes it physically.

    Args:
      members: Keras models; only masked (sparse) members are measured.

    Returns:
      {} for dense members; else the mean over members of
      "removed_unit_fraction" (dead units / units of the masked layers) and
      "compact_param_fraction" (parameters of `tft.compact(member)` / of the
      member): the structured-DST rows' physical saving.
    """
    from tf_freetickets.deploy.compact import compact
    from tf_freetickets.sparse.layers import masked_layers

    removed, kept = [], []
    for member in members:
        layers = masked_layers(member)
        if not layers:
            return {}
        masks = [np.asarray(layer.kernel_mask).reshape(-1, np.asarray(layer.kernel_mask).shape[-1]) for layer in layers]
        units = sum(m.shape[1] for m in masks)
        removed.append(sum(int((~m.any(axis=0)).sum()) for m in masks) / units)
        _, report = compact(member)
        kept.append(report.params_after / report.params_before)
    return {"removed_unit_fraction": float(np.mean(removed)), "compact_param_fraction": float(np.mean(kept))}


def run_timing(results, elapsed_seconds):
    """A trained run's time for its record: the run's own training clock, resumes included.

    Args:
      results: `experiments.runner.run`'s results; "train_seconds",
        "train_cpu_seconds" and "untimed_epochs" are its `TrainingClock`
        totals (absent in results of versions before the clock).
      elapsed_seconds: wall time of the `run` call (training and its test
        evaluation), the fallback for results without the clock.

    Returns:
      {"train_seconds", "train_cpu_seconds", "untimed_epochs"}; without the
      clock, the elapsed seconds and no CPU figure.
    """
    if "train_seconds" not in results:
        return {"train_seconds": elapsed_seconds}
    return {key: results[key] for key in ("train_seconds", "train_cpu_seconds", "untimed_epochs")}


def composed_timing(parts):
    """A composed ensemble's time: the sums over its source runs' records.

    Args:
      parts: the source runs' records (each with "train_seconds", maybe
        "train_cpu_seconds" and "untimed_epochs").

    Returns:
      {"train_seconds", "untimed_epochs"} summed, and "train_cpu_seconds"
      summed when every part has it.
    """
    timing = {
        "train_seconds": sum(p["train_seconds"] for p in parts),
        "untimed_epochs": sum(p.get("untimed_epochs", 0) for p in parts),
    }
    if all("train_cpu_seconds" in p for p in parts):
        timing["train_cpu_seconds"] = sum(p["train_cpu_seconds"] for p in parts)
    return timing
