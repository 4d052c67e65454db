"""Ensemble diversity (disagreement, KL) and uncertainty (entropy, mutual information) against hand values."""

import numpy as np
import pytest
import tensorflow as tf

from tf_freetickets import metrics

LN2 = 0.6931472  # ln 2


def _one_hot_like(predictions, num_classes=3):
    """Soft probabilities whose argmax is `predictions`: 0.6 on the predicted class, 0.2 elsewhere."""
    probs = np.full((len(predictions), num_classes), 0.2)
    probs[np.arange(len(predictions)), predictions] = 0.6
    return probs


# Three members, four examples. Top-1 predictions:
#   m0: 0 1 2 0
#   m1: 0 1 1 0
#   m2: 1 1 2 2
MEMBERS = np.stack([_one_hot_like([0, 1, 2, 0]), _one_hot_like([0, 1, 1, 0]), _one_hot_like([1, 1, 2, 2])])
# d01: differ on example 2 only -> 1/4; d02: examples 0, 3 -> 2/4; d12: examples 0, 2, 3 -> 3/4
DISAGREEMENT = np.array([[0.0, 0.25, 0.5], [0.25, 0.0, 0.75], [0.5, 0.75, 0.0]])
# ordered pairs i != j: 2 * (0.25 + 0.5 + 0.75) / 6
MEAN_DISAGREEMENT = 0.5

# Two members, two examples, two classes.
KL_MEMBERS = np.array([[[0.5, 0.5], [0.9, 0.1]], [[0.25, 0.75], [0.9, 0.1]]])
# KL(p0||p1), example 0: .5 ln(.5/.25) + .5 ln(.5/.75) = .5*.693147 - .5*.405465 = .143841; example 1: 0
#   mean over examples: .143841 / 2 = .0719205
# KL(p1||p0), example 0: .25 ln(.25/.5) + .75 ln(.75/.5) = -.173287 + .304099 = .130812; mean .065406
KL = np.array([[0.0, 0.0719205], [0.065406, 0.0]])
MEAN_KL = 0.0686633  # (.0719205 + .065406) / 2


def test_pairwise_disagreement_matches_hand_values():
    np.testing.assert_allclose(metrics.pairwise_disagreement(MEMBERS), DISAGREEMENT, atol=1e-12)
    assert metrics.mean_disagreement(MEMBERS) == pytest.approx(MEAN_DISAGREEMENT, abs=1e-12)
    assert isinstance(metrics.mean_disagreement(MEMBERS), float)


def test_disagreement_accepts_a_list_of_tensors():
    members = [tf.constant(m, tf.float32) for m in MEMBERS]
    np.testing.assert_allclose(metrics.pairwise_disagreement(members), DISAGREEMENT, atol=1e-12)


def test_pairwise_kl_matches_hand_values_and_is_asymmetric():
    kl = metrics.pairwise_kl(KL_MEMBERS)
    assert kl.shape == (2, 2)
    np.testing.assert_allclose(kl, KL, atol=1e-6)
    assert metrics.mean_kl(KL_MEMBERS) == pytest.approx(MEAN_KL, abs=1e-6)


def test_pairwise_kl_zero_probabilities_and_eps():
    # p0 = [1, 0], p1 = [.5, .5]
    # KL(p0||p1) = 1 ln(1/.5) + 0 = ln 2 = .693147 (the 0 * log term is 0)
    # KL(p1||p0) = .5 ln(.5/1) + .5 ln(.5/1e-12) = -.346574 + .5 * 26.937873 = 13.122363
    kl = metrics.pairwise_kl([[[1.0, 0.0]], [[0.5, 0.5]]], eps=1e-12)
    np.testing.assert_allclose(kl, [[0.0, LN2], [13.122363, 0.0]], atol=1e-5)


def test_identical_members_have_zero_diversity():
    members = np.stack([MEMBERS[0]] * 3)
    assert metrics.mean_disagreement(members) == 0.0
    np.testing.assert_array_equal(metrics.pairwise_kl(members), np.zeros((3, 3)))


@pytest.mark.parametrize("fn", [metrics.pairwise_disagreement, metrics.mean_disagreement, metrics.pairwise_kl, metrics.mean_kl])
def test_diversity_rejects_one_member_and_mismatched_shapes(fn):
    with pytest.raises(ValueError, match=r"at least 2.*\(1, 4, 3\)"):
        fn(MEMBERS[:1])
    with pytest.raises(ValueError, match=r"same shape.*\(4, 3\).*\(3, 3\)"):
        fn([MEMBERS[0], MEMBERS[1][:3]])
    with pytest.raises(ValueError, match=r"\(M, N, C\).*\(3, 4\)"):
        fn(MEMBERS[:, :, 0])


# Uncertainty. Two members, two examples, two classes:
#   example 0: members [1, 0] and [0, 1] -> mean [.5, .5]
#   example 1: members [.5, .5] and [.5, .5] -> mean [.5, .5]
UNC_MEMBERS = np.array([[[1.0, 0.0], [0.5, 0.5]], [[0.0, 1.0], [0.5, 0.5]]])


def test_predictive_entropy_matches_hand_values():
    # H[.25, .75] = -(.25 ln .25 + .75 ln .75) = .25*1.386294 + .75*.287682 = .346574 + .215762 = .562335
    # H[1, 0] = 0 (0 ln 0 = 0); H[1/3]*3 = ln 3 = 1.098612
    entropy = metrics.predictive_entropy([[0.25, 0.75], [1.0, 0.0]])
    np.testing.assert_allclose(entropy, [0.562335, 0.0], atol=1e-6)
    np.testing.assert_allclose(metrics.predictive_entropy(np.full((1, 3), 1 / 3)), [1.098612], atol=1e-6)


def test_expected_entropy_and_mutual_information_match_hand_values():
    # expected entropy: example 0: (0 + 0)/2 = 0; example 1: (ln2 + ln2)/2 = ln 2
    np.testing.assert_allclose(metrics.expected_entropy(UNC_MEMBERS), [0.0, LN2], atol=1e-6)
    # MI = H[mean] - expected: example 0: ln2 - 0 = ln2 (members disagree); example 1: ln2 - ln2 = 0
    np.testing.assert_allclose(metrics.mutual_information(UNC_MEMBERS), [LN2, 0.0], atol=1e-6)
    # H[mean] = expected + MI for random members too
    members = np.random.default_rng(0).dirichlet(np.ones(5), size=(4, 7))
    total = metrics.predictive_entropy(members.mean(axis=0))
    split = metrics.expected_entropy(members) + metrics.mutual_information(members)
    np.testing.assert_allclose(total, split, atol=1e-12)


def test_uncertainty_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\(N, C\).*\(4,\)"):
        metrics.predictive_entropy(np.ones(4))
    with pytest.raises(ValueError, match=r"\(M, N, C\).*\(2, 2\)"):
        metrics.mutual_information(np.ones((2, 2)))


# Gibbs cross-entropy: two members, two examples, labels [0, 1].
GIBBS_MEMBERS = np.array([[[0.8, 0.2], [0.4, 0.6]], [[0.6, 0.4], [0.1, 0.9]]])
GIBBS_LABELS = np.array([0, 1])
# member 0: (-ln .8 - ln .6) / 2 = (.223144 + .510826) / 2 = .366985
# member 1: (-ln .6 - ln .9) / 2 = (.510826 + .105361) / 2 = .308094;  mean over members:
GIBBS = 0.3375393
# ensemble mean [[.7, .3], [.25, .75]]: (-ln .7 - ln .75) / 2 = (.356675 + .287682) / 2
ENSEMBLE_NLL = 0.3221785


def test_gibbs_cross_entropy_matches_hand_values():
    assert metrics.gibbs_cross_entropy(GIBBS_LABELS, GIBBS_MEMBERS) == pytest.approx(GIBBS, abs=1e-6)
    assert metrics.gibbs_cross_entropy(GIBBS_LABELS, list(GIBBS_MEMBERS)) == pytest.approx(GIBBS, abs=1e-6)
    assert metrics.negative_log_likelihood(GIBBS_LABELS, GIBBS_MEMBERS.mean(axis=0)) == pytest.approx(ENSEMBLE_NLL, abs=1e-6)
    # One member: its own NLL. A zero probability costs -ln(eps).
    assert metrics.gibbs_cross_entropy(GIBBS_LABELS, GIBBS_MEMBERS[:1]) == pytest.approx(0.366985, abs=1e-6)
    zero = np.array([[[1.0, 0.0], [0.5, 0.5]]])
    assert metrics.gibbs_cross_entropy([1, 0], zero, eps=1e-12) == pytest.approx((27.631021 + LN2) / 2, abs=1e-5)


def test_gibbs_cross_entropy_bad_inputs():
    with pytest.raises(ValueError, match=r"\(M, N, C\)"):
        metrics.gibbs_cross_entropy(GIBBS_LABELS, GIBBS_MEMBERS[0])
    with pytest.raises(ValueError, match=r"y_true must have shape \(2,\)"):
        metrics.gibbs_cross_entropy([0, 1, 1], GIBBS_MEMBERS)
    with pytest.raises(ValueError, match=r"\[0, 2\), got \[2\]"):
        metrics.gibbs_cross_entropy([0, 2], GIBBS_MEMBERS)
