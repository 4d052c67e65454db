"""Out-of-distribution (OoD) detection from predictive probabilities.

As in FreeTickets (arXiv 2106.14568; e.g. CIFAR-10 in-distribution vs SVHN out), an example gets a
score from the (ensemble) predictive distribution, OoD examples are the POSITIVE class, and
detection is summarised by AUROC and AUPR (average precision) over in- and out-of-distribution
scores, and by the FPR at 95% TPR (`fpr_at_tpr`), which takes the OoD literature's other convention
(Hendrycks & Gimpel 2017; Liang et al. 2018, ODIN): in-distribution examples are the positives
accepted by a threshold that keeps 95% of them, and the FPR is the fraction of OoD examples that
threshold also accepts (lower is better). Scores are oriented so that HIGHER means MORE LIKELY OoD:

- "entropy":  predictive entropy -sum_c p_c log p_c;
- "max_prob": 1 - max_c p_c (maximum softmax probability baseline, Hendrycks & Gimpel 2017).

scikit-learn is imported inside `auroc` / `aupr` only, so importing this module does not need it.
"""

import numpy as np
from keras import ops

from tf_freetickets.metrics.calibration import check_probs
from tf_freetickets.metrics.uncertainty import predictive_entropy

SCORES = ("entropy", "max_prob")


def ood_scores(probs, score="entropy"):
    """Per-example OoD score, higher = more likely out-of-distribution.

    Args: probs (N, C) probabilities; score "entropy" (nats) or "max_prob" (1 - max_c p_c).
    Returns: numpy array (N,).
    """
    if score not in SCORES:
        raise ValueError(f"score must be one of {SCORES}, got {score!r}.")
    if score == "entropy":
        return predictive_entropy(probs)
    probs = ops.convert_to_tensor(check_probs(probs))
    return ops.convert_to_numpy(1.0 - ops.max(probs, axis=-1))


def _labelled(in_scores, out_scores):
    """Concatenated scores and labels (0 in-distribution, 1 OoD), after checking both are 1-D, non-empty."""
    arrays = []
    for name, scores in (("in_scores", in_scores), ("out_scores", out_scores)):
        scores = np.asarray(ops.convert_to_numpy(scores), dtype=np.float64)
        if scores.ndim != 1 or scores.shape[0] < 1:
            raise ValueError(f"{name} must have shape (N,) with N >= 1, got shape {scores.shape}.")
        if not np.all(np.isfinite(scores)):
            raise ValueError(f"{name} must be finite, got {scores[~np.isfinite(scores)].tolist()}.")
        arrays.append(scores)
    labels = np.concatenate([np.zeros(arrays[0].shape[0]), np.ones(arrays[1].shape[0])])
    return np.concatenate(arrays), labels


def auroc(in_scores, out_scores):
    """Area under the ROC curve for separating OoD (positive) from in-distribution examples.

    Equals P(out score > in score) + 0.5 P(tie) over all (in, out) pairs.
    Args: in_scores (N_in,), out_scores (N_out,), higher = more likely OoD (see `ood_scores`).
    """
    from sklearn.metrics import roc_auc_score

    scores, labels = _labelled(in_scores, out_scores)
    return float(roc_auc_score(labels, scores))


def aupr(in_scores, out_scores):
    """Area under the precision-recall curve with OoD as the positive class (average precision).

    AP = sum_k (R_k - R_{k-1}) P_k over decreasing score thresholds (scikit-learn's
    average_precision_score, no interpolation).
    Args: in_scores (N_in,), out_scores (N_out,), higher = more likely OoD (see `ood_scores`).
    """
    from sklearn.metrics import average_precision_score

    scores, labels = _labelled(in_scores, out_scores)
    return float(average_precision_score(labels, scores))


def fpr_at_tpr(in_scores, out_scores, tpr=0.95):
    """False-positive rate of OoD examples at the threshold that keeps `tpr` of in-distribution examples.

    The "FPR at 95% TPR" of Hendrycks & Gimpel (2017) and Liang et al. (2018, ODIN): in-distribution
    examples are the POSITIVES (unlike `auroc`/`aupr`, where OoD is positive). An example is accepted
    as in-distribution when its score (higher = more likely OoD) is <= t, and t is the smallest
    in-distribution score with #{in <= t} >= tpr * N_in (so the TPR reached is >= tpr, the first
    point of scikit-learn's `roc_curve` at or above it). Returns #{out <= t} / N_out, in [0, 1];
    lower is better (0: the threshold rejects every OoD example).

    Args: in_scores (N_in,), out_scores (N_out,), higher = more likely OoD (see `ood_scores`);
      tpr in (0, 1], the in-distribution true-positive rate to reach (0.95 by default).
    Returns: a float.
    """
    if isinstance(tpr, bool) or not isinstance(tpr, (int, float, np.floating, np.integer)) or not 0.0 < tpr <= 1.0:
        raise ValueError(f"tpr must be a number in (0, 1], got {tpr!r}.")
    scores, labels = _labelled(in_scores, out_scores)
    inside, outside = np.sort(scores[labels == 0]), scores[labels == 1]
    # Accepted in-distribution examples needed; rounding guards 0.95 * 20 = 19.000000000000004 against a ceil of 20.
    needed = max(int(np.ceil(np.round(tpr * inside.shape[0], 9))), 1)
    threshold = inside[needed - 1]
    return float(np.mean(outside <= threshold))


def ood_detection(in_probs, out_probs, score="entropy"):
    """AUROC, AUPR and FPR at 95% TPR of detecting `out_probs` examples among `in_probs` by `ood_scores`.

    Args: in_probs (N_in, C) and out_probs (N_out, C) probabilities of the same model/ensemble.
    Returns: {"auroc": float, "aupr": float, "fpr95": float}; AUROC and AUPR take OoD as the
      positive class, "fpr95" is `fpr_at_tpr(..., 0.95)` (in-distribution positive, lower is better).
    """
    in_probs, out_probs = check_probs(in_probs, "in_probs"), check_probs(out_probs, "out_probs")
    if in_probs.shape[1] != out_probs.shape[1]:
        raise ValueError(
            f"in_probs and out_probs must have the same number of classes, got {in_probs.shape} and {out_probs.shape}."
        )
    in_scores, out_scores = ood_scores(in_probs, score), ood_scores(out_probs, score)
    return {
        "auroc": auroc(in_scores, out_scores),
        "aupr": aupr(in_scores, out_scores),
        "fpr95": fpr_at_tpr(in_scores, out_scores, 0.95),
    }
