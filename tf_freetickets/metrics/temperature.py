"""Temperature scaling (Guo et al. 2017, "On Calibration of Modern Neural Networks", ICML).

One scalar T > 0 divides the logits, p = softmax(z / T); T is fitted on held-out (validation)
examples by minimising their NLL, then applied to the test predictions. T > 1 softens over-confident
predictions, T < 1 sharpens under-confident ones; the argmax, hence the accuracy, never changes.
For probabilities (e.g. an ensemble's mean) the logits are log p, so p_T is proportional to p^(1/T).

The fit is a deterministic 1-D bounded minimisation over log T (scipy's `minimize_scalar`,
method "bounded"). The NLL is convex in 1/T, so it has one minimum along log T and the bounded
search finds it (or the nearer bound when the minimum lies outside the bounds).
scipy is imported inside `fit_temperature` only.
"""

import numpy as np
from keras import ops

from tf_freetickets.metrics.calibration import _inputs, check_probs


def _check_temperature(temperature, name="temperature"):
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a positive number, got {temperature!r}.")
    if not np.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {temperature!r}.")
    return float(temperature)


def _logits(y_pred, from_logits, eps, name="y_pred"):
    """(N, C) float64 logits: y_pred itself, or log(max(p, eps)) of probabilities."""
    values = check_probs(y_pred, name=name)
    if not np.all(np.isfinite(values)):
        raise ValueError(f"{name} must be finite, got {values[~np.isfinite(values)][:5].tolist()}.")
    return values if from_logits else np.log(np.maximum(values, eps))


def _nll_at(logits, onehot, temperature):
    """Mean NLL of softmax(logits / temperature) at the one-hot labels."""
    log_probs = ops.log_softmax(ops.convert_to_tensor(logits / temperature), axis=-1)
    return float(-ops.mean(ops.sum(log_probs * onehot, axis=-1)))


def apply_temperature(y_pred, temperature, from_logits=False, eps=1e-12):
    """Temperature-scaled probabilities softmax(z / T), z the logits (or log p of probabilities).

    Args:
      y_pred: (N, C) logits if `from_logits`, else probabilities (floored at `eps` before the log).
      temperature: T > 0, e.g. from `fit_temperature`; T = 1 returns softmax(z) (the probabilities
        themselves, renormalised).
      from_logits: whether `y_pred` holds logits.
      eps: floor of probabilities before their log.

    Returns: numpy array (N, C) of probabilities.
    """
    temperature = _check_temperature(temperature)
    logits = _logits(y_pred, from_logits, eps)
    return ops.convert_to_numpy(ops.softmax(ops.convert_to_tensor(logits / temperature), axis=-1))


def fit_temperature(y_true, y_pred, from_logits=False, bounds=(0.05, 20.0), eps=1e-12):
    """The temperature T minimising the NLL of softmax(z / T) on held-out examples (Guo et al. 2017).

    Fit it on a validation split, never on the test examples it is then applied to.

    Args:
      y_true: (N,) integer classes in [0, C) (Keras' order: labels first).
      y_pred: (N, C) logits if `from_logits`, else probabilities (log p serves as the logits).
      from_logits: whether `y_pred` holds logits.
      bounds: (low, high) range of T searched, 0 < low < high; the minimisation runs over log T.
      eps: floor of probabilities before their log.

    Returns: T as a float in [low, high] (deterministic: the same inputs give the same T).
    """
    from scipy.optimize import minimize_scalar

    if not isinstance(bounds, (tuple, list)) or len(bounds) != 2:
        raise ValueError(f"bounds must be (low, high), got {bounds!r}.")
    low, high = (_check_temperature(b, name="bounds") for b in bounds)
    if low >= high:
        raise ValueError(f"bounds must have low < high, got {bounds!r}.")
    values, labels = _inputs(y_true, y_pred)  # checks shapes, labels and a swapped (y_pred, y_true) call
    logits = _logits(ops.convert_to_numpy(values), from_logits, eps)
    onehot = ops.one_hot(labels, logits.shape[-1], dtype="float64")
    found = minimize_scalar(
        lambda log_t: _nll_at(logits, onehot, np.exp(log_t)),
        bounds=(np.log(low), np.log(high)),
        method="bounded",
        options={"xatol": 1e-7},
    )
    return float(np.clip(np.exp(found.x), low, high))
