"""The comparison metrics in `summarize_members`, `evaluate_members` and `record_metrics`."""

import keras
import numpy as np
import pytest

from tf_freetickets import metrics
from tf_freetickets.data import ood
from tf_freetickets.experiments.evaluation import evaluate_members
from tf_freetickets.metrics.summary import SCORING_KEYS, TEMPERATURE_KEYS, record_metrics, summarize_members

# Two members whose mean is [[.45, .55], [.38, .62], [.32, .68], [.07, .93]]; labels 1, 0, 1, 1.
MEMBERS = np.array(
    [
        [[0.35, 0.65], [0.38, 0.62], [0.22, 0.78], [0.07, 0.93]],
        [[0.55, 0.45], [0.38, 0.62], [0.42, 0.58], [0.07, 0.93]],
    ]
)
LABELS = np.array([1, 0, 1, 1])
# Gibbs: member 0 -ln(.65, .38, .78, .93) = .430783 + .967584 + .248461 + .072571 = 1.719399
#        member 1 -ln(.45, .38, .58, .93) = .798508 + .967584 + .544727 + .072571 = 2.383390; (sum) / 8
GIBBS = 0.5128486
# Ensemble confidences .55 (c), .62 (w), .68 (c), .93 (c). 10 bins: (.45 + .30 + .07) / 4
ECE_10 = 0.205
# 15 equal-mass bins of 4 examples: each alone, (.45 + .62 + .32 + .07) / 4
ADAPTIVE_ECE = 0.365
# Every example predicts class 1: one group, o = obar = [.25, .75]; resolution 0, uncertainty 1 - (1/16 + 9/16).
# reliability: 2 * (.2^2 + .13^2 + .07^2 + .18^2) / 4 = 2 * (.04 + .0169 + .0049 + .0324) / 4
BRIER_TERMS = (0.0471, 0.0, 0.375)


def test_summarize_members_records_the_comparison_metrics():
    result = summarize_members(MEMBERS, LABELS)
    assert set(SCORING_KEYS) <= set(result)
    assert result["gibbs_nll"] == pytest.approx(GIBBS, abs=1e-6)
    assert result["gibbs_nll"] == pytest.approx(result["member_nll_mean"], abs=1e-12)
    assert result["ece_10bins"] == pytest.approx(ECE_10, abs=1e-12)
    assert result["adaptive_ece"] == pytest.approx(ADAPTIVE_ECE, abs=1e-12)
    terms = (result["brier_reliability"], result["brier_resolution"], result["brier_uncertainty"])
    assert terms == pytest.approx(BRIER_TERMS, abs=1e-12)
    assert "ood_fpr95" not in result


def test_summarize_members_records_ood_fpr95():
    # In-distribution entropy of the mean; OoD members predict [.5, .5] (entropy ln 2, above every in-score)
    # and [.45, .55] (the lowest in-score, accepted at any threshold): FPR at 95% TPR = 1/2.
    out = np.array([[[0.5, 0.5], [0.45, 0.55]]] * 2)
    result = summarize_members(MEMBERS, LABELS, ood_member_probs=out)
    assert result["ood_fpr95"] == pytest.approx(0.5, abs=1e-12)
    assert result["ood_auroc"] == pytest.approx(metrics.auroc(
        metrics.ood_scores(MEMBERS.mean(axis=0)), metrics.ood_scores(out.mean(axis=0))), abs=1e-12)  # fmt: skip


def _member(seed):
    """A fixed linear 3-class model on 28x28x1 images (logits)."""
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(3)])
    rng = np.random.default_rng(seed)
    model.layers[-1].set_weights([rng.normal(0.0, 0.05, (784, 3)), rng.normal(0.0, 0.5, 3)])
    return model


def _probs(members, images):
    outputs = [keras.ops.convert_to_numpy(keras.ops.softmax(m(np.asarray(images, np.float32) / 255.0))) for m in members]
    return np.mean(outputs, axis=0)


def test_evaluate_members_records_fpr95_corruption_ece_and_temperature():
    from tf_freetickets.data.corruptions import corrupt

    members = [_member(0), _member(1)]
    rng = np.random.default_rng(0)
    x_test, y_test = ood.natural_patches(40, seed=7), rng.integers(0, 3, 40)
    x_val, y_val = ood.natural_patches(60, seed=8), rng.integers(0, 3, 60)
    sets = {"uniform_noise": ood.mnist_like_noise(30, seed=0), "natural_patches": ood.natural_patches(30, seed=0)}
    result = evaluate_members(members, x_test, y_test, ood_sets=sets, validation=(x_val, y_val))
    ensemble = _probs(members, x_test)
    for name, images in sets.items():
        expected = metrics.fpr_at_tpr(metrics.ood_scores(ensemble), metrics.ood_scores(_probs(members, images)))
        assert result["ood"][name]["fpr95"] == pytest.approx(expected, abs=1e-12)
    assert result["ood_fpr95"] == pytest.approx(np.mean([v["fpr95"] for v in result["ood"].values()]), abs=1e-12)
    # Temperature fitted on the validation ensemble, applied to the test ensemble.
    temperature = metrics.fit_temperature(y_val, _probs(members, x_val))
    assert result["temperature"] == pytest.approx(temperature, rel=1e-4)
    scaled = metrics.apply_temperature(ensemble, result["temperature"])
    assert result["ts_nll"] == pytest.approx(metrics.negative_log_likelihood(y_test, scaled), abs=1e-6)
    assert result["ts_ece"] == pytest.approx(metrics.expected_calibration_error(y_test, scaled), abs=1e-6)
    assert result["ts_brier"] == pytest.approx(metrics.brier_score(y_test, scaled), abs=1e-6)
    # On the validation examples themselves, scaling cannot raise the NLL (T = 1 is among the candidates).
    val = _probs(members, x_val)
    assert metrics.negative_log_likelihood(y_val, metrics.apply_temperature(val, temperature)) <= (
        metrics.negative_log_likelihood(y_val, val) + 1e-9
    )

    corrupted = evaluate_members(members, x_test, y_test, corruptions=["gaussian_noise", "contrast"], severities=(1, 3))
    cells = [cell for per in corrupted["corruption"].values() for cell in per.values()]
    assert len(cells) == 4 and corrupted["corruption_ece"] == pytest.approx(np.mean([c["ece"] for c in cells]), abs=1e-12)
    direct = metrics.expected_calibration_error(y_test, _probs(members, corrupt(x_test, "contrast", 3, seed=0)))
    assert corrupted["corruption"]["contrast"]["3"]["ece"] == pytest.approx(direct, abs=1e-6)
    assert not set(TEMPERATURE_KEYS) & set(corrupted)

    record = record_metrics(result, corrupted)
    expected_keys = {*SCORING_KEYS, *TEMPERATURE_KEYS, "ood_fpr95", "corruption_ece"}
    expected_keys |= {f"ood_{m}_{name}" for m in ("fpr95", "aupr") for name in sets}
    assert set(record) == expected_keys
    assert record["ood_fpr95_natural_patches"] == result["ood"]["natural_patches"]["fpr95"]
    assert record["corruption_ece"] == corrupted["corruption_ece"] and record["gibbs_nll"] == result["gibbs_nll"]
    assert set(record_metrics(corrupted)) == set(SCORING_KEYS)  # no OoD, no temperature, no corrupted result given
