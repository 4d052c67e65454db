"""Accuracy, NLL, Brier, ECE and their Keras metrics against hand-computed values."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from tf_freetickets import metrics

# Five examples, three classes. Prediction = argmax, confidence = max prob.
PROBS = np.array(
    [
        [0.70, 0.20, 0.10],  # y=0: predicts 0, correct, conf 0.70
        [0.10, 0.65, 0.25],  # y=2: predicts 1, wrong,   conf 0.65
        [0.25, 0.10, 0.65],  # y=2: predicts 2, correct, conf 0.65
        [0.50, 0.30, 0.20],  # y=1: predicts 0, wrong,   conf 0.50
        [0.05, 0.90, 0.05],  # y=1: predicts 1, correct, conf 0.90
    ]
)
LABELS = np.array([0, 2, 2, 1, 1])

# 3 correct of 5.
ACCURACY = 0.6
# p_true = 0.70, 0.25, 0.65, 0.30, 0.90
# -ln: 0.356675 + 1.386294 + 0.430783 + 1.203973 + 0.105361 = 3.483086; / 5
NLL = 0.6966171
# per example sum_c (p - onehot)^2:
#   0.09+0.04+0.01=0.14 | 0.01+0.4225+0.5625=0.995 | 0.0625+0.01+0.1225=0.195
#   0.25+0.49+0.04=0.78 | 0.0025+0.01+0.0025=0.015 ; total 2.125 / 5
BRIER = 0.425
# 15 bins of width 1/15, bin b = (b/15, (b+1)/15]:
#   0.50 -> bin 7 (0.467, 0.533]: n=1, acc 0, conf 0.5  -> 1/5 * 0.5  = 0.10
#   0.65 -> bin 9 (0.600, 0.667]: n=2, acc .5, conf .65 -> 2/5 * 0.15 = 0.06
#   0.70 -> bin 10 (0.667, 0.733]: n=1, acc 1, conf .7  -> 1/5 * 0.3  = 0.06
#   0.90 -> bin 13 (0.867, 0.933]: n=1, acc 1, conf .9  -> 1/5 * 0.1  = 0.02
ECE_15 = 0.24
# 1 bin: |acc - mean conf| = |0.6 - (0.7+0.65+0.65+0.5+0.9)/5| = |0.6 - 0.68|
ECE_1 = 0.08
# 2 bins (0, .5], (.5, 1]: conf 0.5 belongs to the LOWER bin (bins are (lo, hi]).
#   bin 0: n=1, acc 0, conf .5 -> 1/5 * .5 = 0.1
#   bin 1: n=4, acc 3/4, conf 2.9/4 = .725 -> 4/5 * .025 = 0.02
# (with [lo, hi) bins it would be 0.08 instead)
ECE_2 = 0.12


def test_scalar_metrics_match_hand_values():
    assert metrics.accuracy(LABELS, PROBS) == pytest.approx(ACCURACY, abs=1e-12)
    assert metrics.negative_log_likelihood(LABELS, PROBS) == pytest.approx(NLL, abs=1e-6)
    assert metrics.brier_score(LABELS, PROBS) == pytest.approx(BRIER, abs=1e-12)
    assert metrics.expected_calibration_error(LABELS, PROBS) == pytest.approx(ECE_15, abs=1e-12)
    assert metrics.expected_calibration_error(LABELS, PROBS, num_bins=1) == pytest.approx(ECE_1, abs=1e-12)
    assert metrics.expected_calibration_error(LABELS, PROBS, num_bins=2) == pytest.approx(ECE_2, abs=1e-12)
    assert isinstance(metrics.expected_calibration_error(LABELS, PROBS), float)


def test_functions_accept_tensors_and_float_labels():
    probs, labels = tf.constant(PROBS, tf.float32), tf.constant(LABELS.astype(np.float32))
    assert metrics.brier_score(labels, probs) == pytest.approx(BRIER, abs=1e-6)
    assert metrics.expected_calibration_error(labels, probs) == pytest.approx(ECE_15, abs=1e-6)


def test_nll_floors_zero_probability_at_eps():
    # p_true = 0 -> -ln(1e-4) = 4 ln 10 = 9.2103404 ; p_true = 1 -> 0 ; mean over 2 = 4.6051702
    value = metrics.negative_log_likelihood([0, 0], [[0.0, 1.0], [1.0, 0.0]], eps=1e-4)
    assert value == pytest.approx(4.6051702, abs=1e-6)


def test_reliability_bins_match_hand_values():
    counts, confidence, accuracy = metrics.reliability_diagram_bins(LABELS, PROBS)
    want_counts = np.zeros(15, np.int64)
    want_counts[[7, 9, 10, 13]] = [1, 2, 1, 1]
    np.testing.assert_array_equal(counts, want_counts)
    np.testing.assert_allclose(confidence[[7, 9, 10, 13]], [0.5, 0.65, 0.7, 0.9], atol=1e-12)
    np.testing.assert_allclose(accuracy[[7, 9, 10, 13]], [0.0, 0.5, 1.0, 1.0], atol=1e-12)
    assert np.all(confidence[counts == 0] == 0) and np.all(accuracy[counts == 0] == 0)


def test_bin_edges_are_left_open_and_zero_confidence_goes_to_first_bin():
    # 4 bins (0,.25], (.25,.5], (.5,.75], (.75,1]; confidences 0, .25, .5, .75, 1.0 (exact in binary)
    probs = [[0, 0, 0, 0], [0.25] * 4, [0.5, 0.5, 0, 0], [0.75, 0.25, 0, 0], [1, 0, 0, 0]]
    bins = metrics.reliability_diagram_bins([0, 0, 0, 0, 0], probs, num_bins=4)
    np.testing.assert_array_equal(bins.counts, [2, 1, 1, 1])
    np.testing.assert_allclose(bins.confidence, [0.125, 0.5, 0.75, 1.0])  # bin 0: (0 + .25) / 2
    # all predict class 0 (ties -> lowest index) and are correct: ECE = (2*|1-.125| + |1-.5| + |1-.75|) / 5
    #   = (1.75 + 0.5 + 0.25) / 5 = 0.5
    assert metrics.expected_calibration_error([0, 0, 0, 0, 0], probs, num_bins=4) == pytest.approx(0.5, abs=1e-12)


@pytest.mark.parametrize(
    "probs, labels, match",
    [
        (np.ones(3) / 3, [0], r"shape \(N, C\).*\(3,\)"),
        (np.ones((2, 3, 1)), [0, 0], r"\(2, 3, 1\)"),
        (PROBS, LABELS[:4], r"shape \(5,\).*\(4,\)"),
        (PROBS, LABELS[:, None], r"\(5, 1\)"),
        (PROBS, [0, 1, 2, 3, 0], r"\[0, 3\), got \[3\]"),
        (PROBS, [0, -1, 2, 1, 0], r"got \[-1\]"),
        (PROBS, [0, 1.5, 2, 1, 0], "integer"),
    ],
)
def test_bad_inputs_raise_value_error(probs, labels, match):
    for fn in (metrics.accuracy, metrics.brier_score, metrics.negative_log_likelihood, metrics.expected_calibration_error):
        with pytest.raises(ValueError, match=match):
            fn(labels, probs)


def test_functions_take_keras_argument_order_and_name_a_swapped_call():
    keras_metric = keras.metrics.SparseCategoricalAccuracy()
    keras_metric.update_state(LABELS, PROBS)
    assert metrics.accuracy(LABELS, PROBS) == pytest.approx(float(keras_metric.result()))
    for fn in (metrics.accuracy, metrics.brier_score, metrics.negative_log_likelihood, metrics.expected_calibration_error):
        with pytest.raises(ValueError, match=r"\(y_true, y_pred\).*look swapped"):
            fn(PROBS, LABELS)


@pytest.mark.parametrize("num_bins", [0, -3, 2.5, True])
def test_bad_num_bins_raise(num_bins):
    with pytest.raises(ValueError, match="num_bins"):
        metrics.expected_calibration_error(LABELS, PROBS, num_bins=num_bins)
    with pytest.raises(ValueError, match="num_bins"):
        metrics.ExpectedCalibrationError(num_bins=num_bins)


def _keras_metrics(from_logits=False):
    return [
        metrics.ExpectedCalibrationError(from_logits=from_logits),
        metrics.BrierScore(from_logits=from_logits),
        metrics.NegativeLogLikelihood(from_logits=from_logits),
    ]


def test_keras_metrics_match_hand_values_over_batches():
    ece, brier, nll = _keras_metrics()
    for metric in (ece, brier, nll):
        metric.update_state(LABELS[:2], PROBS[:2])  # batch of 2, labels (N,)
        metric.update_state(LABELS[2:, None], tf.constant(PROBS[2:], tf.float32))  # batch of 3, labels (N, 1)
    assert float(ece.result()) == pytest.approx(ECE_15, abs=1e-6)
    assert float(brier.result()) == pytest.approx(BRIER, abs=1e-6)
    assert float(nll.result()) == pytest.approx(NLL, abs=1e-6)
    np.testing.assert_array_equal(ece.counts.numpy()[[7, 9, 10, 13]], [1, 2, 1, 1])
    ece.reset_state()
    assert float(ece.result()) == 0.0 and ece.counts.numpy().sum() == 0


def test_keras_metrics_over_uneven_batches_equal_functions_on_concatenation():
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.full(10, 0.3), size=203).astype(np.float32)
    labels = rng.integers(0, 10, size=203)
    ece, brier, nll = _keras_metrics()
    for lo, hi in [(0, 1), (1, 64), (64, 150), (150, 203)]:
        for metric in (ece, brier, nll):
            metric.update_state(tf.constant(labels[lo:hi]), tf.constant(probs[lo:hi]))
    np.testing.assert_array_equal(ece.counts.numpy(), metrics.reliability_diagram_bins(labels, probs).counts)
    np.testing.assert_allclose(float(ece.result()), metrics.expected_calibration_error(labels, probs), rtol=1e-6)
    np.testing.assert_allclose(float(brier.result()), metrics.brier_score(labels, probs), rtol=1e-6)
    np.testing.assert_allclose(float(nll.result()), metrics.negative_log_likelihood(labels, probs), rtol=1e-6)


def test_keras_metrics_sample_weight_equals_repeating_examples():
    weights = np.array([2.0, 1.0, 0.0, 1.0, 1.0])  # example 0 twice, example 2 dropped
    repeated = [0, 0, 1, 3, 4]
    for metric, fn in zip(
        _keras_metrics(), (metrics.expected_calibration_error, metrics.brier_score, metrics.negative_log_likelihood)
    ):
        metric.update_state(LABELS, PROBS, sample_weight=weights)
        np.testing.assert_allclose(float(metric.result()), fn(LABELS[repeated], PROBS[repeated]), rtol=1e-6)
    # hand check for ECE: bins 7: n=1 gap .5; 9: n=1 (wrong, .65) gap .65; 10: n=2 gap .3 each; 13: gap .1
    #   (0.5 + 0.65 + 0.6 + 0.1) / 5 = 0.37
    assert metrics.expected_calibration_error(LABELS[repeated], PROBS[repeated]) == pytest.approx(0.37, abs=1e-12)


def test_keras_metrics_reject_one_hot_labels():
    with pytest.raises(ValueError, match=r"sparse integer labels.*\(5, 3\)"):
        metrics.ExpectedCalibrationError().update_state(np.eye(3)[LABELS], PROBS)


def test_keras_metrics_config_round_trip():
    metric = metrics.ExpectedCalibrationError(num_bins=10, from_logits=True, name="ece10")
    clone = metrics.ExpectedCalibrationError.from_config(metric.get_config())
    assert (clone.num_bins, clone.from_logits, clone.name, clone.counts.shape) == (10, True, "ece10", (10,))
    nll = metrics.NegativeLogLikelihood.from_config(metrics.NegativeLogLikelihood(eps=1e-3).get_config())
    assert nll.eps == 1e-3


@pytest.mark.parametrize("from_logits", [False, True])
def test_keras_metrics_in_compile_and_evaluate(from_logits):
    # An identity model outputs its input: probabilities, or log-probabilities read as logits
    # (softmax(log p) = p since each row sums to 1), so evaluate must reproduce the hand values.
    inputs = keras.Input(shape=(3,))
    model = keras.Model(inputs, keras.layers.Identity()(inputs))
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=from_logits), metrics=_keras_metrics(from_logits))
    x = np.log(PROBS) if from_logits else PROBS
    results = model.evaluate(x.astype(np.float32), LABELS, batch_size=2, verbose=0, return_dict=True)
    assert results["ece"] == pytest.approx(ECE_15, abs=1e-6)
    assert results["brier"] == pytest.approx(BRIER, abs=1e-6)
    assert results["nll"] == pytest.approx(NLL, abs=1e-6)


def test_keras_metrics_with_a_dense_model_equal_functions_on_predictions():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(37, 4)).astype(np.float32), rng.integers(0, 3, size=37)
    model = keras.Sequential(
        [keras.Input(shape=(4,)), keras.layers.Dense(3, kernel_initializer=keras.initializers.RandomNormal(seed=2))]
    )
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=_keras_metrics(from_logits=True))
    results = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    probs = keras.ops.convert_to_numpy(keras.ops.softmax(model.predict(x, verbose=0)))
    np.testing.assert_allclose(results["ece"], metrics.expected_calibration_error(y, probs), rtol=1e-5)
    np.testing.assert_allclose(results["brier"], metrics.brier_score(y, probs), rtol=1e-5)
    np.testing.assert_allclose(results["nll"], metrics.negative_log_likelihood(y, probs), rtol=1e-5)


def test_smoothed_sparse_crossentropy_against_hand_value_and_round_trip():
    import keras

    from tf_freetickets.losses import SmoothedSparseCrossentropy

    loss = SmoothedSparseCrossentropy(num_classes=3, label_smoothing=0.3)
    logits = np.array([[2.0, 0.0, -1.0]], np.float32)
    log_probs = logits[0] - np.log(np.exp(logits[0]).sum())
    targets = np.array([1 - 0.3 + 0.1, 0.1, 0.1])  # true class 0: 1 - s + s/C, others s/C
    assert float(loss(np.array([0]), logits)) == pytest.approx(-(targets * log_probs).sum(), rel=1e-6)
    restored = keras.losses.deserialize(keras.losses.serialize(loss))
    assert (restored.num_classes, restored.label_smoothing) == (3, 0.3)
    with pytest.raises(ValueError, match="label_smoothing"):
        SmoothedSparseCrossentropy(3, 1.0)


# Four binary examples away from every bin edge: (probs, label) -> confidence, correct
#   [.45, .55] y=1 -> .55 correct | [.38, .62] y=0 -> .62 wrong | [.32, .68] y=1 -> .68 correct
#   [.07, .93] y=1 -> .93 correct
EDGE_FREE_PROBS = np.array([[0.45, 0.55], [0.38, 0.62], [0.32, 0.68], [0.07, 0.93]])
EDGE_FREE_LABELS = np.array([1, 0, 1, 1])
# 10 bins (CigL): .55 in (.5, .6]; .62 and .68 in (.6, .7]; .93 in (.9, 1.]
#   |1 - .55| + |1 - (.62 + .68)| + |1 - .93| = .45 + .30 + .07 = .82; / 4
ECE_10_EDGE_FREE = 0.205
# 15 bins: .55 in (8/15, 9/15], .62 in (9/15, 10/15], .68 in (10/15, 11/15], .93 in (13/15, 14/15]: all apart
#   .45 + .62 + .32 + .07 = 1.46; / 4
ECE_15_EDGE_FREE = 0.365


def test_ten_bin_ece_matches_hand_value():
    assert metrics.expected_calibration_error(EDGE_FREE_LABELS, EDGE_FREE_PROBS, num_bins=10) == pytest.approx(
        ECE_10_EDGE_FREE, abs=1e-12
    )
    assert metrics.expected_calibration_error(EDGE_FREE_LABELS, EDGE_FREE_PROBS) == pytest.approx(ECE_15_EDGE_FREE, abs=1e-12)


def test_adaptive_ece_matches_hand_values():
    ace = metrics.adaptive_expected_calibration_error
    # Sorted confidences .55 (c), .62 (w), .68 (c), .93 (c).
    # 2 equal-mass bins {.55, .62}, {.68, .93}: |1 - 1.17| + |2 - 1.61| = .17 + .39 = .56; / 4
    assert ace(EDGE_FREE_LABELS, EDGE_FREE_PROBS, num_bins=2) == pytest.approx(0.14, abs=1e-12)
    # 1 bin: |3 - 2.78| / 4
    assert ace(EDGE_FREE_LABELS, EDGE_FREE_PROBS, num_bins=1) == pytest.approx(0.055, abs=1e-12)
    # 4 bins of one example each: the 15-bin ECE's 1.46 / 4 (there every example is alone in its bin too)
    assert ace(EDGE_FREE_LABELS, EDGE_FREE_PROBS, num_bins=4) == pytest.approx(0.365, abs=1e-12)
    # PROBS sorted (stable): .50 w, .65 w (example 1), .65 c (example 2), .70 c, .90 c.
    # 2 bins of sizes 3, 2 (np.array_split): |1 - 1.8| + |2 - 1.6| = .8 + .4 = 1.2; / 5
    assert ace(LABELS, PROBS, num_bins=2) == pytest.approx(0.24, abs=1e-12)
    # 15 bins with 5 examples: each alone, sum |correct - conf| = .5 + .65 + .35 + .3 + .1 = 1.9; / 5
    assert ace(LABELS, PROBS) == pytest.approx(0.38, abs=1e-12)
    with pytest.raises(ValueError, match="num_bins"):
        ace(LABELS, PROBS, num_bins=0)
    with pytest.raises(ValueError, match="look swapped"):
        ace(PROBS, LABELS)


def test_adaptive_ece_bins_hold_equal_numbers_of_examples():
    # 1,000 examples, confidences crowded near 1: against an independent per-bin loop over sorted examples.
    rng = np.random.default_rng(0)
    confidence = 1.0 - 0.2 * rng.random(1000) ** 3
    probs = np.stack([confidence, 1.0 - confidence], axis=1)
    labels = (rng.random(1000) > confidence).astype(int)  # calibrated on average: correct with probability conf
    order = np.argsort(confidence, kind="stable")
    expected = 0.0
    for b in range(10):
        members = order[b * 100 : (b + 1) * 100]
        expected += 100 / 1000 * abs(np.mean(labels[members] == 0) - np.mean(confidence[members]))
    assert metrics.adaptive_expected_calibration_error(labels, probs, num_bins=10) == pytest.approx(expected, abs=1e-12)


# Discrete forecasts (one probability vector per predicted class), so Murphy's decomposition is exact.
#   predicted 0, f = [.6, .3, .1], labels 0, 0, 1 -> o_A = [2/3, 1/3, 0]
#   predicted 2, f = [.1, .2, .7], labels 2, 1    -> o_B = [0, 1/2, 1/2]
DISCRETE_PROBS = np.array([[0.6, 0.3, 0.1]] * 3 + [[0.1, 0.2, 0.7]] * 2)
DISCRETE_LABELS = np.array([0, 0, 1, 2, 1])
# obar = [.4, .4, .2]; uncertainty = 1 - (.16 + .16 + .04)
UNCERTAINTY = 0.64
# o_A - obar = [.266667, -.066667, -.2] -> .071111 + .004444 + .04 = .115556
# o_B - obar = [-.4, .1, .3] -> .16 + .01 + .09 = .26;  3/5 * .115556 + 2/5 * .26
RESOLUTION = 0.1733333
# f_A - o_A = [-.066667, -.033333, .1] -> .004444 + .001111 + .01 = .015556
# f_B - o_B = [.1, -.3, .2] -> .01 + .09 + .04 = .14;  3/5 * .015556 + 2/5 * .14
RELIABILITY = 0.0653333
# Brier: label 0 rows .16 + .09 + .01 = .26 (x2), label-1 row of A .36 + .49 + .01 = .86,
#   label-2 row of B .01 + .04 + .09 = .14, label-1 row of B .01 + .64 + .49 = 1.14; 2.66 / 5
DISCRETE_BRIER = 0.532


def test_brier_decomposition_matches_hand_values_and_sums_to_the_brier_score():
    terms = metrics.brier_decomposition(DISCRETE_LABELS, DISCRETE_PROBS)
    assert isinstance(terms, metrics.BrierDecomposition)
    assert terms.reliability == pytest.approx(RELIABILITY, abs=1e-6)
    assert terms.resolution == pytest.approx(RESOLUTION, abs=1e-6)
    assert terms.uncertainty == pytest.approx(UNCERTAINTY, abs=1e-12)
    assert metrics.brier_score(DISCRETE_LABELS, DISCRETE_PROBS) == pytest.approx(DISCRETE_BRIER, abs=1e-12)
    assert terms.uncertainty - terms.resolution + terms.reliability == pytest.approx(DISCRETE_BRIER, abs=1e-12)


def test_brier_decomposition_of_varying_forecasts():
    # PROBS: group "predicted 0" holds [.7, .2, .1] (y 0) and [.5, .3, .2] (y 1), o = [.5, .5, 0];
    #   "predicted 1": [.1, .65, .25] (y 2) and [.05, .9, .05] (y 1), o = [0, .5, .5]; "predicted 2": [.25, .1, .65] (y 2).
    # obar = [.2, .4, .4]: uncertainty 1 - (.04 + .16 + .16) = .64
    # resolution: 2/5 (.09 + .01 + .16) + 2/5 (.04 + .01 + .01) + 1/5 (.04 + .16 + .36) = .104 + .024 + .112 = .24
    # reliability: (.04 + .09 + .01) + (0 + .04 + .04) + (.01 + .0225 + .0625) + (.0025 + .16 + .2025)
    #   + (.0625 + .01 + .1225) = .14 + .08 + .095 + .365 + .195 = .875; / 5 = .175
    terms = metrics.brier_decomposition(LABELS, PROBS)
    assert terms == pytest.approx((0.175, 0.24, 0.64), abs=1e-12)
    # Not exact when a group's forecasts differ: .64 - .24 + .175 = .575 against a Brier score of .425.
    assert terms.uncertainty - terms.resolution + terms.reliability != pytest.approx(BRIER, abs=1e-3)
