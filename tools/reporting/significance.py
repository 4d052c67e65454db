"""Deciding claims: Welch's t-test with a confidence interval, Holm's step-down adjustment and the verdicts.

The first study judged each claim by Welch's t against a fixed |t| >= 2
(`claims.judge`). The decided study (`long_v2`) replaces that with tests:

- `welch_contrast`: a difference of means (or any linear contrast of the
  means of independent groups, e.g. a row against the midpoint of two
  others) with Welch's standard error, Welch–Satterthwaite degrees of
  freedom, the two-sided p from Student's t and a 95% confidence interval
  from its quantile (scipy.stats.t);
- `Welch.detectable`: the difference those runs detect with 80% power
  (the sensitivity behind an inconclusive verdict);
- `holm`: Holm's (1979) step-down adjustment of the p values of a family
  (the claims of one table);
- `verdict`: holds / does not hold / inconclusive / incomplete, by the rule
  of `verdict_rule`, printed under each table;
- `decide`: every claim of a table, from the per-run records.
"""

import dataclasses
import math

import numpy as np
from scipy import stats

from reporting.claims import HIGHER_IS_BETTER
from reporting.tables import mean_std

ALPHA = 0.05
CONFIDENCE = 0.95
POWER = 0.8  # the power of the "detectable" difference each claim's runs give
MIN_RUNS = 5  # complete seed groups each row of a claim needs before it gets a verdict (the study's 5)


@dataclasses.dataclass(frozen=True)
class Welch:
    """Welch's test of a contrast sum_i c_i mean_i of independent groups against 0.

    Attributes:
      estimate: the contrast, e.g. mean(a) - mean(b).
      se: its standard error sqrt(sum_i c_i^2 s_i^2 / n_i).
      df: Welch–Satterthwaite degrees of freedom (inf when se is 0).
      t: estimate / se (0 or +-inf when se is 0).
      p: two-sided p value (NaN when a group has fewer than 2 values).
      ci: (low, high) confidence interval of the estimate (NaN as p).
    """

    estimate: float
    se: float
    df: float
    t: float
    p: float
    ci: tuple

    def one_sided_p(self, sign):
        """p of H0 "sign * contrast <= 0" against H1 "sign * contrast > 0" (sign +1 or -1)."""
        if math.isnan(self.p):
            return math.nan
        if self.se == 0.0:
            return 0.0 if sign * self.estimate > 0 else 1.0
        return float(stats.t.sf(sign * self.t, self.df))

    def detectable(self, power=POWER, alpha=ALPHA):
        """The smallest |contrast| this test detects with probability `power` (two-sided, level `alpha`).

        The sensitivity of the runs as they are: (t_{1-alpha/2, df} + t_{power, df}) * se, with the
        observed se and Welch df (the usual normal-approximation formula with Student quantiles).
        A claim whose difference is inconclusive and below this could not have been decided by these
        runs; more runs shrink it by about sqrt(n). NaN without a p; 0 without spread.
        """
        if math.isnan(self.p):
            return math.nan
        if self.se == 0.0:
            return 0.0
        return float((stats.t.ppf(1 - alpha / 2, self.df) + stats.t.ppf(power, self.df)) * self.se)


def welch_contrast(groups, confidence=CONFIDENCE):
    """Welch's test of sum_i c_i mean(values_i) against 0.

    Args:
      groups: sequence of (coefficient c_i, values of group i); [(1, a), (-1, b)]
        is the two-sample test of mean(a) - mean(b).
      confidence: level of the confidence interval.

    Returns:
      `Welch`. With no spread in any group (se 0) the p value is 0 when the
      estimate differs from 0 and 1 otherwise, and the interval has width 0;
      with a group of one value only the estimate is given; with a value that
      is NaN or infinite, nothing (every field NaN).
    """
    estimate, terms = 0.0, []
    nan = math.nan
    for coefficient, values in groups:
        values = np.asarray(values, dtype=np.float64)
        if values.size == 0:
            raise ValueError("welch_contrast needs at least one value per group.")
        if not np.all(np.isfinite(values)):
            return Welch(nan, nan, nan, nan, nan, (nan, nan))
        spread = np.ptp(values) > 0  # identical values: no spread, and their mean is the value (no rounding noise)
        estimate += coefficient * (float(values.mean()) if spread else float(values[0]))
        if values.size > 1:
            terms.append((coefficient**2 * (float(values.var(ddof=1)) if spread else 0.0) / values.size, values.size - 1))
    if len(terms) < len(groups):
        return Welch(estimate, nan, nan, nan, nan, (nan, nan))
    variance = sum(term for term, _ in terms)
    if variance == 0.0:
        t = 0.0 if estimate == 0.0 else math.copysign(math.inf, estimate)
        return Welch(estimate, 0.0, math.inf, t, 1.0 if estimate == 0.0 else 0.0, (estimate, estimate))
    df = variance**2 / sum(term**2 / dof for term, dof in terms if term > 0.0)
    se = math.sqrt(variance)
    t = estimate / se
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    return Welch(estimate, se, df, t, float(2.0 * stats.t.sf(abs(t), df)), (estimate - half, estimate + half))


def holm(pvalues):
    """Holm's step-down adjusted p values, in the order given.

    With the m p values that are not NaN sorted p_(1) <= ... <= p_(m), the
    adjusted p_(k) is max over j <= k of min(1, (m - j + 1) p_(j)); a claim
    is rejected at level alpha when its adjusted p < alpha. NaN stays NaN and
    does not count in m.
    """
    p = np.asarray(pvalues, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    present = np.flatnonzero(~np.isnan(p))
    order = present[np.argsort(p[present], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()


def higher_is_better(metric):
    """Whether a larger value of a record key is better: `claims.HIGHER_IS_BETTER`, then by the key's prefix."""
    if metric in HIGHER_IS_BETTER:
        return HIGHER_IS_BETTER[metric]
    if metric.startswith(("ood_auroc", "ood_aupr", "accuracy", "corruption_accuracy", "val_accuracy")):
        return True
    if metric.startswith(("ts_", "nll", "ece", "adaptive_ece", "brier", "gibbs_nll", "ood_fpr95", "corruption_ece")):
        return False
    raise KeyError(f"No direction known for the metric {metric!r}.")


MARGIN_KINDS = ("no_worse", "at_most")
_VERDICT_RULE_TEMPLATE = (
    "**Verdicts.** Each claim compares its row with its baseline over their runs: the difference of means (row minus "
    "baseline), its 95% confidence interval (Welch's t, Welch–Satterthwaite degrees of freedom), Welch's two-sided "
    "p, the one-sided p of the claimed direction (H1: the difference lies in the direction the claim states) and "
    "the two-sided p Holm-adjusted over all the claims of the table that have one. A claim **holds** when its "
    f"Holm-adjusted p < {ALPHA:g} and the difference lies in the claimed direction; it **does not hold** when its "
    f"Holm-adjusted p < {ALPHA:g} and the difference lies the other way, or, for a no-worse or at-most claim, when the "
    "whole 95% CI lies beyond the claim's margin; a no-worse or at-most claim also **holds** when its whole 95% CI "
    "lies within its margin (non-inferiority, with no significant difference the other way); every other claim is "
    "**inconclusive**. {completeness}{approaches}A cost that does not vary over runs (training FLOPs) has a "
    "zero-width CI, and p 0 when the means differ. \"Detectable\" is the "
    f"sensitivity of the claim's runs: the difference they would detect with {POWER:.0%} power at the claim's Holm "
    f"level α/(m − k + 1) (α = {ALPHA:g}, k its rank by p among the m claims of the table), "
    "(t_{{1−level/2}} + t_{{power}}) × the observed standard error with Welch df; it describes these runs, not a "
    "power the study was planned for."
)


_APPROACHES_SENTENCE = (
    "\"Approaches the deep ensemble\" is tested as the row against the midpoint of the dense model and the dense "
    "deep ensemble, taken within each seed group (half the mean of the group's dense runs plus half its deep "
    "ensemble, which averages those same runs; Welch's test of the row against these midpoints, so the ensemble's "
    "dependence on its runs stays inside each group). "
)


def verdict_rule(min_count=MIN_RUNS, unit="seed groups", approaches=True):
    """The printed verdict rule: its completeness sentence for `min_count` complete `unit` ("seed groups" or "runs"),
    and with `approaches` how "approaches the deep ensemble" claims are tested."""
    if unit == "seed groups":
        completeness = (
            f"A claim whose rows have fewer than {min_count} complete seed groups (a group of a row with replicas is "
            f"its runs of seeds s, s + 1, ... of study seed s) is **incomplete (n seed groups of {min_count})**, n the "
            "fewest of its rows, and gets no verdict."
        )
    else:
        completeness = (
            f"A claim whose rows have fewer than {min_count} runs is **incomplete (n runs of {min_count})**, n the "
            "fewest runs of its rows, and gets no verdict."
        )
    return _VERDICT_RULE_TEMPLATE.format(completeness=completeness + " ",
                                         approaches=_APPROACHES_SENTENCE if approaches else "")


def verdict(kind, favourable, p_holm, ci, margin=0.0, runs=MIN_RUNS, min_runs=MIN_RUNS, unit="runs"):
    """The verdict of one claim by `verdict_rule`.

    Args:
      kind: "better", "closes_gap", "no_worse" or "at_most".
      favourable: the difference signed so that positive lies in the claimed direction.
      p_holm: the claim's Holm-adjusted two-sided p (NaN when it has none).
      ci: (low, high) of the difference in the same sign as `favourable`.
      margin: for "no_worse" / "at_most": the loss the claim tolerates (>= 0).
      runs: the fewest runs (or complete seed groups) of the claim's rows.
      min_runs: runs (or complete seed groups) each row needs for a verdict.
      unit: what `runs` counts, as the verdict names it ("runs" or "seed groups").
    """
    if runs < min_runs:
        return f"incomplete ({runs} {unit} of {min_runs})"
    significant = not math.isnan(p_holm) and p_holm < ALPHA
    bounded = kind in MARGIN_KINDS and not math.isnan(ci[0])
    if (significant and favourable < 0) or (bounded and ci[1] < -margin):
        return "does not hold"
    if (significant and favourable > 0) or (bounded and ci[0] >= -margin):
        return "holds"
    return "inconclusive"


def _values(rows, row, metric):
    """The values of `metric` over the runs of `row` that have it."""
    return [r[metric] for r in rows.get(row, []) if r.get(metric) is not None]


def _groups(claim):
    """[(row, metric, coefficient)] of the claim's contrast: row minus baseline, or minus the midpoint of two."""
    if claim.kind == "closes_gap":  # the row against the midpoint of the baseline and the target
        return [(claim.row, claim.metric, 1.0), (claim.baseline, claim.metric, -0.5), (claim.target, claim.metric, -0.5)]
    return [(claim.row, claim.metric, 1.0), (claim.baseline, claim.baseline_metric or claim.metric, -1.0)]


def _test(claim, rows, midpoints=None):
    """(Welch test, reference value, group stats) of one claim, or why it has none ("not measured ...").

    A "closes_gap" claim with `midpoints` ({(baseline, target, metric): one midpoint per seed group})
    is the row against those midpoints; without, the three-row contrast (which treats them as independent).
    """
    groups = _groups(claim)
    values = [_values(rows, row, metric) for row, metric, _ in groups]
    if any(not v for v in values):
        return "not measured"
    if not all(np.all(np.isfinite(v)) for v in values):
        return "not measured (a run's value is NaN or infinite)"
    stats_by_row = [(*mean_std(v), len(v)) for v in values]
    if claim.kind != "closes_gap":
        return welch_contrast([(1, values[0]), (-1, values[1])]), float(np.mean(values[1])), stats_by_row
    if midpoints is None:
        test = welch_contrast([(c, v) for (_, _, c), v in zip(groups, values)])
        return test, float(np.mean(values[1]) + np.mean(values[2])) / 2, stats_by_row
    middle = midpoints.get((claim.baseline, claim.target, claim.metric), [])
    if not middle:  # no seed group has both yet: the midpoint of the means, without a test (an incomplete claim)
        reference = (float(np.mean(values[1])) + float(np.mean(values[2]))) / 2
        return welch_contrast([(1, values[0]), (-1, [reference])]), reference, stats_by_row
    test = welch_contrast([(1, values[0]), (-1, middle)])
    return test, float(np.mean(middle)), stats_by_row + [(*mean_std(middle), len(middle))]


def decide(claims, rows, min_runs=MIN_RUNS, complete_groups=None, midpoints=None):
    """Every claim of one table tested, Holm-adjusted over the table and given its verdict.

    Args:
      claims: list of `claims.Claim` (one table, one Holm family).
      rows: {row name: per-run metric dicts} (`results_page.records_by_cell`).
      min_runs: runs each row of a claim needs for a verdict; with
        `complete_groups`, complete seed groups.
      complete_groups: {(row name, metric): its complete seed groups} (`decided_page.complete_groups`;
        (row, None) for a metric the records do not hold, e.g. FLOPs relative to dense): completeness
        counts groups, not runs (a row with 3 replicas has 6 runs after 2 groups).
      midpoints: {(baseline, target, metric): per-seed-group midpoints} for the "closes_gap"
        claims (`decided_page.group_midpoints`); None: the three rows as independent groups.

    Returns:
      one dict per claim: "claim"; "verdict" ("not measured ..." when a row has
      no value, or a value that is not finite); else also "stats" ((mean, std, n) of row, baseline[, target[,
      the per-group midpoints]]),
      "test" (`Welch` of row minus baseline, or row minus the midpoint for
      "closes_gap": per seed group with `midpoints`), "sign" (+1 when higher is better), "reference" (the
      baseline's mean, or the midpoint), "p_one_sided", "p_holm" and
      "holm_level" (the level Holm's step-down compares the claim's p with:
      ALPHA / (m - k + 1), k its rank by p among the m measured claims).
    """
    results = []
    for claim in claims:
        tested = _test(claim, rows, midpoints)
        if isinstance(tested, str):
            results.append({"claim": claim, "verdict": tested})
            continue
        test, reference, group_stats = tested
        sign = 1.0 if higher_is_better(claim.metric) else -1.0
        results.append({"claim": claim, "stats": group_stats, "test": test, "sign": sign, "reference": reference,
                        "p_one_sided": test.one_sided_p(sign)})  # fmt: skip
    measured = [r for r in results if "test" in r]
    ranked = [r for r in measured if not math.isnan(r["test"].p)]
    for rank, result in enumerate(sorted(ranked, key=lambda r: r["test"].p), 1):  # stable: ties keep table order
        result["holm_level"] = ALPHA / (len(ranked) - rank + 1)
    for result, p_holm in zip(measured, holm([r["test"].p for r in measured])):
        test, sign, claim = result["test"], result["sign"], result["claim"]
        low, high = sorted((sign * test.ci[0], sign * test.ci[1]))
        if complete_groups is None:
            count, unit = min(n for _, _, n in result["stats"]), "runs"
        else:
            count = min(complete_groups.get((row, metric), complete_groups.get((row, None), 0))
                        for row, metric, _ in _groups(claim))  # fmt: skip
            unit = "seed groups"
        result["p_holm"] = p_holm
        result["verdict"] = verdict(claim.kind, sign * test.estimate, p_holm, (low, high), claim.margin, count, min_runs,
                                    unit)  # fmt: skip
    return results
