"""The structured-DST study (`--study=structured`): SRigL and Chase against RigL in the long-study regime.

Issue: tickets that are faster, not only smaller. SRigL (Lasby et al., ICLR
2024) keeps a constant fan-in per output unit and ablates neurons; Chase (Yin
et al., NeurIPS 2023) removes whole output channels during training. Both
claim RigL's quality at the same sparsity. Here each runs with exactly the
`long_v2` study's RigL row (the same config fields, overrides and seeds; only
`sparse.method` differs, the configs' method fields at their paper defaults),
so its RigL records are the baseline: the page reads them from the long_v2
JSON, only where their cell definition is identical.

Its records also carry the structure each method leaves: the fraction of
dead output units and the parameter fraction `tft.compact` keeps.
"""

from reporting.long_study import EPOCHS, LEARNING_RATE, TRAIN_EXAMPLES, fashion_mnist_decided_study
from reporting.study import Cell

STRUCTURED_SEEDS = (0, 10)  # two seed groups: 6 runs per row (seeds 0-2, 10-12), as long_v2's RigL rows
STRUCTURED_METHODS = (("srigl", "configs/fashion_mnist_srigl.py", "SRigL"), ("chase", "configs/fashion_mnist_chase.py", "Chase"))
MIN_STRUCTURED_RUNS = 3  # the issue's >= 3 seeds per row
ACCURACY_MARGIN = 0.005  # a "matches RigL" claim may lose half a point of accuracy, as the decided study's no-worse claims


def rigl_cells(epochs=EPOCHS, learning_rate=LEARNING_RATE, sparsities=(0.8, 0.9), train_examples=TRAIN_EXAMPLES):
    """The long_v2 study's `rigl_S` cells (the baseline rows), as that study defines them."""
    return [c for c in baseline_cells(epochs, learning_rate, sparsities, train_examples) if c.family == "rigl"]


def baseline_cells(epochs=EPOCHS, learning_rate=LEARNING_RATE, sparsities=(0.8, 0.9), train_examples=TRAIN_EXAMPLES):
    """The long_v2 study's `rigl_S` cells and its `dst_S` ensembles of them, as that study defines them."""
    cells = fashion_mnist_decided_study(epochs, learning_rate, sparsities, train_examples)
    return [c for c in cells if c.family in ("rigl", "dst")]


def fashion_mnist_structured_study(epochs=EPOCHS, learning_rate=LEARNING_RATE, sparsities=(0.8, 0.9),
                                   train_examples=TRAIN_EXAMPLES):  # fmt: skip
    """`srigl_S` and `chase_S`: long_v2's `rigl_S` with only the method changed (3 runs per seed group).

    Then `chase_dst_S` at each sparsity: the DST ensemble of the 3 Chase runs of a seed
    group, as long_v2's `dst_S` is of its RigL runs (the issue's "DST ensemble of 3
    compacted tickets beside dst_0.8", and at 0.9, where compaction removes more;
    `tft.compact` leaves the outputs within 1e-5, so its quality is evaluated on the
    Keras tickets and its latency by tools/bench_frontier.py). A composed row trains
    nothing: it averages the Chase runs' model files.

    Returns:
      list of `Cell`.
    """
    cells = []
    for rigl in rigl_cells(epochs, learning_rate, sparsities, train_examples):
        for family, config_file, _ in STRUCTURED_METHODS:
            name = rigl.name.replace("rigl", family, 1)
            cells.append(Cell(name, config_file, rigl.overrides, family, rigl.sparsity, replicas=rigl.replicas))
        # composed as soon as its runs exist
        cells.append(Cell(f"chase_dst_{rigl.sparsity}", family="chase_dst", sparsity=rigl.sparsity,
                          composed_of=f"chase_{rigl.sparsity}", members=rigl.replicas))  # fmt: skip
    return cells + _channel_trade_cells(next(c for c in reversed(cells) if c.family == "chase"))


CHASE_WIDER_CHANNEL_SPARSITY = 0.75  # a quarter of the prunable layers' channels kept: the frontier's trade row


def _channel_trade_cells(chase):
    """`chase_c75_S` and its DST ensemble: Chase at the last sparsity with 3/4 of the channels removed, not 1/2.

    Not a paper setting and in no claim: the quality side of a serving trade
    (BENCHMARKS.md 6e: three tickets with 3/4 of their channels removed
    serve below one dense twin's time in TFLite), measured with every other
    setting of `chase` (its overrides plus `sparse.chase_channel_sparsity`).
    """
    name = chase.name.replace("chase", "chase_c75", 1)
    overrides = (*chase.overrides, f"sparse.chase_channel_sparsity={CHASE_WIDER_CHANNEL_SPARSITY}")
    return [
        Cell(name, chase.config_file, overrides, "chase_c75", chase.sparsity, replicas=chase.replicas),
        Cell(name.replace("chase_c75", "chase_c75_dst", 1), family="chase_c75_dst", sparsity=chase.sparsity,
             composed_of=name, members=chase.replicas),
    ]  # fmt: skip


def structured_claims(sparsities=(0.8, 0.9)):
    """Each method against RigL at each sparsity: accuracy no worse (margin), NLL, ECE and OoD AUROC two-sided.

    The NLL, ECE and OoD claims are "no worse" with no margin: they hold only
    when the whole 95% CI lies on the method's side of zero, fail when it lies
    beyond, and are inconclusive otherwise (the papers report accuracy only).
    """
    from reporting.claims import Claim

    claims = []
    for sparsity in sparsities:
        for family, _, label in STRUCTURED_METHODS:
            row, baseline = f"{family}_{sparsity}", f"rigl_{sparsity}"
            claims.append(Claim(label, f"{label} matches RigL's accuracy at S={sparsity} (margin "
                                f"{100 * ACCURACY_MARGIN:g} points)", row, baseline, "accuracy", kind="no_worse",
                                margin=ACCURACY_MARGIN))  # fmt: skip
            for metric, words in (("nll", "NLL"), ("ece", "ECE"), ("ood_auroc", "OoD AUROC")):
                claims.append(Claim(label, f"{label}: {words} no worse than RigL's at S={sparsity}", row, baseline,
                                    metric, kind="no_worse"))  # fmt: skip
    return claims


def baseline_records(structured_payload, decided_payload):
    """long_v2's RigL and DST records that are this study's baseline: same cell definition, seed and study settings.

    Returns:
      (records, reason): the records, and "" or one line saying why none
      could be used (no long_v2 JSON, other settings, other definitions).
    """
    if decided_payload is None:
        return [], "no long_v2 JSON: the RigL baseline rows are missing"
    mine, theirs = structured_payload["study"], decided_payload["study"]
    for key in ("package_version", "dataset", "train_examples", "learning_rate", "epochs", "ood_sets", "ood_examples",
                "corruption_examples", "extra_overrides"):  # fmt: skip
        if mine.get(key) != theirs.get(key):
            return [], f"the long_v2 JSON ran with {key}={theirs.get(key)!r}, this study with {mine.get(key)!r}"
    definitions = {c["name"]: c for c in theirs.get("cells", [])}
    expected = {c.name: c for c in baseline_cells(mine["epochs"], mine["learning_rate"], tuple(mine["sparsities"]),
                                              mine["train_examples"])}  # fmt: skip
    from reporting.study_runner import cell_dicts

    wanted = {name for name, cell in expected.items() if definitions.get(name) == cell_dicts([cell])[0]}
    seeds = {s + k for s in mine.get("seeds", []) for k in range(3)}
    records = [r for r in decided_payload.get("records", []) if r["cell"] in wanted and r["seed"] in seeds]
    return records, "" if records else "the long_v2 JSON has no RigL record of these seeds yet"
