"""What the built-in DST methods share: the schedule fields of `config.sparse` and their cost rule."""

from tf_freetickets.sparse.registry import CostFacts


def dst_updater_kwargs(sparse, seed):
    """The `MaskUpdater` arguments every DST method reads from `config.sparse` (schedule and update switches)."""
    return {
        "update_every": int(sparse.update_every),
        "drop_fraction": float(sparse.drop_fraction),
        "end_fraction": float(sparse.end_fraction),
        "decay": sparse.decay,
        "seed": seed,
        "min_drop_fraction": float(sparse.get("min_drop_fraction", 0.0)),
        "reinit_when_same": bool(sparse.get("reinit_when_same", False)),
        "dense_gradient_momentum": bool(sparse.get("dense_gradient_momentum", False)),
        "adjust_prune_rate": bool(sparse.get("adjust_prune_rate", False)),
    }


def gradient_growth_costs(updater, gradient_batches, paper_default=1):
    """`CostFacts` of a method that grows by a dense gradient (RigL, CigL, the library's SNFS).

    Args:
      updater: the built updater, or None for the method's paper defaults.
      gradient_batches: the caller's override of the extra dense-gradient
        batches per update (None: the updater's, else `paper_default`).
      paper_default: the batches per update without an updater (RigL: 1).
    """
    if gradient_batches is None and updater is not None:
        source = updater.score_source
        gradient_batches = source.batches_per_update if source.needs_gradient_data else 0
    elif gradient_batches is None:
        gradient_batches = paper_default
    dense_momentum = updater is not None and updater.dense_gradient_momentum
    return CostFacts(growth_gradient_batches=gradient_batches, dense_weight_gradient_every_step=dense_momentum)
