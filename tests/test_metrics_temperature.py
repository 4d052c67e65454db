"""Temperature scaling (Guo et al. 2017): hand values and recovery of a known temperature."""

import numpy as np
import pytest

from tf_freetickets import metrics


def test_apply_temperature_matches_hand_values():
    # p_T is proportional to p^(1/T): T = 2 on [.2, .8] gives [sqrt .2, sqrt .8] / (3 sqrt .2) = [1/3, 2/3].
    np.testing.assert_allclose(metrics.apply_temperature([[0.2, 0.8]], 2.0), [[1 / 3, 2 / 3]], atol=1e-12)
    # T = 1/2 squares: [.04, .64] / .68
    np.testing.assert_allclose(metrics.apply_temperature([[0.2, 0.8]], 0.5), [[0.04 / 0.68, 0.64 / 0.68]], atol=1e-12)
    # Logits [0, ln 3] at T = 1: softmax [1/4, 3/4]; at T = 1 probabilities come back unchanged.
    logits = [[0.0, np.log(3.0)]]
    np.testing.assert_allclose(metrics.apply_temperature(logits, 1.0, from_logits=True), [[0.25, 0.75]], atol=1e-12)
    np.testing.assert_allclose(metrics.apply_temperature([[0.1, 0.3, 0.6]], 1.0), [[0.1, 0.3, 0.6]], atol=1e-12)


def test_fit_temperature_matches_a_hand_solved_case():
    # Every example predicts [.2, .8]; 2 of 3 labels are class 1, so the NLL is least when p_T = [1/3, 2/3]:
    # (.8 / .2)^(1/T) = 4^(1/T) = 2, T = ln 4 / ln 2 = 2.
    probs = np.array([[0.2, 0.8]] * 3)
    assert metrics.fit_temperature([1, 1, 0], probs) == pytest.approx(2.0, abs=1e-5)
    # The same with logits [0, ln 4].
    assert metrics.fit_temperature([1, 1, 0], np.log(probs), from_logits=True) == pytest.approx(2.0, abs=1e-5)
    # Labels matching p exactly (4 of 5 are class 1): already calibrated, T = 1.
    assert metrics.fit_temperature([1, 1, 1, 1, 0], np.array([[0.2, 0.8]] * 5)) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize("true_temperature", [0.5, 2.5])
def test_fit_temperature_recovers_a_known_temperature(true_temperature):
    # Calibrated logits z: labels are drawn from softmax(z). The model's logits are T* z; dividing by T* calibrates them.
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 2.0, size=(20000, 5))
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    labels = (rng.random((20000, 1)) > np.cumsum(p, axis=1)).sum(axis=1)
    temperature = metrics.fit_temperature(labels, true_temperature * z, from_logits=True)
    assert temperature == pytest.approx(true_temperature, rel=0.05)
    assert metrics.fit_temperature(labels, true_temperature * z, from_logits=True) == temperature  # deterministic
    scaled = metrics.apply_temperature(true_temperature * z, temperature, from_logits=True)
    unscaled = metrics.apply_temperature(true_temperature * z, 1.0, from_logits=True)
    assert metrics.negative_log_likelihood(labels, scaled) < metrics.negative_log_likelihood(labels, unscaled)
    assert metrics.expected_calibration_error(labels, scaled) < 0.02 < metrics.expected_calibration_error(labels, unscaled)
    assert metrics.accuracy(labels, scaled) == metrics.accuracy(labels, unscaled)


def test_fit_temperature_stops_at_the_bounds():
    # Every prediction right: the NLL keeps falling as T -> 0, so the fit stops at the lower bound.
    probs = np.array([[0.3, 0.7], [0.6, 0.4]])
    assert metrics.fit_temperature([1, 0], probs, bounds=(0.1, 10.0)) == pytest.approx(0.1, rel=1e-4)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: metrics.apply_temperature([[0.2, 0.8]], 0.0), "temperature must be a positive finite number, got 0.0"),
        (lambda: metrics.apply_temperature([[0.2, 0.8]], -1), "got -1"),
        (lambda: metrics.apply_temperature([[0.2, 0.8]], "2"), "got '2'"),
        (lambda: metrics.apply_temperature([0.2, 0.8], 2.0), r"shape \(N, C\)"),
        (lambda: metrics.apply_temperature([[np.inf, 0.0]], 2.0, from_logits=True), "finite"),
        (lambda: metrics.fit_temperature([1, 0], [[0.2, 0.8]] * 2, bounds=(2.0, 1.0)), "low < high"),
        (lambda: metrics.fit_temperature([1, 0], [[0.2, 0.8]] * 2, bounds=(0.0, 1.0)), "bounds"),
        (lambda: metrics.fit_temperature([[0.2, 0.8]] * 2, [1, 0]), "look swapped"),
        (lambda: metrics.fit_temperature([1, 2], [[0.2, 0.8]] * 2), r"\[0, 2\), got \[2\]"),
    ],
)
def test_bad_inputs_raise_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()
