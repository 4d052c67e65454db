"""The long-training study: the papers' regime (models that fit their training set) on Fashion-MNIST.

The 4-epoch study of `study.fashion_mnist_study` trains models that are
already calibrated, so ensembles and CigL have nothing to fix there. This
study trains the width-0.5 small CNN on a 5,000-image training subset for E
epochs, long enough for the dense model to fit its training set and become
over-confident on the test set, as WRN-28-10 does on CIFAR at 250 epochs.

`fashion_mnist_long_pilot` is the pilot that chose the regime and the base
learning rate on a held-out validation split; `fashion_mnist_long_study` is
the study, every row at those frozen base hyper-parameters and the papers'
schedules scaled to E (see its docstring for each ratio).
"""

import math

from reporting.study import Cell

TRAIN_EXAMPLES = 5000  # the training subset: the first 5,000 images of the training split
VALIDATION_EXAMPLES = 5000  # the pilot's validation split: the last 5,000 images of the training split
EPOCHS = 100  # E, the dense budget: the pilot's regime on the mean of 3 seeds (5,000 images, 100 epochs)
BATCH_SIZE = 128
# Chosen by the pilot (best validation accuracy of the dense model); frozen for every row.
LEARNING_RATE = 0.025


def steps_per_epoch(train_examples=TRAIN_EXAMPLES, batch_size=BATCH_SIZE):
    """Training steps per epoch (each epoch drops its partial last batch)."""
    return train_examples // batch_size


def scaled_update_every(paper_steps, paper_steps_per_epoch, train_examples=TRAIN_EXAMPLES):
    """A mask-update period of a paper, in steps, kept at the same length in epochs here.

    Args:
      paper_steps: the paper's period in steps (RigL, CigL: 100; FreeTickets: 1000).
      paper_steps_per_epoch: the paper's steps per epoch (CIFAR at batch 128: 391).
      train_examples: training examples here.
    """
    return max(1, round(paper_steps / paper_steps_per_epoch * steps_per_epoch(train_examples)))


def _base(epochs, learning_rate, train_examples, fused_batchnorm=True):
    """Overrides every row shares; the study's rows run BatchNorm through the fused kernel (same numbers, faster).

    The pilot ran Keras' own layer (then the default) and says so explicitly.
    """
    overrides = (f"epochs={epochs}", "width=0.5", f"train_examples={train_examples}", f"optimizer.learning_rate={learning_rate}")
    return (*overrides, f"fused_batchnorm={fused_batchnorm}")


PILOT_REGIMES = ((5000, 60), (5000, 80), (5000, 100), (2500, 60), (2500, 100))  # (training subset, epochs) at lr 0.05
PILOT_LEARNING_RATES = (0.025, 0.1)  # tried again in the chosen regime


def pilot_cell(train_examples, epochs, learning_rate):
    """The dense model at one (training subset, epochs, learning rate), with the validation split held out."""
    base = _base(epochs, learning_rate, train_examples, fused_batchnorm=False)
    overrides = (*base, f"validation_examples={VALIDATION_EXAMPLES}")
    name = f"pilot_n{train_examples}_e{epochs}_lr{learning_rate}"
    return Cell(name, "configs/fashion_mnist_dense.py", overrides, "dense")


def fashion_mnist_long_pilot(regimes=PILOT_REGIMES, learning_rates=PILOT_LEARNING_RATES, chosen=None):
    """The pilot: the dense model in each candidate regime, then other learning rates in the chosen one.

    Every row holds out the last VALIDATION_EXAMPLES images of the training
    split (disjoint from the training subset, never the test set). Stage 1
    trains each (subset, epochs) of `regimes` at lr 0.05; the regime is the
    cheapest (fewest steps) whose dense model fits its training subset (train
    accuracy >= 0.97) and is over-confident on the test set (ECE >= 0.03).
    Stage 2 trains `learning_rates` in that regime; the base learning rate is
    the one of best validation accuracy.

    Args:
      regimes: (train_examples, epochs) pairs of stage 1.
      learning_rates: the other learning rates of stage 2.
      chosen: the (train_examples, epochs) of stage 2; None for stage 1 alone.

    Returns:
      list of `Cell` named "pilot_n{train_examples}_e{epochs}_lr{learning_rate}".
    """
    cells = [pilot_cell(n, e, 0.05) for n, e in regimes]
    if chosen is not None:
        cells += [pilot_cell(*chosen, lr) for lr in learning_rates]
    return cells


def fashion_mnist_long_study(
    epochs=EPOCHS,
    learning_rate=LEARNING_RATE,
    sparsities=(0.8, 0.9),
    train_examples=TRAIN_EXAMPLES,
    num_members=3,
    exploration_ablation=(0.1, 0.3),
):
    """The rows of the long study, each at the frozen base hyper-parameters.

    Base (every row): the small CNN at width 0.5, `train_examples` images with
    flip + pad-and-crop augmentation, batch 128, SGD momentum 0.9, weight decay
    5e-4 on kernels, cosine learning rate from `learning_rate` over `epochs` = E.
    Each method's schedule is its paper's, scaled to E (CIFAR: 391 steps per
    epoch, here `steps_per_epoch(train_examples)`):

    - dense (3 runs per seed) and dense_ensemble: M dense runs of seeds s..s+M-1
      composed into a deep ensemble.
    - rigl_S (3 runs per seed): RigL (Evci et al.) with ERK, drop fraction 0.3
      cosine-decayed to 75% of training, ΔT = 100 CIFAR steps (0.26 epoch).
      dst_S: FreeTickets' DST ensemble, M rigl_S runs composed (their own DST
      members drop 0.5 every 1000 steps; here the RigL row's schedule).
    - gmp_S: gradual magnitude pruning (Zhu & Gupta) from 10% to 75% of
      training, pruning every ΔT of the RigL row.
    - cigl_S: CigL (Lei et al.) with its official learning-rate shape: halved
      every 30,000 of its 88,000 steps (34% of training), so weights are
      averaged over the last 20% of epochs at lr / 4 (its 0.025 of 0.1);
      random-mask rate 0.01. rigl_steplr_S: RigL with that same schedule, the
      CigL paper's like-for-like baseline.
    - edst_S: one EDST run (M tickets), t_ex : t_re = 150 : 100 of 250 (0.6 E
      and 0.4 E), exploration at the base rate, refinement at lr/10 then
      lr/100, global exploration q = 0.8, drop fraction 0.5 every 1000 CIFAR
      steps (2.6 epochs) with FreeTickets' update rules.
    - edst_S_tex{f}: the exploration ablation at the first sparsity, t_ex = f E
      with the same t_re.
    - dnc_s2: Divide-and-Co-training, the dense model divided into S = 2
      members co-trained on different views; JS weight 0.5 ramped per epoch
      over 40/300 of training from 0.005, as the official code.

    Returns:
      list of `Cell`, sources before the ensembles composed of them.
    """
    base = _base(epochs, learning_rate, train_examples)
    rigl_every, _, freetickets_every, cigl_lr = _update_periods(epochs, train_examples, held_out_steps_per_epoch=391)
    members = f"ensemble.num_members={num_members}"
    cells = _dense_cells(base, epochs, num_members)
    for sparsity in sparsities:
        s = f"sparse.sparsity={sparsity}"
        rigl = (*base, s, f"sparse.update_every={rigl_every}")
        cells += [
            Cell(f"rigl_{sparsity}", "configs/fashion_mnist_rigl.py", rigl, "rigl", sparsity, replicas=num_members),
            Cell(f"dst_{sparsity}", family="dst", sparsity=sparsity, composed_of=f"rigl_{sparsity}", members=num_members),
            Cell(f"gmp_{sparsity}", "configs/fashion_mnist_gmp.py", (*base, s, f"sparse.update_every={rigl_every}"), "gmp",
                 sparsity),
            Cell(f"rigl_steplr_{sparsity}", "configs/fashion_mnist_rigl.py", (*rigl, *cigl_lr), "rigl_steplr", sparsity),
            Cell(f"cigl_{sparsity}", "configs/fashion_mnist_cigl.py",
                 (*rigl, *cigl_lr, "weight_averaging.start_fraction=0.8"), "cigl", sparsity),
            Cell(f"edst_{sparsity}", "configs/fashion_mnist_edst.py",
                 _edst(base, s, members, freetickets_every, round(0.6 * epochs), round(0.4 * epochs)), "edst", sparsity),
        ]  # fmt: skip
    first = sparsities[0]
    for fraction in exploration_ablation:
        t_ex = max(1, round(fraction * epochs))
        overrides = _edst(base, f"sparse.sparsity={first}", members, freetickets_every, t_ex, round(0.4 * epochs))
        cells.append(Cell(f"edst_{first}_tex{fraction}", "configs/fashion_mnist_edst.py", overrides, "edst_ablation", first))
    return cells


# Steps per epoch of the papers' CIFAR runs: RigL trains on all 50,000 images (391 steps at batch
# 128); FreeTickets' and CigL's code hold out 5,000 for validation and train on 45,000 (352 steps).
RIGL_STEPS_PER_EPOCH = 391
HELD_OUT_STEPS_PER_EPOCH = 352
DECIDED_SEEDS = (0, 10, 20, 30, 40)  # five seed groups: every claim row has >= 5 runs


def fashion_mnist_decided_study(
    epochs=EPOCHS,
    learning_rate=LEARNING_RATE,
    sparsities=(0.8, 0.9),
    train_examples=TRAIN_EXAMPLES,
    num_members=3,
    cigl_growth="step_batch",
):
    """The long study, rerun to decide its claims (the `long_v2` study of tools/reproduce.py).

    The rows and base hyper-parameters of `fashion_mnist_long_study`, with:

    - every row holding out the pilot's validation split (the last
      VALIDATION_EXAMPLES training images; the training subset is unchanged),
      on which the evaluation fits a temperature (dense + temperature scaling
      is the baseline of the calibration claims) and FreeTickets' runs keep
      their best validation epoch, as its code does;
    - ΔT of the FreeTickets and CigL rows (and of RigL under CigL's schedule)
      scaled from their code's 352 steps per epoch (45,000 training images),
      RigL's from its 391;
    - `dst_ft_S` (first sparsity): the unconfounded DST row, M members that
      follow FreeTickets' DST recipe (step learning rate /10 at 50% and 75%,
      drop fraction 0.5 constant every 1000 CIFAR steps to the end, its update
      switches, best validation epoch) beside the RigL-member `dst_S`; EDST
      and `dst_ft` then share FreeTickets' update rules and best-validation;
    - CigL (and RigL under its schedule, its like-for-like baseline) growing
      from the update step's own batch and restarting every grown weight at
      0, as its code does (`cigl_growth`; "step_batch" keeps that step's
      optimizer update, which the code skips: at ΔT = 11 skipping would drop
      one step in eleven);
    - no exploration ablation (the first study answered it);
    - DNC's diagnostic rows last (`_dnc_diagnostic_cells`: the narrow
      network, its independent pair, DNC with undivided weight decay), so
      the first study's prose about them becomes records.

    Cells are ordered so the rows whose recipes did not change run first in
    each seed group.

    Returns:
      list of `Cell`.
    """
    base = (*_base(epochs, learning_rate, train_examples), f"validation_examples={VALIDATION_EXAMPLES}")
    rigl_every, cigl_every, freetickets_every, cigl_lr = _update_periods(epochs, train_examples)
    members = f"ensemble.num_members={num_members}"
    best = "keep_best_validation=True"
    cells = _dense_cells(base, epochs, num_members)
    for sparsity in sparsities:
        s = f"sparse.sparsity={sparsity}"
        rigl = (*base, s, f"sparse.update_every={rigl_every}")
        cells += [
            Cell(f"rigl_{sparsity}", "configs/fashion_mnist_rigl.py", rigl, "rigl", sparsity, replicas=num_members),
            Cell(f"dst_{sparsity}", family="dst", sparsity=sparsity, composed_of=f"rigl_{sparsity}", members=num_members),
            Cell(f"gmp_{sparsity}", "configs/fashion_mnist_gmp.py", rigl, "gmp", sparsity),
        ]
    for sparsity in sparsities:
        s = f"sparse.sparsity={sparsity}"
        cigl_base = (
            *base, s, f"sparse.update_every={cigl_every}", *cigl_lr, f"sparse.growth_gradient='{cigl_growth}'",
            "sparse.reinit_when_same=True",
        )  # fmt: skip
        cells += [
            Cell(f"rigl_steplr_{sparsity}", "configs/fashion_mnist_rigl.py", cigl_base, "rigl_steplr", sparsity),
            Cell(f"cigl_{sparsity}", "configs/fashion_mnist_cigl.py",
                 (*cigl_base, "weight_averaging.start_fraction=0.8"),
                 "cigl", sparsity),
            Cell(f"edst_{sparsity}", "configs/fashion_mnist_edst.py",
                 (*_edst(base, s, members, freetickets_every, round(0.6 * epochs), round(0.4 * epochs)), best),
                 "edst", sparsity),
        ]  # fmt: skip
    first = sparsities[0]
    dst_ft = (
        *base, f"sparse.sparsity={first}", *_FREETICKETS_RULES, f"sparse.update_every={freetickets_every}", best,
        "optimizer.schedule='step'", "optimizer.milestones=(0.5, 0.75)", "optimizer.gamma=0.1",
        "sparse.drop_fraction=0.5", "sparse.decay='constant'", "sparse.end_fraction=1.0",
    )  # fmt: skip
    cells += [
        Cell(f"dst_ft_members_{first}", "configs/fashion_mnist_rigl.py", dst_ft, "dst_ft_member", first, replicas=num_members),
        Cell(f"dst_ft_{first}", family="dst_ft", sparsity=first, composed_of=f"dst_ft_members_{first}", members=num_members),
    ]
    return cells + _dnc_diagnostic_cells(base, epochs)


def _dense_cells(base, epochs, num_members):
    """The dense rows both studies share: the dense model (M runs per seed), their deep ensemble and DNC (S = 2).

    DNC's JS weight ramps per epoch over 40/300 of training from 0.005, as the official code.
    """
    return [
        Cell("dense", "configs/fashion_mnist_dense.py", base, "dense", replicas=num_members),
        Cell("dense_ensemble", family="dense_ensemble", composed_of="dense", members=num_members),
        Cell("dnc_s2", "configs/fashion_mnist_dnc.py", _dnc_overrides(base, epochs), "dnc"),
    ]


def _dnc_overrides(base, epochs, num_splits=2):
    return (*base, f"ensemble.num_members={num_splits}", f"ensemble.cotraining_warmup_epochs={max(1, round(epochs * 40 / 300))}",
            "ensemble.cotraining_ramp='epoch'", "ensemble.cotraining_min_weight=0.005")  # fmt: skip


def _dnc_diagnostic_cells(base, epochs, num_splits=2):
    """DNC's one-factor checks as rows: a member's width trained alone, an independent pair of those, DNC undivided decay.

    `dense_narrow` is the dense model at DNC's member width (width / sqrt(S))
    with the wide network's weight decay and the dense row's augmentation;
    `narrow_pair` the mean-probability ensemble of S such runs: DNC's split
    without its co-training, its members' views or its divided weight decay,
    so its members match `dnc_s2_wd`'s in decay, not `dnc_s2`'s;
    `dnc_s2_wd` is DNC with its members at the wide network's weight decay
    (`ensemble.divide_weight_decay=False`; the paper divides on CIFAR-10).
    """
    width = next(float(o.split("=")[1]) for o in base if o.startswith("width="))
    narrow = tuple(f"width={round(width / math.sqrt(num_splits), 5)}" if o.startswith("width=") else o for o in base)
    return [
        Cell("dense_narrow", "configs/fashion_mnist_dense.py", narrow, "dense_narrow", replicas=num_splits),
        Cell("narrow_pair", family="narrow_pair", composed_of="dense_narrow", members=num_splits),
        Cell("dnc_s2_wd", "configs/fashion_mnist_dnc.py", (*_dnc_overrides(base, epochs, num_splits),
             "ensemble.divide_weight_decay=False"), "dnc_wd"),
    ]  # fmt: skip


def cigl_halving_every(epochs=EPOCHS, train_examples=TRAIN_EXAMPLES):
    """Steps between CigL's learning-rate halvings: its 30,000 of 88,000 steps, as a fraction of this run."""
    return max(1, round(epochs * steps_per_epoch(train_examples) * 30000 / 88000))


def cigl_averaging_learning_rates(epochs=EPOCHS, learning_rate=LEARNING_RATE, train_examples=TRAIN_EXAMPLES,
                                  start_fraction=0.8):  # fmt: skip
    """(first, last) learning rate of CigL's averaging window (the last 20% of epochs) in this study.

    The official run averages epochs 200-250 of 250 at 0.025 = base / 4; the
    page prints these to show the study's window runs at the same fraction.
    """
    every, per_epoch = cigl_halving_every(epochs, train_examples), steps_per_epoch(train_examples)
    first_step = int(round(start_fraction * epochs)) * per_epoch
    last_step = epochs * per_epoch - 1
    return tuple(learning_rate * 0.5 ** (step // every) for step in (first_step, last_step))


def _update_periods(epochs, train_examples, held_out_steps_per_epoch=None):
    """Each paper's mask-update period kept in epochs here, and CigL's learning-rate overrides.

    Args:
      epochs: E.
      train_examples: training examples here.
      held_out_steps_per_epoch: steps per epoch FreeTickets' and CigL's periods
        are scaled from (their code trains on 45,000 CIFAR images:
        `HELD_OUT_STEPS_PER_EPOCH`; the first study used RigL's 391).

    Returns:
      (rigl_every, cigl_every, freetickets_every, cigl_lr): RigL's and CigL's
      ΔT = 100 CIFAR steps, FreeTickets' 1000, and the overrides of CigL's
      learning rate halved every `cigl_halving_every` steps.
    """
    held_out = held_out_steps_per_epoch or HELD_OUT_STEPS_PER_EPOCH
    halving_every = cigl_halving_every(epochs, train_examples)
    return (
        scaled_update_every(100, RIGL_STEPS_PER_EPOCH, train_examples),
        scaled_update_every(100, held_out, train_examples),
        scaled_update_every(1000, held_out, train_examples),
        ("optimizer.schedule='step'", f"optimizer.decay_every={halving_every}", "optimizer.gamma=0.5"),
    )


def _edst(base, sparsity, members, update_every, exploration_epochs, refinement_epochs):
    """EDST overrides: FreeTickets' CIFAR update rules (gradient growth of the step's batch, grown weights at 0)."""
    return (
        *base, sparsity, members, *_FREETICKETS_RULES, f"sparse.update_every={update_every}",
        f"ensemble.exploration_epochs={exploration_epochs}", f"ensemble.refinement_epochs={refinement_epochs}",
    )  # fmt: skip


# FreeTickets' CIFAR update rules: RigL growth from the step's batch, grown weights at 0, dense momentum.
_FREETICKETS_RULES = (
    "sparse.method='rigl'", "sparse.growth_gradient='step_batch'", "sparse.reinit_when_same=True",
    "sparse.dense_gradient_momentum=True",
)  # fmt: skip





_BETTER_THAN_DENSE = (
    ("accuracy", "higher accuracy"),
    ("nll", "lower NLL"),
    ("ece", "lower ECE"),
    ("ood_auroc", "higher OoD AUROC"),
    ("corruption_accuracy", "higher corruption accuracy"),
)
# The papers' own figures for each claim. FreeTickets' Table 1 (WRN-28-10 on CIFAR) was not
# retrievable offline, so its rows give the direction it reports and the training-FLOPs ratio of its
# setting by this library's accounting (BENCHMARKS.md, table 3).
_FREETICKETS = "better than dense (Table 1, WRN-28-10 CIFAR-10/100; figures not retrievable offline)"
PAPER_FIGURES = {
    **{(kind, metric): _FREETICKETS for kind in ("EDST", "DST") for metric, _ in _BETTER_THAN_DENSE},
    ("EDST", "flops"): "0.61x dense (WRN-28-10, S=0.8, 450 epochs; this library's FLOPs count of that setting)",
    ("DST", "flops"): "1.02x dense (3 x 250 epochs at S=0.8; same count)",
    ("EDST", "gap"): "approaches the deep ensemble (Table 1; figures not retrievable offline)",
    ("DST", "gap"): "approaches the deep ensemble (Table 1; figures not retrievable offline)",
    ("CigL", "ece", 0.8): "WRN-22-2 CIFAR-10: 0.0178 vs RigL 0.0319 (Table 3)",
    ("CigL", "ece", 0.9): "WRN-22-2 CIFAR-10: 0.0159 vs RigL 0.0272 (Table 3)",
    ("CigL", "accuracy", 0.8): "WRN-22-2 CIFAR-10: 93.95 vs RigL 93.12 (Table 2)",
    ("CigL", "accuracy", 0.9): "WRN-22-2 CIFAR-10: 93.05 vs RigL 92.26 (Table 2)",
    ("DNC", "accuracy"): "WRN-28-10: CIFAR-100 error 14.48 (S=2) vs 15.50; CIFAR-10 2.06 vs 2.28 (300 epochs)",
    ("RigL", "accuracy"): "ResNet-50 ImageNet, ERK 80%: 75.1 (1x), 77.1 (5x) vs dense 76.8",
}


def paper_claims(sparsities=(0.8, 0.9)):
    """The claims of FreeTickets, CigL, Divide-and-Co-training and RigL as comparisons of this study's rows.

    FreeTickets' claims are judged at the first sparsity (its main tables use
    S = 0.8); CigL's at every sparsity against RigL under CigL's own schedule
    (its like-for-like baseline) and against the cosine RigL row.

    Returns:
      list of `claims.Claim`.
    """
    from reporting.claims import Claim

    s = sparsities[0]
    claims = []
    for ensemble in (f"edst_{s}", f"dst_{s}"):
        kind = ensemble.split("_")[0].upper()
        for metric, words in _BETTER_THAN_DENSE:
            claims.append(Claim("FreeTickets", f"{kind} ensemble (M=3, S={s}): {words} than the dense single model",
                                ensemble, "dense", metric, paper_value=PAPER_FIGURES.get((kind, metric), "")))  # fmt: skip
        claims.append(Claim("FreeTickets", f"{kind} ensemble trains with at most the dense model's FLOPs", ensemble,
                            "dense", "training_flops_rel", kind="at_most",
                            paper_value=PAPER_FIGURES.get((kind, "flops"), "")))  # fmt: skip
        claims.append(Claim("FreeTickets", f"{kind} ensemble approaches the dense deep ensemble (accuracy)", ensemble,
                            "dense", "accuracy", kind="closes_gap", target="dense_ensemble",
                            paper_value=PAPER_FIGURES.get((kind, "gap"), "")))  # fmt: skip
    for sparsity in sparsities:
        for baseline in (f"rigl_steplr_{sparsity}", f"rigl_{sparsity}"):
            claims.append(Claim("CigL", f"lower ECE than RigL at S={sparsity} ({baseline})", f"cigl_{sparsity}",
                                baseline, "ece", paper_value=PAPER_FIGURES.get(("CigL", "ece", sparsity), "")))  # fmt: skip
            claims.append(Claim("CigL", f"no accuracy loss against RigL at S={sparsity} ({baseline})", f"cigl_{sparsity}",
                                baseline, "accuracy", kind="no_worse",
                                paper_value=PAPER_FIGURES.get(("CigL", "accuracy", sparsity), "")))  # fmt: skip
    claims.append(Claim("DNC", "S=2 co-trained narrow networks: higher accuracy than the one wide network", "dnc_s2",
                        "dense", "accuracy", paper_value=PAPER_FIGURES.get(("DNC", "accuracy"), "")))  # fmt: skip
    claims.append(Claim("RigL", f"RigL at S={s} matches the dense model (accuracy)", f"rigl_{s}", "dense", "accuracy",
                        kind="no_worse", paper_value=PAPER_FIGURES.get(("RigL", "accuracy"), "")))  # fmt: skip
    return claims
