"""One evaluation of a set of members: the numbers the FreeTickets tables report.

`summarize_members` takes the members' probabilities on a test set (and
optionally on an out-of-distribution set) and returns the ensemble's accuracy,
NLL, ECE and Brier score, the members' mean and spread of each, their
diversity (prediction disagreement, KL) and OoD AUROC/AUPR/FPR@95, plus the
figures other libraries report, for comparison: the Gibbs cross-entropy
(uncertainty-baselines), CigL's 10-bin ECE, the adaptive ECE (Nixon et al.
2019) and Murphy's Brier decomposition (TFP's `brier_decomposition`).
`record_metrics` flattens an `evaluate_members` result into the flat numbers
a study record keeps.
"""

import numpy as np
from keras import ops

from tf_freetickets.metrics.calibration import (
    accuracy,
    adaptive_expected_calibration_error,
    brier_decomposition,
    brier_score,
    expected_calibration_error,
    negative_log_likelihood,
)
from tf_freetickets.metrics.diversity import mean_disagreement, mean_kl
from tf_freetickets.metrics.ood import ood_detection
from tf_freetickets.metrics.uncertainty import gibbs_cross_entropy

_SCORES = {
    "accuracy": accuracy,
    "nll": negative_log_likelihood,
    "ece": expected_calibration_error,
    "brier": brier_score,
}


def member_probabilities(members, x, from_logits=True, batch_size=512):
    """Stacks the members' probabilities on `x` (array or batched dataset of x), shape (M, N, C)."""
    stacked = []
    for member in members:
        out = member.predict(x, batch_size=batch_size, verbose=0)
        stacked.append(ops.convert_to_numpy(ops.softmax(out, axis=-1)) if from_logits else np.asarray(out))
    return np.stack(stacked)


def summarize_members(member_probs, labels, ood_member_probs=None):
    """Metrics of the mean-probability ensemble, of its members and their diversity.

    Args:
      member_probs: (M, N, C) probabilities of M members on N test examples.
      labels: (N,) integer labels.
      ood_member_probs: optional (M, N_ood, C) probabilities on OoD inputs.

    Returns:
      dict with "members" (M), ensemble metrics ("accuracy", "nll", "ece",
      "brier"), members' "member_<metric>_mean"/"_std", and with M > 1
      "disagreement" and "kl"; with OoD data "ood_auroc", "ood_aupr" and
      "ood_fpr95" (predictive entropy as the score). For comparison with other
      libraries and papers, also (`SCORING_KEYS`):
        "gibbs_nll": `gibbs_cross_entropy`, the members' mean NLL (equal to
          "member_nll_mean"; uncertainty-baselines' name for it);
        "ece_10bins": the ensemble's ECE with 10 equal-width bins (CigL's;
          "ece" keeps FreeTickets' 15);
        "adaptive_ece": `adaptive_expected_calibration_error`, 15 equal-mass bins;
        "brier_reliability", "brier_resolution", "brier_uncertainty":
          `brier_decomposition` of the ensemble (Murphy 1973).
    """
    member_probs = np.asarray(member_probs, dtype=np.float64)
    if member_probs.ndim != 3:
        raise ValueError(f"member_probs must have shape (M, N, C), got {member_probs.shape}.")
    mean = member_probs.mean(axis=0)
    result = {"members": int(member_probs.shape[0])}
    for name, score in _SCORES.items():
        result[name] = float(score(labels, mean))
        per_member = [float(score(labels, p)) for p in member_probs]
        result[f"member_{name}_mean"] = float(np.mean(per_member))
        result[f"member_{name}_std"] = float(np.std(per_member))
    result["gibbs_nll"] = gibbs_cross_entropy(labels, member_probs)
    result["ece_10bins"] = expected_calibration_error(labels, mean, num_bins=10)
    result["adaptive_ece"] = adaptive_expected_calibration_error(labels, mean, num_bins=15)
    terms = brier_decomposition(labels, mean)
    result["brier_reliability"], result["brier_resolution"] = terms.reliability, terms.resolution
    result["brier_uncertainty"] = terms.uncertainty
    if member_probs.shape[0] > 1:
        result["disagreement"] = float(mean_disagreement(member_probs))
        result["kl"] = float(mean_kl(member_probs))
    if ood_member_probs is not None:
        ood = ood_detection(mean, np.asarray(ood_member_probs, dtype=np.float64).mean(axis=0), score="entropy")
        result["ood_auroc"], result["ood_aupr"] = float(ood["auroc"]), float(ood["aupr"])
        result["ood_fpr95"] = float(ood["fpr95"])
    return result


#: Keys `summarize_members` adds for comparison with uncertainty-baselines, TFP and CigL.
SCORING_KEYS = ("gibbs_nll", "ece_10bins", "adaptive_ece", "brier_reliability", "brier_resolution", "brier_uncertainty")

#: Keys `evaluate_members` adds when given validation examples (temperature scaling).
TEMPERATURE_KEYS = ("temperature", "ts_nll", "ts_ece", "ts_brier")


def record_metrics(evaluation, corrupted=None):
    """The flat numbers of an `evaluate_members` result that a study record keeps beside its other figures.

    Args:
      evaluation: `evaluate_members` on the test set (with OoD sets, and
        validation examples for temperature scaling, where given).
      corrupted: optional `evaluate_members` result with corruptions (the
        study evaluates the corrupted test images in a separate call).

    Returns:
      dict of floats: the `SCORING_KEYS` and `TEMPERATURE_KEYS` present in
      `evaluation`; with OoD sets "ood_fpr95" (mean over sets) and per set
      "ood_fpr95_<name>" and "ood_aupr_<name>"; with corruptions
      "corruption_ece" (mean 15-bin ECE over corruptions and severities).
    """
    out = {k: float(evaluation[k]) for k in (*SCORING_KEYS, *TEMPERATURE_KEYS) if k in evaluation}
    if evaluation.get("ood"):
        out["ood_fpr95"] = float(evaluation["ood_fpr95"])
        for name, cell in evaluation["ood"].items():
            out[f"ood_fpr95_{name}"] = float(cell["fpr95"])
            out[f"ood_aupr_{name}"] = float(cell["aupr"])
    if corrupted is not None and "corruption_ece" in corrupted:
        out["corruption_ece"] = float(corrupted["corruption_ece"])
    return out


_COLUMNS = [
    ("accuracy", "acc", "{:.4f}"),
    ("nll", "NLL", "{:.4f}"),
    ("ece", "ECE", "{:.4f}"),
    ("brier", "Brier", "{:.4f}"),
    ("disagreement", "disagr", "{:.4f}"),
    ("kl", "KL", "{:.4f}"),
    ("ood_auroc", "OoD AUROC", "{:.4f}"),
    ("ood_fpr95", "FPR@95", "{:.4f}"),
    ("corruption_accuracy", "corr acc", "{:.4f}"),
]


def format_table(rows):
    """Renders {run name: summarize_members(...) dict} as an aligned text table.

    Columns absent from every row are left out; a missing cell prints "-".
    """
    columns = [c for c in _COLUMNS if any(c[0] in row for row in rows.values())]
    width = max([len("run")] + [len(name) for name in rows])
    lines = [f"{'run':<{width}}  {'M':>2}  " + "  ".join(f"{title:>9}" for _, title, _ in columns)]
    for name, row in rows.items():
        cells = [fmt.format(row[key]) if key in row else "-" for key, _, fmt in columns]
        lines.append(f"{name:<{width}}  {row.get('members', 1):>2}  " + "  ".join(f"{cell:>9}" for cell in cells))
    return "\n".join(lines)
