"""Training and inference FLOPs of one experiment run, from its config and trained members.

`experiments.run` records these next to the accuracy figures, so every
results.json says what its model cost (RigL's accounting, see
`tf_freetickets.metrics.flops_schedule`): a single model or an independent-run
ensemble costs M runs of `config.epochs`; EDST costs one run of
t_ex + M t_re epochs plus its M - 1 global explorations; Divide-and-Co-training
costs one run of each narrow member; gradual magnitude pruning costs each step at
the density of that step (`metrics.pruning_flops`). Inference FLOPs are per example and add up
over the members an ensemble runs.
"""

from tf_freetickets.experiments.config import edst_schedule
from tf_freetickets.metrics.flops import forward_flops
from tf_freetickets.metrics.flops_schedule import (
    dnc_training_flops,
    dst_ensemble_training_flops,
    edst_training_flops,
)
from tf_freetickets.metrics.pruning_flops import gmp_members_training_flops
from tf_freetickets.sparse.gmp import GradualMagnitudePruning


def run_flops(config, members, updater, steps_per_epoch):
    """FLOPs of the run that `config` describes.

    Args:
      config: the experiment config (`experiment_config.fashion_mnist_defaults`
        layout) the members were trained with.
      members: the trained member models (their masks give f_S).
      updater: the run's `MaskUpdater` as `experiments.runner.make_updater` builds it
        (its schedule and dense-gradient batches are costed), or None for dense.
      steps_per_epoch: optimizer steps per epoch.

    Returns:
      dict with "training_flops" (whole run, all members), "inference_flops"
      and "dense_inference_flops" (per example, summed over members) and
      "training" (the `TrainingFlops` fields).
    """
    method = "dense" if updater is None else updater
    batch_size = int(config.batch_size)
    ensemble = config.ensemble
    if isinstance(updater, GradualMagnitudePruning):  # dense start, shrinking density (EDST is refused by validate)
        label = "dnc:gmp" if ensemble.kind == "dnc" else "dst_ensemble:gmp"
        cost = gmp_members_training_flops(
            updater, list(members), label, total_steps=config.epochs * steps_per_epoch, batch_size=batch_size
        )
    elif ensemble.kind == "edst":
        schedule = edst_schedule(config)
        cost = edst_training_flops(
            method, members[0], schedule=schedule, steps_per_epoch=steps_per_epoch, batch_size=batch_size,
            end_fraction=float(config.sparse.end_fraction),
        )  # fmt: skip
    elif ensemble.kind == "dnc":
        cost = dnc_training_flops(method, list(members), total_steps=config.epochs * steps_per_epoch, batch_size=batch_size)
    else:
        cost = dst_ensemble_training_flops(
            method, list(members), total_steps=config.epochs * steps_per_epoch, batch_size=batch_size
        )
    dense, sparse = forward_flops(list(members))
    return {
        "training_flops": float(cost.total_flops),
        "inference_flops": float(sparse),
        "dense_inference_flops": float(dense),
        "training": cost.to_dict(),
    }
