"""Training and inference FLOPs of one experiment run, from its plan and trained members.

`experiments.run` records these next to the accuracy figures, so every
results.json says what its model cost (RigL's accounting, `tf_freetickets.costs`,
from the method's declared cost facts): a single model or an independent-run
ensemble costs M runs of `config.epochs`; EDST costs one run of
t_ex + M t_re epochs plus its M - 1 global explorations; Divide-and-Co-training
costs one run of each narrow member; a method whose density follows a pruning
schedule costs each step at the density of that step. Inference FLOPs are per
example and add up over the members an ensemble runs.
"""

from tf_freetickets.costs import (
    dnc_training_flops,
    dst_ensemble_training_flops,
    edst_training_flops,
    forward_flops,
    gmp_members_training_flops,
)


def run_flops(plan, members, steps_per_epoch):
    """FLOPs of the run that `plan` describes.

    Args:
      plan: the run's `experiments.plan.RunPlan`.
      members: the trained member models (their masks give f_S).
      steps_per_epoch: optimizer steps per epoch.

    Returns:
      dict with "training_flops" (whole run, all members), "inference_flops"
      and "dense_inference_flops" (per example, summed over members) and
      "training" (the `TrainingFlops` fields).
    """
    updater = plan.sparsity.make_updater(plan.seed)
    method = plan.sparsity.name if updater is None else updater
    facts = plan.sparsity.method.cost_facts(updater, None)
    batch_size = int(plan.config.batch_size)
    kind = plan.ensemble.kind
    total_steps = plan.epochs * steps_per_epoch
    if facts.density_follows_schedule:  # dense start, shrinking density (EDST is refused: not dynamic)
        label = f"{'dnc' if kind == 'dnc' else 'dst_ensemble'}:{plan.sparsity.name}"
        cost = gmp_members_training_flops(updater, list(members), label, total_steps=total_steps, batch_size=batch_size)
    elif kind == "edst":
        cost = edst_training_flops(
            method, members[0], schedule=plan.ensemble.edst, steps_per_epoch=steps_per_epoch, batch_size=batch_size,
            end_fraction=float(plan.config.sparse.end_fraction),
        )  # fmt: skip
    elif kind == "dnc":
        cost = dnc_training_flops(method, list(members), total_steps=total_steps, batch_size=batch_size)
    else:
        cost = dst_ensemble_training_flops(method, list(members), total_steps=total_steps, batch_size=batch_size)
    dense, sparse = forward_flops(list(members))
    return {
        "training_flops": float(cost.total_flops),
        "inference_flops": float(sparse),
        "dense_inference_flops": float(dense),
        "training": cost.to_dict(),
    }
