"""Training FLOPs of gradual magnitude pruning: a dense start and a shrinking density.

RigL's convention for its pruning baselines (Evci et al. 2020, App. H): every
training step costs a forward and two backward passes of the network *as it
is at that step*, 3 f(t) B, where f(t) is the forward FLOPs of one example
with the masks in force during step t. Training starts dense (f = f_D) and f
falls at each pruning step along the schedule to the final f_S. Pruning needs
no dense gradient, so there is no extra term; the magnitude sort is O(weights)
and not counted (as for the DST methods in `flops_schedule`).

Per masked layer l, f_l(t) = f_D,l * active_l(t) / size_l, with active_l(t)
the count `GradualMagnitudePruning` prunes to (the masks after the prunings at
steps < t; step 0 counts when the schedule starts there). Unmasked layers
always cost their dense FLOPs.
"""

import dataclasses

from tf_freetickets.costs.forward import layer_forward_flops
from tf_freetickets.costs.training import TrainingFlops
from tf_freetickets.sparse import layers as masking
from tf_freetickets.sparse.methods.gmp import GradualMagnitudePruning


def _bound_copy(updater, model, total_steps):
    """A copy of `updater` with its schedule resolved for `total_steps` and targets bound to `model`."""
    steps = updater.schedule.resolved(total_steps)
    copy = GradualMagnitudePruning(
        steps.pruning_schedule,
        updater.distribution,
        updater.layer_sparsity,
        updater.erk_power_scale,
        steps.prune_at_end_step,
        steps.step_convention,
    )
    copy.bind(masking.masked_layers(model))
    return copy


def gmp_training_flops(updater, model, *, total_steps, batch_size):
    """FLOPs of one gradual-magnitude-pruning run of `total_steps` steps (see the module docstring).

    Args:
      updater: the run's `GradualMagnitudePruning` (its schedule, resolved for
        `total_steps` if it is a function of the run length, and its
        layer-wise targets).
      model: the masked model (any masks: the counts come from the schedule),
        built, so its per-layer FLOPs can be read.
      total_steps: optimizer steps of the run.
      batch_size: training examples per step.

    Returns:
      `TrainingFlops` labelled "gmp" (gradient_flops 0; num_mask_updates counts
      the pruning steps, step 0 included when the schedule prunes there).
    """
    if not isinstance(updater, GradualMagnitudePruning):
        raise ValueError(f"gmp_training_flops needs a GradualMagnitudePruning updater, got {type(updater).__name__}.")
    if total_steps < 0 or batch_size < 1:
        raise ValueError(f"Need total_steps >= 0 and batch_size >= 1, got {total_steps!r} and {batch_size!r}.")
    if updater.is_global:
        raise ValueError('distribution="global" lets the weights set per-layer counts; its FLOPs need the recorded masks.')
    pruning = _bound_copy(updater, model, total_steps)
    rows = layer_forward_flops(model)
    index = {name: i for i, name in enumerate(pruning.layer_names)}
    if len(index) != len(pruning.layer_names):
        raise ValueError("gmp_training_flops needs unique masked layer names; cost each ensemble member on its own.")
    masked_rows, fixed = [], 0
    for row in rows:
        name = row.name.rsplit("/", 1)[-1]
        if row.layer_type.startswith("Masked") and name in index:
            masked_rows.append((row.dense_flops, index[name]))
        else:
            fixed += row.dense_flops
    sizes = pruning._sizes

    forward_at = {}  # last pruning step -> forward FLOPs of one example
    step_flops = 0.0
    for step in range(1, total_steps + 1):
        last = pruning.schedule.last_update_step(step - 1)
        if last not in forward_at:
            counts = sizes if last is None else pruning.target_active_counts(pruning.schedule.schedule_step(last))
            forward_at[last] = fixed + sum(dense * counts[i] / sizes[i] for dense, i in masked_rows)
        step_flops += 3 * forward_at[last] * batch_size
    updates = sum(1 for s in range(1, total_steps + 1) if pruning.schedule.is_update_step(s))
    updates += 1 if pruning.schedule.prunes_before_first_batch() else 0
    total = int(round(step_flops))
    return TrainingFlops("gmp", total, total, 0, total_steps, updates, batch_size)


def gmp_members_training_flops(updater, members, label, **run_kwargs):
    """The sum of `gmp_training_flops` over member models (independent runs or co-trained members).

    Args:
      updater: the `GradualMagnitudePruning` each member trained with.
      members: list of member models.
      label: the returned method label, e.g. "dst_ensemble:gmp" or "dnc:gmp".
      **run_kwargs: total_steps and batch_size of one member's run.
    """
    runs = [gmp_training_flops(updater, member, **run_kwargs) for member in members]
    if not runs:
        raise ValueError("Need at least one member to cost.")
    return dataclasses.replace(
        runs[0],
        method=label,
        total_flops=sum(r.total_flops for r in runs),
        step_flops=sum(r.step_flops for r in runs),
        runs=len(runs),
    )
