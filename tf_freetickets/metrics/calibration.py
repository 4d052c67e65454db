"""Accuracy, NLL, Brier score and expected calibration error (ECE), as functions and Keras metrics.

Conventions (FreeTickets, Liu et al. ICLR 2022, arXiv 2106.14568; CigL, arXiv 2302.09369):

- The prediction is the argmax of the probabilities (ties go to the lowest class index) and the
  confidence is the largest probability.
- ECE uses `num_bins=15` equal-width bins over [0, 1]. Bin b covers (b/B, (b+1)/B]; a confidence of
  exactly 0 goes into the first bin. ECE = sum_b (n_b / N) * |acc_b - conf_b|, which equals
  sum_b |correct_b - confsum_b| / N, so per-bin counts, confidence sums and correct sums are
  sufficient statistics and batches can be accumulated exactly.
- Brier score = mean over examples of sum over classes of (p_c - onehot_c)^2, in [0, 2] (the
  multi-class form of Brier 1950; not divided by the number of classes).
- NLL = mean over examples of -log(max(p_true, eps)).
- Adaptive ECE (`adaptive_expected_calibration_error`): the same gap with equal-mass bins (Nixon et
  al. 2019); `brier_decomposition`: Murphy's (1973) reliability, resolution and uncertainty.

Numerics run in keras.ops in float64. Functions accept numpy arrays or tensors and return floats.
They take Keras' argument order, `(y_true, y_pred)`: integer labels first, probabilities second.
"""

from typing import NamedTuple

import keras
import numpy as np
from keras import ops


def check_probs(probs, name="probs"):
    """Returns `probs` as a float64 numpy array of shape (N, C), N >= 1, C >= 1, or raises ValueError."""
    probs = np.asarray(ops.convert_to_numpy(probs))
    if probs.ndim != 2 or probs.shape[0] < 1 or probs.shape[1] < 1:
        raise ValueError(f"{name} must have shape (N, C) with N, C >= 1, got shape {probs.shape}.")
    if not np.issubdtype(probs.dtype, np.number) or np.issubdtype(probs.dtype, np.complexfloating):
        raise ValueError(f"{name} must be real numbers, got dtype {probs.dtype}.")
    return probs.astype(np.float64)


def check_labels(labels, num_examples, num_classes, name="labels"):
    """Returns integer `labels` of shape (num_examples,) with values in [0, num_classes), or raises ValueError."""
    labels = np.asarray(ops.convert_to_numpy(labels))
    if labels.shape != (num_examples,):
        raise ValueError(f"{name} must have shape ({num_examples},) to match probs, got shape {labels.shape}.")
    if np.issubdtype(labels.dtype, np.floating):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise ValueError(
                f"{name} must be integer class indices, got non-integer values {labels[labels != np.round(labels)]}."
            )
    elif not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{name} must be integer class indices, got dtype {labels.dtype}.")
    bad = labels[(labels < 0) | (labels >= num_classes)]
    if bad.size:
        raise ValueError(f"{name} must be in [0, {num_classes}), got {bad.tolist()}.")
    return labels.astype(np.int64)


def _inputs(y_true, y_pred):
    """(probs, labels) tensors from Keras-ordered arguments; a swapped call gets an error saying so."""
    if np.ndim(y_true) == 2 and np.ndim(y_pred) == 1:
        raise ValueError(
            f"Metric functions take (y_true, y_pred), Keras' order: labels of shape (N,) first, then probabilities "
            f"(N, C); got shapes {np.shape(y_true)} and {np.shape(y_pred)}, which look swapped."
        )
    probs = check_probs(y_pred, name="y_pred")
    labels = check_labels(y_true, *probs.shape, name="y_true")
    return ops.convert_to_tensor(probs, "float64"), ops.convert_to_tensor(labels, "int32")


def _check_num_bins(num_bins):
    if isinstance(num_bins, bool) or not isinstance(num_bins, (int, np.integer)) or num_bins < 1:
        raise ValueError(f"num_bins must be a positive integer, got {num_bins!r}.")
    return int(num_bins)


def _correct(probs, labels):
    return ops.cast(ops.equal(ops.cast(ops.argmax(probs, axis=-1), "int32"), labels), probs.dtype)


def _bin_statistics(probs, labels, num_bins, weights=None):
    """Per-bin (count, confidence sum, correct sum), each (num_bins,); `weights` (N,) weighs examples."""
    confidence = ops.max(probs, axis=-1)
    index = ops.clip(ops.cast(ops.ceil(confidence * num_bins), "int32") - 1, 0, num_bins - 1)
    member = ops.one_hot(index, num_bins, dtype=probs.dtype)  # (N, B): which bin each example is in
    if weights is not None:
        member = member * weights[:, None]
    return (
        ops.sum(member, axis=0),
        ops.sum(member * confidence[:, None], axis=0),
        ops.sum(member * _correct(probs, labels)[:, None], axis=0),
    )


def _brier_per_example(probs, labels):
    onehot = ops.one_hot(labels, ops.shape(probs)[-1], dtype=probs.dtype)
    return ops.sum(ops.square(probs - onehot), axis=-1)


def _nll_per_example(log_probs, labels, eps):
    onehot = ops.one_hot(labels, ops.shape(log_probs)[-1], dtype=log_probs.dtype)
    return -ops.maximum(ops.sum(log_probs * onehot, axis=-1), np.log(eps))


def accuracy(y_true, y_pred):
    """Top-1 accuracy: fraction of examples whose argmax class equals the label.

    Args: y_true (N,) integer classes in [0, C); y_pred (N, C) probabilities (or any scores).
    """
    probs, labels = _inputs(y_true, y_pred)
    return float(ops.mean(_correct(probs, labels)))


def negative_log_likelihood(y_true, y_pred, eps=1e-12):
    """Mean negative log-likelihood of the true class, mean_n -log(max(p_n[y_n], eps)) (natural log).

    Args: y_true (N,) integer classes in [0, C); y_pred (N, C) probabilities; eps floors p_true so a
    zero probability costs -log(eps) instead of infinity.
    """
    probs, labels = _inputs(y_true, y_pred)
    return float(ops.mean(_nll_per_example(ops.log(ops.maximum(probs, eps)), labels, eps)))


def brier_score(y_true, y_pred):
    """Multi-class Brier score: mean over examples of sum_c (p_c - onehot(y)_c)^2, in [0, 2].

    Not divided by C (the convention of the ensemble-calibration literature FreeTickets follows).
    Args: y_true (N,) integer classes in [0, C); y_pred (N, C) probabilities.
    """
    probs, labels = _inputs(y_true, y_pred)
    return float(ops.mean(_brier_per_example(probs, labels)))


def expected_calibration_error(y_true, y_pred, num_bins=15):
    """Expected calibration error with `num_bins` equal-width confidence bins (15 as in FreeTickets).

    Confidence is max_c p_c; bin b is (b/B, (b+1)/B], confidence 0 goes into bin 0.
    ECE = sum_b (n_b / N) |acc_b - conf_b|; empty bins contribute 0.
    Args: y_true (N,) integer classes in [0, C); y_pred (N, C) probabilities.
    """
    probs, labels = _inputs(y_true, y_pred)
    counts, conf_sums, correct_sums = _bin_statistics(probs, labels, _check_num_bins(num_bins))
    return float(ops.sum(ops.abs(correct_sums - conf_sums)) / ops.sum(counts))


def adaptive_expected_calibration_error(y_true, y_pred, num_bins=15):
    """Top-label ECE with equal-mass ("adaptive") bins: each bin holds the same number of examples.

    Follows the adaptive binning of Nixon et al. 2019, "Measuring Calibration in Deep Learning"
    (CVPR workshops), applied to the top-label confidence like `expected_calibration_error` (their ACE
    also averages over every class; this is the top-label form). Examples are sorted by confidence
    max_c p_c (a stable sort, so ties keep their input order) and split into `num_bins` consecutive
    groups whose sizes differ by at most one (the first N mod B groups get the extra example, as
    np.array_split does); then ECE = sum_b (n_b / N) |acc_b - conf_b|. With N < B only N bins are
    non-empty. Unlike equal-width bins, no bin is nearly empty when confidences crowd near 1.

    Args: y_true (N,) integer classes in [0, C); y_pred (N, C) probabilities; num_bins B >= 1.
    Returns: a float in [0, 1].
    """
    probs, labels = _inputs(y_true, y_pred)
    num_bins = _check_num_bins(num_bins)
    confidence = ops.convert_to_numpy(ops.max(probs, axis=-1))
    correct = ops.convert_to_numpy(_correct(probs, labels))
    order = np.argsort(confidence, kind="stable")
    gap = sum(abs(np.sum(correct[b]) - np.sum(confidence[b])) for b in np.array_split(order, num_bins) if b.size)
    return float(gap / confidence.shape[0])


class BrierDecomposition(NamedTuple):
    """Murphy's (1973) terms of the Brier score: brier ~= uncertainty - resolution + reliability."""

    reliability: float  # mean squared distance of each prediction to its group's label frequencies (lower is better)
    resolution: float  # weighted squared distance of the groups' label frequencies to the overall ones (higher is better)
    uncertainty: float  # 1 - sum_c obar_c^2, the Brier score of always predicting the label frequencies obar


def brier_decomposition(y_true, y_pred):
    """Decomposes the multi-class Brier score into reliability, resolution and uncertainty (Murphy 1973).

    As in TensorFlow Probability's `tfp.stats.brier_decomposition` (used by uncertainty-baselines),
    predictions are grouped by their predicted class k = argmax_c p_c (ties to the lowest index). With
    o_k the label frequencies (C,) of group k, n_k its size and obar the label frequencies of all N
    examples:

      reliability = (1/N) sum_n ||p_n - o_{k(n)}||^2
      resolution  = sum_k (n_k / N) ||o_k - obar||^2
      uncertainty = 1 - sum_c obar_c^2

    uncertainty - resolution + reliability equals `brier_score` exactly when all predictions of a group
    are the same vector (discrete forecasts); otherwise it differs by a within-group cross term, whose
    size TFP gives as O(C / N). This Brier score is sum_c (p_c - onehot_c)^2 (in [0, 2]); TFP's
    omits the constant 1 (sum_c p_c^2 - 2 p_y), so its uncertainty is this one minus 1 and the other
    two terms agree.

    Args: y_true (N,) integer classes in [0, C); y_pred (N, C) probabilities.
    Returns: BrierDecomposition(reliability, resolution, uncertainty) of floats.
    """
    probs, labels = _inputs(y_true, y_pred)
    probs, labels = ops.convert_to_numpy(probs), ops.convert_to_numpy(labels)
    num, num_classes = probs.shape
    predicted = np.argmax(probs, axis=-1)
    confusion = np.zeros((num_classes, num_classes))  # [predicted class k, label c]
    np.add.at(confusion, (predicted, labels), 1.0)
    sizes = confusion.sum(axis=1)
    frequencies = confusion / np.maximum(sizes, 1.0)[:, None]  # o_k; an empty group's row is 0 and weighs 0
    overall = confusion.sum(axis=0) / num
    reliability = np.mean(np.sum(np.square(probs - frequencies[predicted]), axis=-1))
    resolution = np.sum(sizes / num * np.sum(np.square(frequencies - overall), axis=-1))
    return BrierDecomposition(float(reliability), float(resolution), float(1.0 - np.sum(np.square(overall))))


class ReliabilityBins(NamedTuple):
    """Per-bin statistics; bin b covers (b/B, (b+1)/B], edges are np.linspace(0, 1, B + 1)."""

    counts: np.ndarray  # (B,) int64 number of examples in the bin
    confidence: np.ndarray  # (B,) mean confidence of the bin, 0 for an empty bin
    accuracy: np.ndarray  # (B,) accuracy of the bin, 0 for an empty bin


def reliability_diagram_bins(y_true, y_pred, num_bins=15):
    """Per-bin (count, mean confidence, accuracy) for a reliability diagram, binned exactly as the ECE.

    Args: y_true (N,) integer classes in [0, C); y_pred (N, C) probabilities; num_bins B (15 as in FreeTickets).
    Returns: ReliabilityBins(counts, confidence, accuracy), three numpy arrays of shape (B,).
    """
    probs, labels = _inputs(y_true, y_pred)
    stats = _bin_statistics(probs, labels, _check_num_bins(num_bins))
    counts, conf_sums, correct_sums = (ops.convert_to_numpy(s) for s in stats)
    safe = np.maximum(counts, 1.0)
    return ReliabilityBins(counts.round().astype(np.int64), conf_sums / safe, correct_sums / safe)


def _metric_inputs(y_true, y_pred, sample_weight):
    """Sparse labels (N,) int32, probabilities-or-logits (N, C) float64 and weights (N,) or None."""
    y_pred = ops.cast(ops.convert_to_tensor(y_pred), "float64")
    y_true = ops.convert_to_tensor(y_true)
    if len(y_pred.shape) != 2:
        raise ValueError(f"y_pred must have shape (N, C), got shape {y_pred.shape}.")
    if len(y_true.shape) > 2 or (len(y_true.shape) == 2 and y_true.shape[-1] != 1):
        raise ValueError(f"y_true must be sparse integer labels of shape (N,) or (N, 1), got shape {y_true.shape}.")
    labels = ops.cast(ops.reshape(y_true, (-1,)), "int32")
    if sample_weight is not None:
        sample_weight = ops.cast(ops.reshape(ops.convert_to_tensor(sample_weight), (-1,)), "float64")
    return labels, y_pred, sample_weight


class ExpectedCalibrationError(keras.metrics.Metric):
    """Keras metric for the ECE of `expected_calibration_error` (15 equal-width bins as in FreeTickets).

    update_state(y_true, y_pred, sample_weight=None): y_true (N,) or (N, 1) integer labels; y_pred (N, C)
    probabilities, or logits if `from_logits`. Per-bin counts, confidence sums and correct sums are
    accumulated in float64 variables, so several batches give the ECE of their concatenation.
    """

    def __init__(self, num_bins=15, from_logits=False, name="ece", dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.num_bins = _check_num_bins(num_bins)
        self.from_logits = bool(from_logits)
        shape, kwargs = (self.num_bins,), dict(initializer="zeros", dtype="float64")
        self.counts = self.add_variable(shape=shape, name="counts", **kwargs)
        self.confidence_sums = self.add_variable(shape=shape, name="confidence_sums", **kwargs)
        self.correct_sums = self.add_variable(shape=shape, name="correct_sums", **kwargs)

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels, y_pred, weights = _metric_inputs(y_true, y_pred, sample_weight)
        probs = ops.softmax(y_pred, axis=-1) if self.from_logits else y_pred
        counts, conf_sums, correct_sums = _bin_statistics(probs, labels, self.num_bins, weights)
        self.counts.assign_add(counts)
        self.confidence_sums.assign_add(conf_sums)
        self.correct_sums.assign_add(correct_sums)

    def result(self):
        gap = ops.sum(ops.abs(self.correct_sums - self.confidence_sums))
        return ops.cast(ops.divide_no_nan(gap, ops.sum(self.counts)), self.dtype)

    def get_config(self):
        return {**super().get_config(), "num_bins": self.num_bins, "from_logits": self.from_logits}


class _PerExampleMean(keras.metrics.Metric):
    """Accumulates a weighted sum of a per-example value and the total weight (float64)."""

    def __init__(self, from_logits=False, name=None, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.from_logits = bool(from_logits)
        self.total = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="total")
        self.count = self.add_variable(shape=(), initializer="zeros", dtype="float64", name="count")

    def _per_example(self, y_pred, labels):
        raise NotImplementedError

    def update_state(self, y_true, y_pred, sample_weight=None):
        labels, y_pred, weights = _metric_inputs(y_true, y_pred, sample_weight)
        values = self._per_example(y_pred, labels)
        if weights is None:
            weights = ops.ones_like(values)
        self.total.assign_add(ops.sum(values * weights))
        self.count.assign_add(ops.sum(weights))

    def result(self):
        return ops.cast(ops.divide_no_nan(self.total, self.count), self.dtype)

    def get_config(self):
        return {**super().get_config(), "from_logits": self.from_logits}


class BrierScore(_PerExampleMean):
    """Keras metric for `brier_score`: mean of sum_c (p_c - onehot_c)^2 (not divided by C).

    y_true (N,) or (N, 1) integer labels; y_pred (N, C) probabilities, or logits if `from_logits`.
    """

    def __init__(self, from_logits=False, name="brier", dtype=None):
        super().__init__(from_logits=from_logits, name=name, dtype=dtype)

    def _per_example(self, y_pred, labels):
        return _brier_per_example(ops.softmax(y_pred, axis=-1) if self.from_logits else y_pred, labels)


class NegativeLogLikelihood(_PerExampleMean):
    """Keras metric for `negative_log_likelihood`: mean of -log(max(p_true, eps)).

    y_true (N,) or (N, 1) integer labels; y_pred (N, C) probabilities, or logits if `from_logits`
    (then log p comes from a log-softmax, floored at log(eps) like the probability path).
    """

    def __init__(self, from_logits=False, eps=1e-12, name="nll", dtype=None):
        super().__init__(from_logits=from_logits, name=name, dtype=dtype)
        self.eps = float(eps)

    def _per_example(self, y_pred, labels):
        log_probs = ops.log_softmax(y_pred, axis=-1) if self.from_logits else ops.log(ops.maximum(y_pred, self.eps))
        return _nll_per_example(log_probs, labels, self.eps)

    def get_config(self):
        return {**super().get_config(), "eps": self.eps}
