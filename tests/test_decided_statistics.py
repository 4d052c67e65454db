"""The decided study's statistics (tools/reporting/significance.py) against hand computations and scipy."""

import math

import pytest
from scipy import stats

from reporting.claims import Claim
from reporting.significance import MIN_RUNS, decide, higher_is_better, holm, verdict, welch_contrast

A, B = [1.0, 2.0, 3.0], [4.0, 6.0, 8.0, 10.0]  # means 2 and 7, sample variances 1 and 20/3


def test_welch_difference_matches_a_hand_computation_and_scipy():
    test = welch_contrast([(1, A), (-1, B)])
    # se^2 = 1/3 + (20/3)/4 = 2; df = 2^2 / ((1/3)^2 / 2 + (5/3)^2 / 3) = 216/53.
    assert test.estimate == pytest.approx(-5.0)
    assert test.se == pytest.approx(math.sqrt(2.0))
    assert test.df == pytest.approx(216 / 53)
    assert test.t == pytest.approx(-5.0 / math.sqrt(2.0))
    half = stats.t.ppf(0.975, 216 / 53) * math.sqrt(2.0)
    # t_{0.975, 4.0755} = 2.7563, between the tables' 2.7764 (df 4) and 2.5706 (df 5).
    assert half / math.sqrt(2.0) == pytest.approx(2.7563, abs=1e-4) and 2.5706 < half / math.sqrt(2.0) < 2.7764
    assert test.ci == pytest.approx((-8.8980, -1.1020), abs=1e-4)
    reference = stats.ttest_ind(A, B, equal_var=False)
    assert test.p == pytest.approx(reference.pvalue) and test.p == pytest.approx(0.023377, abs=1e-6)
    assert test.ci == pytest.approx(tuple(reference.confidence_interval(0.95)))
    # One-sided p of each direction: "A below B" is half the two-sided p, "A above B" the rest.
    assert test.one_sided_p(-1) == pytest.approx(stats.ttest_ind(A, B, equal_var=False, alternative="less").pvalue)
    assert test.one_sided_p(-1) == pytest.approx(test.p / 2) and test.one_sided_p(+1) == pytest.approx(1 - test.p / 2)


def test_detectable_difference_is_the_power_formula_and_has_the_power_it_claims():
    test = welch_contrast([(1, A), (-1, B)])
    # (t_{0.975, df} + t_{0.8, df}) * se with df = 216/53: 2.7563 + 0.9389 (t_{0.8, 4.08}) = 3.6952, times sqrt(2).
    assert stats.t.ppf(0.8, 216 / 53) == pytest.approx(0.9389, abs=1e-4)
    assert test.detectable() == pytest.approx((2.7563 + 0.9389) * math.sqrt(2.0), abs=1e-3)
    # Its power, read back from the noncentral t: a true difference of that size is found ~80% of the time.
    critical = stats.t.ppf(0.975, test.df)
    power = stats.nct.sf(critical, test.df, test.detectable() / test.se)
    assert power == pytest.approx(0.8, abs=0.03)
    assert welch_contrast([(1, [0.62] * 5), (-1, [1.0] * 15)]).detectable() == 0.0
    assert math.isnan(welch_contrast([(1, [0.5]), (-1, [0.1, 0.2])]).detectable())


def test_welch_contrast_of_three_groups_matches_a_hand_computation():
    c = [0.0, 2.0]  # mean 1, variance 2
    test = welch_contrast([(1, A), (-0.5, B), (-0.5, c)])
    terms = [1.0 / 3, 0.25 * (20 / 3) / 4, 0.25 * 2.0 / 2]  # c_i^2 s_i^2 / n_i
    dofs = [2, 3, 1]
    df = sum(terms) ** 2 / sum(t**2 / d for t, d in zip(terms, dofs))
    assert test.estimate == pytest.approx(2.0 - (7.0 + 1.0) / 2)
    assert test.se == pytest.approx(math.sqrt(sum(terms))) and test.df == pytest.approx(df)
    assert test.p == pytest.approx(2 * stats.t.sf(abs(test.estimate) / math.sqrt(sum(terms)), df))


def test_an_approaches_claim_is_tested_against_the_per_group_midpoints_when_given():
    rows = {
        "row": [{"accuracy": v} for v in (0.905, 0.91, 0.915, 0.9, 0.91)],
        "dense": [{"accuracy": v} for v in (0.89, 0.90, 0.895, 0.9, 0.905)],
        "ensemble": [{"accuracy": v} for v in (0.91, 0.915, 0.92, 0.91, 0.92)],
    }
    claim = Claim("P", "approaches", "row", "dense", "accuracy", kind="closes_gap", target="ensemble")
    middle = [0.9, 0.9075, 0.9075, 0.905, 0.9125]
    (independent,) = decide([claim], rows)
    (grouped,) = decide([claim], rows, midpoints={("dense", "ensemble", "accuracy"): middle})
    by_rows = welch_contrast([(1, [r["accuracy"] for r in rows["row"]]), (-0.5, [r["accuracy"] for r in rows["dense"]]),
                              (-0.5, [r["accuracy"] for r in rows["ensemble"]])])  # fmt: skip
    assert independent["test"] == by_rows and len(independent["stats"]) == 3
    assert grouped["test"] == welch_contrast([(1, [r["accuracy"] for r in rows["row"]]), (-1, middle)])
    # mean 0.9065; squared deviations sum to 8.25e-5, so the sample std is sqrt(8.25e-5 / 4)
    assert grouped["reference"] == pytest.approx(0.9065)
    assert grouped["stats"][3] == (pytest.approx(0.9065), pytest.approx(math.sqrt(8.25e-5 / 4)), 5)
    # No seed group with both yet: the midpoint of the means, no p (out of the Holm family), incomplete.
    (early,) = decide([claim], rows, midpoints={}, complete_groups={("row", "accuracy"): 5, ("dense", "accuracy"): 5})
    assert early["test"].estimate == pytest.approx(0.908 - (0.898 + 0.915) / 2) and math.isnan(early["p_holm"])
    assert early["verdict"] == "incomplete (0 seed groups of 5)" and len(early["stats"]) == 3


def test_welch_without_spread_or_with_one_run():
    same = welch_contrast([(1, [0.62] * 5), (-1, [1.0] * 15)])
    assert (same.p, same.ci, same.t) == (0.0, (pytest.approx(-0.38), pytest.approx(-0.38)), -math.inf)
    assert same.one_sided_p(-1) == 0.0 and same.one_sided_p(+1) == 1.0
    assert welch_contrast([(1, [1.0, 1.0]), (-1, [1.0, 1.0])]).p == 1.0
    one = welch_contrast([(1, [0.5]), (-1, [0.1, 0.2])])
    assert one.estimate == pytest.approx(0.35) and math.isnan(one.p) and math.isnan(one.ci[0])
    assert math.isnan(one.one_sided_p(1))
    with pytest.raises(ValueError, match="at least one value"):
        welch_contrast([(1, []), (-1, [1.0])])


def test_holm_on_a_hand_example():
    # sorted: 0.005 x 4 = 0.02; 0.01 x 3 = 0.03; 0.03 x 2 = 0.06; 0.04 x 1 = 0.04 -> 0.06 (monotone).
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.5, 0.6]) == [1.0, 1.0]  # capped at 1
    adjusted = holm([0.01, math.nan, 0.02])  # NaN stays NaN and is not counted: m = 2
    assert adjusted[0] == pytest.approx(0.02) and math.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.02)
    assert holm([]) == []


def test_holm_matches_statsmodels():
    multitest = pytest.importorskip("statsmodels.stats.multitest")
    pvalues = [0.001, 0.2, 0.013, 0.04, 0.0049, 0.5, 0.012, 0.03]
    expected = multitest.multipletests(pvalues, method="holm")[1]
    assert holm(pvalues) == pytest.approx(list(expected))


@pytest.mark.parametrize(
    "kind, favourable, p_holm, ci, margin, runs, expected",
    [
        ("better", 0.01, 0.01, (0.005, 0.015), 0.0, 5, "holds"),
        ("better", -0.01, 0.01, (-0.015, -0.005), 0.0, 5, "does not hold"),
        ("better", 0.01, 0.2, (-0.005, 0.025), 0.0, 5, "inconclusive"),
        ("better", 0.01, 0.001, (0.005, 0.015), 0.0, 4, "incomplete (4 runs of 5)"),
        ("closes_gap", 0.002, 0.04, (0.001, 0.003), 0.0, 9, "holds"),
        # no worse, margin 0.005: a CI within the margin holds, one beyond it does not, one across it is inconclusive
        ("no_worse", -0.001, 0.6, (-0.004, 0.002), 0.005, 5, "holds"),
        ("no_worse", -0.008, 0.08, (-0.012, -0.006), 0.005, 5, "does not hold"),
        ("no_worse", -0.003, 0.3, (-0.007, 0.001), 0.005, 5, "inconclusive"),
        ("no_worse", -0.002, 0.01, (-0.003, -0.001), 0.005, 5, "does not hold"),  # a significant loss
        ("no_worse", 0.004, 0.01, (0.002, 0.006), 0.005, 5, "holds"),
        ("at_most", 0.38, 0.0, (0.38, 0.38), 0.0, 5, "holds"),
        ("at_most", -0.1, 0.0, (-0.1, -0.1), 0.0, 5, "does not hold"),
        ("no_worse", 0.0, math.nan, (math.nan, math.nan), 0.005, 5, "inconclusive"),
    ],
)
def test_verdict_rule(kind, favourable, p_holm, ci, margin, runs, expected):
    assert verdict(kind, favourable, p_holm, ci, margin, runs) == expected


def test_decide_adjusts_over_the_table_and_marks_incomplete_rows():
    rows = {
        "a": [{"accuracy": v, "ece": 0.02 + v / 100} for v in (0.90, 0.91, 0.92, 0.905, 0.915)],
        "b": [{"accuracy": v, "ece": 0.05 + v / 100, "ts_ece": 0.03 + v / 100} for v in (0.85, 0.86, 0.84, 0.855, 0.845)],
        "short": [{"accuracy": v} for v in (0.95, 0.96)],
    }
    claims = [
        Claim("P", "higher accuracy", "a", "b", "accuracy"),
        Claim("P", "lower ECE than b + TS", "a", "b", "ece", baseline_metric="ts_ece"),
        Claim("P", "two runs only", "short", "b", "accuracy"),
        Claim("P", "unmeasured", "a", "missing", "accuracy"),
    ]
    accuracy, ece, short, missing = decide(claims, rows)
    assert missing["verdict"] == "not measured" and "p_holm" not in missing
    pairs = (("a", "accuracy", "accuracy"), ("a", "ece", "ts_ece"), ("short", "accuracy", "accuracy"))
    raw = [welch_contrast([(1, [r[k] for r in rows[x]]), (-1, [r[kb] for r in rows["b"]])]).p for x, k, kb in pairs]
    for result, p_holm in zip((accuracy, ece, short), holm(raw)):
        assert result["p_holm"] == pytest.approx(p_holm)  # a family of the three measured claims
    assert accuracy["verdict"] == "holds" and accuracy["stats"][0] == (pytest.approx(0.91), pytest.approx(0.0079057), 5)
    assert ece["verdict"] == "holds" and ece["test"].estimate == pytest.approx(0.0291 - 0.0385)
    assert ece["p_one_sided"] == pytest.approx(ece["test"].p / 2)  # lower is better: the claimed side
    assert short["verdict"] == f"incomplete (2 runs of {MIN_RUNS})"
    # Holm's step-down levels: the smallest p is compared with 0.05/3, the next with 0.05/2, the largest with 0.05.
    order = sorted(range(3), key=lambda i: raw[i])
    levels = {order[0]: 0.05 / 3, order[1]: 0.05 / 2, order[2]: 0.05}
    assert [r["holm_level"] for r in (accuracy, ece, short)] == [pytest.approx(levels[i]) for i in range(3)]
    assert "holm_level" not in missing


def test_identical_values_differ_by_nothing_whatever_their_counts():
    # The mean of [0.1] * 3 is 0.10000000000000002 in floating point; identical values are taken as they are.
    test = welch_contrast([(1, [0.1] * 3), (-1, [0.1] * 9)])
    assert test.estimate == 0.0 and test.p == 1.0 and test.ci == (0.0, 0.0)
    assert verdict("at_most", -test.estimate, 1.0, test.ci, 0.0, 5) == "holds"


def test_a_value_that_is_not_finite_leaves_the_claim_unmeasured_and_out_of_the_family():
    test = welch_contrast([(1, [math.nan, 1.0]), (-1, [1.0, 1.0])])
    assert all(math.isnan(x) for x in (test.estimate, test.se, test.p, *test.ci))
    rows = {
        "a": [{"accuracy": v} for v in (0.90, 0.91, 0.92, 0.905, 0.915)],
        "b": [{"accuracy": v} for v in (0.85, 0.86, 0.84, 0.855, 0.845)],
        "bad": [{"accuracy": v} for v in (0.95, math.nan, 0.96, 0.94, 0.95)],
    }
    good, bad = decide([Claim("P", "a over b", "a", "b", "accuracy"), Claim("P", "bad over b", "bad", "b", "accuracy")], rows)
    assert bad["verdict"] == "not measured (a run's value is NaN or infinite)" and "p_holm" not in bad
    assert good["p_holm"] == pytest.approx(good["test"].p)  # a family of one: the bad claim does not count


def test_complete_seed_groups_decide_completeness_when_given():
    rows = {
        "a": [{"accuracy": v} for v in (0.90, 0.91, 0.92, 0.905, 0.915, 0.91)],
        "b": [{"accuracy": v} for v in (0.85, 0.86, 0.84, 0.855, 0.845, 0.85)],
    }
    claim = Claim("P", "a over b", "a", "b", "accuracy")
    (by_runs,) = decide([claim], rows)
    (by_groups,) = decide([claim], rows, complete_groups={("a", "accuracy"): 2, ("b", "accuracy"): 5})
    assert by_runs["verdict"] == "holds" and by_groups["verdict"] == "incomplete (2 seed groups of 5)"
    (complete,) = decide([claim], rows, complete_groups={("a", "accuracy"): 5, ("b", "accuracy"): 5})
    assert complete["verdict"] == "holds"


def test_metric_directions():
    assert higher_is_better("accuracy") and higher_is_better("ood_auroc_natural_patches")
    assert not higher_is_better("ts_nll") and not higher_is_better("ece_10bins") and not higher_is_better("ood_fpr95_digits")
    with pytest.raises(KeyError, match="No direction"):
        higher_is_better("disagreement")
