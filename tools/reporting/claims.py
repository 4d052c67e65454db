"""The papers' claims as comparisons between study rows, each judged holds / does not hold / within noise.

A claim compares one metric of a row with another row ("edst_0.8 has higher
accuracy than dense"). With the per-seed values of both rows the verdict
uses Welch's statistic t = (mean_a - mean_b) / sqrt(std_a^2 / n_a + std_b^2 / n_b),
signed so that t > 0 is the claimed direction:

- "better" claims hold when t >= 2, do not hold when t <= -2, and are within
  noise otherwise;
- "no worse" claims (RigL matches dense, CigL loses no accuracy) hold when
  t > -2 and do not hold when t <= -2: with three seeds "holds" there means
  no difference could be seen, not that none exists.
- "at most" claims (a cost no larger than the baseline's, e.g. training
  FLOPs, which do not vary over seeds) hold when the row's mean is no worse
  than the baseline's.
- "closes the gap" claims (the sparse ensemble approaches the dense deep
  ensemble) hold when the row closes at least half of the gap from the
  baseline to the target (on the means), and do not hold otherwise.
"""

import dataclasses
import math

from reporting.tables import mean_std

HIGHER_IS_BETTER = {"accuracy": True, "nll": False, "ece": False, "brier": False, "ood_auroc": True,
                    "corruption_accuracy": True, "training_flops_rel": False}  # fmt: skip
SIGNIFICANT_T = 2.0
# The rules above in words, printed under the claims table.
VERDICT_RULES = (
    "t is Welch's statistic of the row against its baseline over their runs, signed so that t > 0 favours the "
    f"claim. A \"better\" claim holds at t ≥ {SIGNIFICANT_T:g}, does not hold at t ≤ −{SIGNIFICANT_T:g} and is "
    f"within noise between; a \"no worse\" claim (RigL matches dense, CigL loses no accuracy) holds unless "
    f"t ≤ −{SIGNIFICANT_T:g} (with three seeds, \"holds\" means no loss could be seen, not that none exists); a "
    "cost claim (training FLOPs, the same for every seed) compares the means; \"approaches the deep ensemble\" "
    "holds when the row closes at least half of the accuracy gap from the dense model to the dense deep ensemble."
)


@dataclasses.dataclass(frozen=True)
class Claim:
    """One claim of a paper, as a comparison of two rows of the study.

    Attributes:
      paper: "FreeTickets", "CigL", "DNC" or "RigL".
      text: the claim in words.
      row: the study row the claim is about.
      baseline: the row it is compared with.
      metric: a record key of `HIGHER_IS_BETTER`.
      kind: "better", "no_worse", "at_most" or "closes_gap".
      target: for "closes_gap": the row whose value `row` should approach.
      paper_value: the paper's own figure, as text (with its setting).
      baseline_metric: the baseline's record key when it is not `metric`
        (the decided study: "ts_nll" for the dense model + temperature scaling).
      margin: for "no_worse" / "at_most" claims of the decided study: the
        loss the claim tolerates, in the metric's units.
      note: text shown after the claim; "{row:.2f}" in it is replaced by the
        row's mean (the decided study's page).
    """

    paper: str
    text: str
    row: str
    baseline: str
    metric: str
    kind: str = "better"
    target: str = ""
    paper_value: str = ""
    baseline_metric: str = ""
    margin: float = 0.0
    note: str = ""


def welch_t(a, b, higher_is_better=True):
    """Welch's t of mean(a) - mean(b), signed so that positive favours `a`; inf / -inf / 0 with no spread."""
    (mean_a, std_a), (mean_b, std_b) = mean_std(a), mean_std(b)
    diff = (mean_a - mean_b) if higher_is_better else (mean_b - mean_a)
    scale = math.sqrt(std_a**2 / len(a) + std_b**2 / len(b))
    if scale == 0.0:
        return 0.0 if diff == 0 else math.copysign(math.inf, diff)
    return diff / scale


def judge(claim, rows):
    """The verdict on `claim` from the study's per-seed records.

    Args:
      claim: a `Claim`.
      rows: {row name: list of per-seed metric dicts} (`results_page.records_by_cell`).

    Returns:
      dict with "verdict" ("holds", "does not hold", "within noise", "not
      measured" or, for "closes_gap" without a gap, "not measurable (no
      gap)"), "row" and "baseline" (mean, std, n) of the metric, "t" and,
      for "closes_gap", "target" and "gap_closed" (fraction of the
      baseline-to-target gap the row closes).
    """
    values = {}
    for name in (claim.row, claim.baseline, claim.target):
        if name:
            values[name] = [r[claim.metric] for r in rows.get(name, []) if r.get(claim.metric) is not None]
    if any(not v for v in values.values()):
        return {"verdict": "not measured"}
    higher = HIGHER_IS_BETTER[claim.metric]
    a, b = values[claim.row], values[claim.baseline]
    out = {"row": (*mean_std(a), len(a)), "baseline": (*mean_std(b), len(b)), "t": welch_t(a, b, higher)}
    if claim.kind == "better":
        t = out["t"]
        out["verdict"] = "holds" if t >= SIGNIFICANT_T else "does not hold" if t <= -SIGNIFICANT_T else "within noise"
    elif claim.kind == "no_worse":
        out["verdict"] = "does not hold" if out["t"] <= -SIGNIFICANT_T else "holds"
    elif claim.kind == "at_most":
        row, base = out["row"][0], out["baseline"][0]
        out["verdict"] = "holds" if (row >= base if higher else row <= base) else "does not hold"
    elif claim.kind == "closes_gap":
        target = values[claim.target]
        out["target"] = (*mean_std(target), len(target))
        gap = out["target"][0] - out["baseline"][0]
        if gap <= 0:  # the target is no better than the baseline: nothing to approach
            out["verdict"] = "not measurable (no gap)"
            return out
        out["gap_closed"] = (out["row"][0] - out["baseline"][0]) / gap
        out["verdict"] = "holds" if out["gap_closed"] >= 0.5 else "does not hold"
    else:
        raise ValueError(f"Claim kind {claim.kind!r} is unknown; use better, no_worse, at_most or closes_gap.")
    return out


def claims_table(claims, rows):
    """Markdown table: paper, claim, the paper's figure, the figures here (mean ± std, n), Welch's t and the verdict.

    "at_most" claims show no t: their verdict compares means (module docstring).
    """
    lines = ["| paper | claim | paper's figure | here | t | verdict |", "|---|---|---|---|---|---|"]
    for claim in claims:
        result = judge(claim, rows)
        if result["verdict"] == "not measured":
            here, t = "–", "–"
        else:
            here = f"{claim.row} {_fmt(result['row'])} vs {claim.baseline} {_fmt(result['baseline'])}"
            if "gap_closed" in result:
                here += f"; {claim.target} {_fmt(result['target'])}; gap closed {result['gap_closed']:.0%}"
            # A cost that does not vary over seeds has no noise to weigh: its verdict compares the means.
            t = "–" if claim.kind == "at_most" else f"{result['t']:+.1f}"
        lines.append(f"| {claim.paper} | {claim.text} | {claim.paper_value or '–'} | {here} | {t} | **{result['verdict']}** |")
    return "\n".join(lines)


def _fmt(stats):
    mean, std, n = stats
    return f"{mean:.4f} ± {std:.4f} (n={n})"
