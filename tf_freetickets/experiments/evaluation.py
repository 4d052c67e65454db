"""Full evaluation of trained members: test metrics, OoD detection, corruption robustness.

The measurements FreeTickets reports (its Tables 2-4 and Fig. 4): accuracy,
NLL, ECE and Brier of the mean-probability ensemble, its members' spread and
diversity, OoD AUROC/AUPR with predictive entropy as the score, and accuracy
under CIFAR-10-C-style corruptions averaged over corruptions and severities.
Beside them, for comparison with other papers and libraries: the figures of
`summarize_members` (Gibbs NLL, 10-bin and adaptive ECE, Brier decomposition),
the OoD FPR at 95% TPR, the ECE under corruption and, given validation
examples, the temperature-scaled NLL/ECE/Brier (Guo et al. 2017).
"""

import os

import numpy as np

from tf_freetickets.experiments.workdir import is_run_workdir, manifest_members
from tf_freetickets.metrics.calibration import (
    accuracy,
    brier_score,
    expected_calibration_error,
    negative_log_likelihood,
    reliability_diagram_bins,
)
from tf_freetickets.metrics.ood import ood_detection
from tf_freetickets.metrics.summary import member_probabilities, summarize_members
from tf_freetickets.metrics.temperature import apply_temperature, fit_temperature


def members_source(source):
    """What `EnsembleModel.from_saved_models` should load for a user's `source`.

    A training workdir of this library gives exactly the member files its
    run wrote (`members/manifest.json`, checked for size and SHA-256); a
    comma-separated string gives a list of paths; a folder without a run
    record gives its members/ sub-folder if it has one, else itself.

    Raises:
      WorkdirError: a workdir whose run has not finished (no manifest) or
        whose member files were changed or damaged.
    """
    if "," in source:
        return [p for p in source.split(",") if p]
    if is_run_workdir(source):
        return manifest_members(source)
    members = os.path.join(source, "members")
    return members if os.path.isdir(members) else source


def _normalised(images):
    return np.asarray(images, np.float32) / 255.0


def _quiet(message):
    del message


def evaluate_members(
    members,
    x_test,
    y_test,
    ood_sets=None,
    corruptions=None,
    severities=(1, 2, 3, 4, 5),
    batch_size=512,
    progress=None,
    validation=None,
):
    """Evaluates members (and their mean-probability ensemble) on in-distribution, OoD and corrupted data.

    Args:
      members: Keras models returning logits, with the same input spec.
      x_test: uint8 images (N, H, W, C); y_test: int labels (N,).
      ood_sets: optional dict name -> uint8 images of the same (H, W, C),
        e.g. `data.ood.ood_sets()`.
      corruptions: optional list of corruption names from
        `data.corruptions.available_corruptions(channels)`, applied to `x_test`
        at `severities` (seed 0: the severities scale the same noise draw).
      batch_size: prediction batch size.
      progress: optional fn(str) told before each set is predicted (the
        evaluate binary prints these lines with their elapsed time).
      validation: optional (x_val, y_val), uint8 images and int labels held
        out from training (config.validation_examples > 0): a temperature
        is fitted on the ensemble's validation probabilities by NLL
        (`fit_temperature`) and applied to its test probabilities.

    Returns:
      dict: the `summarize_members` figures, "reliability" (the ensemble's
      15-bin `reliability_diagram_bins` as lists "counts", "confidence",
      "accuracy"), plus "ood": {set: {auroc, aupr, fpr95}} and "ood_auroc",
      "ood_aupr", "ood_fpr95" (means over the sets given), plus "corruption":
      {name: {severity: {accuracy, nll, ece}}}, "corruption_accuracy" and
      "corruption_ece" (means over all corruptions and severities; 15-bin
      ECE), plus with `validation` "temperature", "ts_nll", "ts_ece" and
      "ts_brier" (the ensemble's test NLL, 15-bin ECE and Brier score after
      temperature scaling; its accuracy is unchanged).
    """
    say = progress or _quiet
    say(f"test images: {len(x_test)} x {len(members)} members")
    probs = member_probabilities(members, _normalised(x_test), batch_size=batch_size)
    result = summarize_members(probs, y_test)
    ensemble = probs.mean(axis=0)
    result["reliability"] = {k: v.tolist() for k, v in reliability_diagram_bins(y_test, ensemble)._asdict().items()}

    def mean_probabilities(images):
        return member_probabilities(members, _normalised(images), batch_size=batch_size).mean(axis=0)

    if validation is not None:
        say(f"validation images: {len(validation[0])} (temperature scaling)")
        result.update(_temperature_scaled(ensemble, y_test, mean_probabilities(validation[0]), validation[1]))
    if ood_sets:
        result["ood"] = {}
        for name, images in ood_sets.items():
            say(f"OoD set {name}: {len(images)} images")
            detection = ood_detection(ensemble, mean_probabilities(images), score="entropy")
            result["ood"][name] = {k: float(v) for k, v in detection.items()}
        for key in ("auroc", "aupr", "fpr95"):
            result[f"ood_{key}"] = float(np.mean([v[key] for v in result["ood"].values()]))
    if corruptions:
        result.update(_corruption_results(mean_probabilities, x_test, y_test, corruptions, severities, say))
    return result


def _temperature_scaled(ensemble, y_test, val_probs, y_val):
    """Temperature fitted on the validation probabilities, and the test NLL / ECE / Brier after it."""
    temperature = fit_temperature(y_val, val_probs)
    scaled = apply_temperature(ensemble, temperature)
    return {
        "temperature": temperature,
        "ts_nll": negative_log_likelihood(y_test, scaled),
        "ts_ece": expected_calibration_error(y_test, scaled),
        "ts_brier": brier_score(y_test, scaled),
    }


def _corruption_results(mean_probabilities, x_test, y_test, corruptions, severities, say):
    """Accuracy, NLL and ECE per corruption and severity, and their means over all cells."""
    from tf_freetickets.data.corruptions import corrupt

    table, accuracies, eces = {}, [], []
    for number, name in enumerate(corruptions, start=1):
        say(f"corruption {number}/{len(corruptions)} {name}: {len(x_test)} images x {len(severities)} severities")
        # One prediction pass per corruption over all its severities: far fewer predict calls.
        means = mean_probabilities(np.concatenate([corrupt(x_test, name, severity, seed=0) for severity in severities]))
        table[name] = {}
        for severity, mean in zip(severities, np.split(means, len(severities))):
            cell = {
                "accuracy": float(accuracy(y_test, mean)),
                "nll": float(negative_log_likelihood(y_test, mean)),
                "ece": float(expected_calibration_error(y_test, mean)),
            }
            table[name][str(severity)] = cell
            accuracies.append(cell["accuracy"])
            eces.append(cell["ece"])
    return {"corruption": table, "corruption_accuracy": float(np.mean(accuracies)), "corruption_ece": float(np.mean(eces))}


def corruption_table(result):
    """Markdown table of ensemble accuracy per corruption (rows) and severity (columns)."""
    corruption = result.get("corruption")
    if not corruption:
        return ""
    severities = list(next(iter(corruption.values())))
    lines = ["| corruption | " + " | ".join(f"s{s}" for s in severities) + " |", "|---|" + "---|" * len(severities)]
    for name, cells in corruption.items():
        lines.append(f"| {name} | " + " | ".join(f"{cells[s]['accuracy']:.4f}" for s in severities) + " |")
    return "\n".join(lines)
