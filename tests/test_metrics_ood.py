"""OoD scores, AUROC and AUPR (OoD = positive class) against hand-computed values."""

import ast
import pathlib

import numpy as np
import pytest
import tensorflow as tf

from tf_freetickets import metrics
from tf_freetickets.metrics import ood

# In-distribution examples are confident, OoD ones less so (2 classes).
IN_PROBS = np.array([[0.9, 0.1], [0.6, 0.4]])
OUT_PROBS = np.array([[0.5, 0.5], [0.7, 0.3]])
# max_prob scores, 1 - max p: in [0.1, 0.4], out [0.5, 0.3]
# AUROC = P(out > in) over the 4 pairs: .5>.1 yes, .5>.4 yes, .3>.1 yes, .3>.4 no -> 3/4
# AUPR, scores descending: .5 (out) P=1/1 R=1/2; .4 (in) P=1/2 R=1/2; .3 (out) P=2/3 R=1; .1 (in) P=2/4 R=1
#   AP = sum (R_k - R_{k-1}) P_k = .5*1 + .5*2/3 = 0.833333
AUROC = 0.75
AUPR = 0.8333333


def test_ood_scores_match_hand_values():
    probs = [[0.9, 0.1], [0.5, 0.5]]
    np.testing.assert_allclose(ood.ood_scores(probs, "max_prob"), [0.1, 0.5], atol=1e-12)
    # H[.9, .1] = -(.9 ln .9 + .1 ln .1) = .9*.105361 + .1*2.302585 = .094825 + .230259 = .325083; H[.5, .5] = ln 2
    np.testing.assert_allclose(ood.ood_scores(probs, "entropy"), [0.325083, 0.693147], atol=1e-6)
    np.testing.assert_allclose(ood.ood_scores(tf.constant(probs)), [0.325083, 0.693147], atol=1e-6)


def test_ood_scores_rejects_unknown_score():
    with pytest.raises(ValueError, match="max_softmax"):
        ood.ood_scores(IN_PROBS, "max_softmax")


def test_auroc_and_aupr_match_hand_values():
    in_scores, out_scores = [0.1, 0.4], [0.5, 0.3]
    assert metrics.auroc(in_scores, out_scores) == pytest.approx(AUROC, abs=1e-12)
    assert metrics.aupr(in_scores, out_scores) == pytest.approx(AUPR, abs=1e-6)


def test_auroc_and_aupr_unequal_sizes_hand_values():
    in_scores, out_scores = [0.1, 0.4, 0.35], [0.8, 0.3]
    # AUROC: 0.8 beats all 3 in-scores, 0.3 beats only 0.1 -> 4/6
    assert metrics.auroc(in_scores, out_scores) == pytest.approx(0.6666667, abs=1e-6)
    # descending: .8 out (P 1, R .5), .4 in, .35 in, .3 out (P 2/4, R 1) -> AP = .5*1 + .5*.5 = 0.75
    assert metrics.aupr(in_scores, out_scores) == pytest.approx(0.75, abs=1e-12)
    # ties count half: in [0.5], out [0.5] -> AUROC 0.5
    assert metrics.auroc([0.5], [0.5]) == pytest.approx(0.5, abs=1e-12)


def test_ood_is_the_positive_class():
    # OoD scored higher everywhere: perfect detection; swapping the roles gives the worst AUROC.
    assert metrics.auroc([0.1, 0.2], [0.8, 0.9]) == 1.0
    assert metrics.auroc([0.8, 0.9], [0.1, 0.2]) == 0.0
    # AP with OoD last: descending .9 in, .8 in, .2 out (P 1/3, R .5), .1 out (P 2/4, R 1) -> .5/3 + .5*.5
    assert metrics.aupr([0.8, 0.9], [0.1, 0.2]) == pytest.approx(0.4166667, abs=1e-6)


@pytest.mark.parametrize("score", ["max_prob", "entropy"])
def test_ood_detection_matches_hand_values(score):
    # With 2 classes entropy is a decreasing function of max prob, so both scores rank alike.
    result = metrics.ood_detection(IN_PROBS, OUT_PROBS, score=score)
    assert set(result) == {"auroc", "aupr", "fpr95"}
    # 2 in-distribution examples: 95% of them needs both, so the threshold is the larger in-score
    # (max_prob .4); out-scores .5 and .3: only .3 <= .4 is accepted -> FPR 1/2 (entropy ranks alike).
    assert result["fpr95"] == pytest.approx(0.5, abs=1e-12)
    assert result["auroc"] == pytest.approx(AUROC, abs=1e-12)
    assert result["aupr"] == pytest.approx(AUPR, abs=1e-6)


def test_entropy_and_max_prob_can_disagree_with_three_classes():
    # in: [.5, .5, 0] -> 1-max .5, H = ln2 = .693; out: [.6, .2, .2] -> 1-max .4, H = .950271
    #   (H[.6,.2,.2] = .6*.510826 + 2*.2*1.609438 = .306496 + .643775 = .950271)
    in_probs, out_probs = [[0.5, 0.5, 0.0]], [[0.6, 0.2, 0.2]]
    assert metrics.ood_detection(in_probs, out_probs, "max_prob")["auroc"] == 0.0
    assert metrics.ood_detection(in_probs, out_probs, "entropy")["auroc"] == 1.0


def test_bad_inputs_raise_value_error():
    with pytest.raises(ValueError, match=r"in_scores.*\(2, 1\)"):
        metrics.auroc(np.ones((2, 1)), [0.5])
    with pytest.raises(ValueError, match=r"out_scores.*\(0,\)"):
        metrics.aupr([0.5], [])
    with pytest.raises(ValueError, match="finite"):
        metrics.auroc([np.nan], [0.5])
    with pytest.raises(ValueError, match=r"\(2, 2\).*\(1, 3\)"):
        metrics.ood_detection(IN_PROBS, [[0.2, 0.3, 0.5]])
    with pytest.raises(ValueError, match=r"out_probs.*\(3,\)"):
        metrics.ood_detection(IN_PROBS, [0.2, 0.3, 0.5])


def test_scikit_learn_is_imported_lazily():
    tree = ast.parse(pathlib.Path(ood.__file__).read_text())
    top_level = [node for node in tree.body if isinstance(node, (ast.Import, ast.ImportFrom))]
    names = [alias.name for node in top_level for alias in node.names] + [
        node.module for node in top_level if isinstance(node, ast.ImportFrom)
    ]
    assert not any(name and name.split(".")[0] == "sklearn" for name in names)


def test_fpr_at_95_tpr_matches_hand_values():
    in_scores = np.arange(1, 21) / 10.0  # 0.1 .. 2.0, 20 in-distribution examples
    out_scores = [0.5, 1.85, 1.9, 1.95, 3.0]
    # 95% of 20 = 19 accepted: threshold = 19th smallest in-score, 1.9; out <= 1.9: .5, 1.85, 1.9 -> 3/5
    assert metrics.fpr_at_tpr(in_scores, out_scores) == pytest.approx(0.6, abs=1e-12)
    # 50%: 10 accepted, threshold 1.0; out <= 1.0: .5 -> 1/5
    assert metrics.fpr_at_tpr(in_scores, out_scores, tpr=0.5) == pytest.approx(0.2, abs=1e-12)
    # 100%: threshold 2.0; out <= 2.0: .5, 1.85, 1.9, 1.95 -> 4/5. OoD scored above every in-score: FPR 0
    assert metrics.fpr_at_tpr(in_scores, out_scores, tpr=1.0) == pytest.approx(0.8, abs=1e-12)
    assert metrics.fpr_at_tpr(in_scores, [2.5, 3.0]) == 0.0
    # Ties: half of [.2, .2, .2, .9] needs 2 accepted, threshold .2 (TPR reached 3/4); out [.2, .5] -> 1/2
    assert metrics.fpr_at_tpr([0.2, 0.2, 0.2, 0.9], [0.2, 0.5], tpr=0.5) == pytest.approx(0.5, abs=1e-12)


def test_fpr_at_95_tpr_equals_the_first_roc_point_with_in_distribution_positive():
    # Independent reference: scikit-learn's ROC curve with in-distribution as the positive class
    # (score -s, so higher = more in-distribution); the FPR of its first point with TPR >= .95.
    from sklearn.metrics import roc_curve

    rng = np.random.default_rng(0)
    in_scores = np.round(rng.normal(0.0, 1.0, 997), 2)  # rounded: ties occur
    out_scores = np.round(rng.normal(1.5, 1.0, 403), 2)
    labels = np.concatenate([np.ones(997), np.zeros(403)])
    fpr, tpr, _ = roc_curve(labels, -np.concatenate([in_scores, out_scores]))
    expected = fpr[np.argmax(tpr >= 0.95)]
    assert metrics.fpr_at_tpr(in_scores, out_scores) == pytest.approx(expected, abs=1e-12)
    assert 0.2 < expected < 0.8


@pytest.mark.parametrize("tpr", [0.0, 1.5, -0.1, True, "0.95"])
def test_fpr_at_tpr_rejects_bad_tpr(tpr):
    with pytest.raises(ValueError, match="tpr"):
        metrics.fpr_at_tpr([0.1, 0.2], [0.3], tpr=tpr)
