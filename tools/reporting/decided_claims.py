"""The claims of the decided study (`long_v2`): the first study's, with margins for no-worse claims,
the temperature-scaled dense baseline, the FreeTickets-recipe DST row and per-OoD-set claims.

Read by `decided_page`; the cells they compare are `long_study.fashion_mnist_decided_study`'s.
"""

from reporting.long_study import _BETTER_THAN_DENSE, PAPER_FIGURES

NO_WORSE_MARGIN = 0.005  # accuracy a "no worse" / "matches" claim may lose: half a point
_NOT_IN_PAPER_TS = "not in the paper: dense + temperature scaling (fitted on the validation split) is this page's baseline"
_DST_FLOPS_NOTE = (
    "(here {row:.2f}x is this small CNN's FLOPs profile; the paper's own setting, WRN-28-10 with 3 x 250 epochs at "
    "S=0.8, costs 1.02x by the same count)"
)
_FREETICKETS_ROWS = (("edst", "EDST"), ("dst", "DST"), ("dst_ft", "DST (FreeTickets recipe)"))  # family, label
_EDST_VS_DST = (
    "the direction is this page's: DST, which trains M full runs, as the stronger ensemble (the paper's Table 1 "
    "figures were not retrievable offline)"
)


def _freetickets_claims(ensemble, label, sparsity):
    """FreeTickets' claims for one ensemble row: better than dense (and dense + TS on NLL, ECE), FLOPs, the gap."""
    from reporting.claims import Claim

    kind = ensemble.split("_")[0].upper()
    text = f"{label} ensemble (M=3, S={sparsity})"
    claims = []
    for metric, words in _BETTER_THAN_DENSE:
        figure = PAPER_FIGURES.get((kind, metric), "")
        claims.append(Claim("FreeTickets", f"{text}: {words} than the dense single model", ensemble, "dense", metric,
                            paper_value=figure))  # fmt: skip
        if metric in ("nll", "ece"):
            claims.append(Claim("FreeTickets", f"{text}: {words} than the dense model + temperature scaling", ensemble,
                                "dense", metric, baseline_metric=f"ts_{metric}", paper_value=_NOT_IN_PAPER_TS))  # fmt: skip
    claims.append(Claim("FreeTickets", f"{label} ensemble trains with at most the dense model's FLOPs", ensemble, "dense",
                        "training_flops_rel", kind="at_most", paper_value=PAPER_FIGURES.get((kind, "flops"), ""),
                        note=_DST_FLOPS_NOTE if kind == "DST" else ""))  # fmt: skip
    claims.append(Claim("FreeTickets", f"{label} ensemble approaches the dense deep ensemble (accuracy)", ensemble,
                        "dense", "accuracy", kind="closes_gap", target="dense_ensemble",
                        paper_value=PAPER_FIGURES.get((kind, "gap"), "")))  # fmt: skip
    return claims


def _cigl_claims(sparsity):
    """CigL's claims at one sparsity: ECE (15 and 10 bins) and accuracy against both RigL rows, ECE against dense + TS."""
    from reporting.claims import Claim

    claims = []
    for baseline in (f"rigl_steplr_{sparsity}", f"rigl_{sparsity}"):
        figure = PAPER_FIGURES.get(("CigL", "ece", sparsity), "")
        claims += [
            Claim("CigL", f"lower ECE (10 bins, as CigL reports) than RigL at S={sparsity} ({baseline})",
                  f"cigl_{sparsity}", baseline, "ece_10bins", paper_value=figure),
            Claim("CigL", f"lower ECE (15 bins) than RigL at S={sparsity} ({baseline})", f"cigl_{sparsity}", baseline,
                  "ece", paper_value=f"{figure}, 10-bin ECE" if figure else ""),
            Claim("CigL", f"no accuracy loss against RigL at S={sparsity} ({baseline}; margin {100 * NO_WORSE_MARGIN:g} "
                  "points)", f"cigl_{sparsity}", baseline, "accuracy", kind="no_worse", margin=NO_WORSE_MARGIN,
                  paper_value=PAPER_FIGURES.get(("CigL", "accuracy", sparsity), "")),
        ]  # fmt: skip
    claims.append(Claim("CigL", f"lower ECE at S={sparsity} than the dense model + temperature scaling", f"cigl_{sparsity}",
                        "dense", "ece", baseline_metric="ts_ece", paper_value=_NOT_IN_PAPER_TS))  # fmt: skip
    return claims


def decided_claims(sparsities=(0.8, 0.9)):
    """The claims the decided study (`fashion_mnist_decided_study`) tests, grouped by paper.

    The first study's claims (`paper_claims`), plus: every calibration claim
    (NLL, ECE) also against the dense model + temperature scaling (the dense
    rows' "ts_nll" / "ts_ece"); FreeTickets' DST claims also for
    `dst_ft_S`, the DST ensemble under FreeTickets' own recipe; EDST against
    that DST ensemble on accuracy, NLL and ECE (one recipe for both); CigL's
    ECE also with 10 bins ("ece_10bins", as CigL reports); and a margin of
    NO_WORSE_MARGIN accuracy for the "no worse" claims.

    Returns:
      list of `claims.Claim`.
    """
    from reporting.claims import Claim

    s = sparsities[0]
    claims = []
    for family, label in _FREETICKETS_ROWS:
        claims += _freetickets_claims(f"{family}_{s}", label, s)
    for metric, words in _BETTER_THAN_DENSE[:3]:
        claims.append(Claim("FreeTickets", f"one recipe, S={s}: the DST ensemble (dst_ft) has {words} than EDST",
                            f"dst_ft_{s}", f"edst_{s}", metric, paper_value=_EDST_VS_DST))  # fmt: skip
    for sparsity in sparsities:
        claims += _cigl_claims(sparsity)
    claims.append(Claim("DNC", "S=2 co-trained narrow networks: higher accuracy than the one wide network", "dnc_s2",
                        "dense", "accuracy", paper_value=PAPER_FIGURES.get(("DNC", "accuracy"), "")))  # fmt: skip
    claims.append(Claim("RigL", f"RigL at S={s} matches the dense model (accuracy; margin {100 * NO_WORSE_MARGIN:g} points)",
                        f"rigl_{s}", "dense", "accuracy", kind="no_worse", margin=NO_WORSE_MARGIN,
                        paper_value=PAPER_FIGURES.get(("RigL", "accuracy"), "")))  # fmt: skip
    return claims


def decided_ood_claims(ood_sets, sparsity=0.8):
    """FreeTickets' OoD claim set by set: each ensemble against the dense model on AUROC and on FPR at 95% TPR.

    Args:
      ood_sets: names of the OoD sets (the records' "ood_auroc_<set>" and "ood_fpr95_<set>").
      sparsity: the sparsity of the FreeTickets rows.

    Returns:
      list of `claims.Claim`, one table (one Holm family).
    """
    from reporting.claims import Claim

    claims = []
    for family, label in _FREETICKETS_ROWS:
        ensemble = f"{family}_{sparsity}"
        for name in ood_sets:
            set_name = name.replace("_", " ")
            claims += [
                Claim("FreeTickets", f"{label}: higher OoD AUROC on {set_name} than dense", ensemble, "dense",
                      f"ood_auroc_{name}"),
                Claim("FreeTickets", f"{label}: lower FPR at 95% TPR on {set_name} than dense", ensemble, "dense",
                      f"ood_fpr95_{name}"),
            ]  # fmt: skip
    return claims


def decided_diagnostic_claims():
    """DNC's one-factor checks (`long_study._dnc_diagnostic_cells`), a table and Holm family of their own.

    Not claims of the paper: they locate where the DNC claim's result comes
    from, the split alone (an independent narrow pair against the wide
    network), the narrow network alone, and DNC's weight-decay scaling.

    Returns:
      list of `claims.Claim`.
    """
    from reporting.claims import Claim

    premise = "DNC's premise, not a claim of the paper"
    return [
        Claim("DNC", "two independent narrow networks (width / √2, the wide network's weight decay, no co-training): "
              "higher accuracy than the one wide network", "narrow_pair", "dense", "accuracy", paper_value=premise),
        Claim("DNC", "one narrow network alone: lower accuracy than the one wide network", "dense", "dense_narrow",
              "accuracy", paper_value=premise),
        Claim("DNC", "DNC (S=2) with the members at the wide network's weight decay: higher accuracy than with "
              "exp(1/S − 1) of it", "dnc_s2_wd", "dnc_s2", "accuracy",
              paper_value="the paper divides on CIFAR-10 (Table III), not on CIFAR-100 (Table II)"),
        Claim("DNC", "DNC (S=2) with the members at the wide network's weight decay: higher accuracy than the one wide "
              "network", "dnc_s2_wd", "dense", "accuracy", paper_value="the DNC claim with the CIFAR-100 decay"),
    ]  # fmt: skip
