"""Evaluation metrics of the FreeTickets / CigL / Divide-and-Co-training papers.

- calibration: accuracy, NLL, Brier score, ECE (15 equal-width bins as in FreeTickets, arXiv
  2106.14568; `num_bins=10` for CigL's), adaptive (equal-mass) ECE (Nixon et al. 2019), the Brier
  decomposition (Murphy 1973), reliability-diagram bins, and the Keras metrics
  ExpectedCalibrationError, BrierScore, NegativeLogLikelihood for model.compile(metrics=[...]).
- temperature: temperature scaling (Guo et al. 2017), fitted on validation examples by NLL.
- uncertainty: predictive entropy, expected entropy, mutual information of an ensemble, and the
  Gibbs cross-entropy (members' mean NLL).
- diversity: pairwise prediction disagreement and KL divergence between ensemble members.
- FLOPs: forward and training FLOPs live in `tf_freetickets.costs`; their names are re-exported
  here (forward_flops, training_flops, ...) so `tft.metrics.training_flops` keeps working.
- ood: OoD scores (entropy, 1 - max prob), AUROC / AUPR with OoD as the positive class and the FPR
  at 95% TPR of in-distribution examples (Hendrycks & Gimpel 2017; ODIN).

Probabilities are (N, C), labels (N,) integers in [0, C), ensemble members (M, N, C). Inputs may be
numpy arrays or tensors; scalars come back as Python floats, per-example values and matrices as
numpy arrays.
"""

from tf_freetickets.costs import (
    LayerFlops,
    TrainingFlops,
    dnc_training_flops,
    dst_ensemble_training_flops,
    edst_training_flops,
    flops_report,
    flops_table,
    forward_flops,
    gmp_members_training_flops,
    gmp_training_flops,
    inference_flops,
    layer_forward_flops,
    num_mask_updates,
    relative_to_dense,
    training_flops,
)
from tf_freetickets.metrics.calibration import (
    BrierDecomposition,
    BrierScore,
    ExpectedCalibrationError,
    NegativeLogLikelihood,
    ReliabilityBins,
    accuracy,
    adaptive_expected_calibration_error,
    brier_decomposition,
    brier_score,
    expected_calibration_error,
    negative_log_likelihood,
    reliability_diagram_bins,
)
from tf_freetickets.metrics.diversity import mean_disagreement, mean_kl, pairwise_disagreement, pairwise_kl
from tf_freetickets.metrics.ood import aupr, auroc, fpr_at_tpr, ood_detection, ood_scores
from tf_freetickets.metrics.temperature import apply_temperature, fit_temperature
from tf_freetickets.metrics.uncertainty import (
    expected_entropy,
    gibbs_cross_entropy,
    mutual_information,
    predictive_entropy,
)

__all__ = [
    "LayerFlops",
    "TrainingFlops",
    "dnc_training_flops",
    "dst_ensemble_training_flops",
    "edst_training_flops",
    "flops_report",
    "gmp_members_training_flops",
    "gmp_training_flops",
    "flops_table",
    "forward_flops",
    "inference_flops",
    "layer_forward_flops",
    "num_mask_updates",
    "relative_to_dense",
    "training_flops",
    "BrierDecomposition",
    "BrierScore",
    "ExpectedCalibrationError",
    "NegativeLogLikelihood",
    "ReliabilityBins",
    "accuracy",
    "adaptive_expected_calibration_error",
    "apply_temperature",
    "aupr",
    "auroc",
    "brier_decomposition",
    "brier_score",
    "expected_calibration_error",
    "expected_entropy",
    "fit_temperature",
    "fpr_at_tpr",
    "gibbs_cross_entropy",
    "mean_disagreement",
    "mean_kl",
    "mutual_information",
    "negative_log_likelihood",
    "ood_detection",
    "ood_scores",
    "pairwise_disagreement",
    "pairwise_kl",
    "predictive_entropy",
    "reliability_diagram_bins",
]
