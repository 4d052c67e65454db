"""Training FLOPs of single runs of any registered method and of DST/EDST/DNC ensembles.

What a method costs comes from its declared `CostFacts` (the method registry,
`tf_freetickets.sparse.registry`); this module knows no method by name. The
built-in methods' facts give:

Follows RigL (Evci et al. 2020, Sec. 4 and App. H) and FreeTickets (Liu et al.
2022, training-FLOPs columns). f_D and f_S are the dense and sparse forward
FLOPs of ONE example (`tf_freetickets.costs.forward.forward_flops`; 2 FLOPs per
multiply-add). A training step on a batch of B examples costs a forward pass, a
backward pass to the activations and one to the weights, each about one forward:

- dense:          3 f_D * B per step.
- static, SET:    3 f_S * B per step (random growth costs no FLOPs).
- RigL, CigL:     3 f_S * B per step, plus at every mask update G extra batches of
                  B_g examples whose dense gradient costs a sparse forward (f_S),
                  a sparse backward to the activations (f_S) and a DENSE gradient
                  to the weights (f_D): G * B_g * (2 f_S + f_D). With G = 1 and
                  B_g = B, ΔT training steps and one update cost
                  3 f_S ΔT + 2 f_S + f_D per example, the numerator of RigL's
                  per-iteration average (3 f_S ΔT + 2 f_S + f_D) / (ΔT + 1).
                  G = 0 means the dense gradient is taken on the update step's
                  own training batch (RigL's official code; an updater with
                  `growth_gradient="step_batch..."`): that step costs
                  2 f_S + f_D instead of 3 f_S, i.e. (f_D - f_S) * B extra.
                  An updater with `dense_gradient_momentum=True` (FreeTickets'
                  code) needs the dense weight gradient at every step:
                  (2 f_S + f_D) * B per step, and its step-batch growth then
                  costs nothing more.
                  CigL's per-step random DropConnect mask only removes weights;
                  its saving and the O(weights) sampling are not counted.
- SNFS:           gradient_batches=None (default) is the paper's SNFS, which keeps
                  the momentum of the dense gradient every step: (2 f_S + f_D) * B
                  per step (RigL's table). An int G costs the library's `SNFS`
                  updater, which rebuilds the momentum from G extra dense-gradient
                  batches per update, exactly as for RigL.

The mask bookkeeping itself (sorting magnitudes, top-k, random draws) is
O(weights) per update, independent of the batch, and is not counted (RigL does
not either). f_S is constant over a run because DST keeps every layer's active
count fixed. Mask updates happen at the steps of `UpdateSchedule`: every ΔT
steps from `begin_step` to `end_step` (default `end_fraction` of the run).
"""

import dataclasses

from tf_freetickets.costs.forward import forward_flops
from tf_freetickets.sparse.registry import get_method, method_for_updater
from tf_freetickets.sparse.schedules import UpdateSchedule
from tf_freetickets.sparse.updater import MaskUpdater


@dataclasses.dataclass(frozen=True)
class TrainingFlops:
    """FLOPs of a training run (or the sum of several runs / members).

    Attributes:
      method: a registered method name ("dense", "rigl", ...; `tft.sparse.method_names()`), or a label for a
        sum ("dst_ensemble:rigl", "edst:set", "dnc:dense").
      total_flops: step_flops + gradient_flops.
      step_flops: FLOPs of the training steps (forward + backward).
      gradient_flops: extra FLOPs of dense gradients for mask updates and
        global exploration (0 for dense, static, SET and paper SNFS).
      num_steps: optimizer steps of one run.
      num_mask_updates: mask updates of one run.
      batch_size: training batch size.
      runs: runs or members summed (1 for a single run).
      num_global_explorations: EDST global exploration steps of one run.
    """

    method: str
    total_flops: int
    step_flops: int
    gradient_flops: int
    num_steps: int
    num_mask_updates: int
    batch_size: int
    runs: int = 1
    num_global_explorations: int = 0

    def to_dict(self):
        """The fields as a JSON-able dict."""
        return dataclasses.asdict(self)


def num_mask_updates(total_steps, update_every=100, end_step=None, begin_step=0, end_fraction=0.75):
    """Number of mask updates in a run, the steps `UpdateSchedule.is_update_step` accepts.

    Args:
      total_steps: optimizer steps of the run.
      update_every: ΔT in steps.
      end_step: last step an update may happen (None: int(end_fraction * total_steps)).
      begin_step: first step an update may happen (updates at begin_step + k ΔT, step > 0).
      end_fraction: used when `end_step` is None (RigL: 0.75, FreeTickets: 1.0).

    Returns:
      int.
    """
    schedule = UpdateSchedule(
        update_every=update_every, end_step=end_step, begin_step=begin_step, end_fraction=end_fraction
    ).resolved(total_steps)
    first = schedule.begin_step if schedule.begin_step > 0 else schedule.update_every
    last = min(schedule.end_step, total_steps)
    return 0 if last < first else (last - first) // schedule.update_every + 1


def _method_and_facts(method, gradient_batches):
    """(name, CostFacts) of a method name or a built updater, from the registry."""
    if isinstance(method, MaskUpdater):
        entry = method_for_updater(method)
        facts = entry.cost_facts(method, gradient_batches)
    else:
        entry = get_method(method)
        facts = entry.cost_facts(None, gradient_batches)
    if facts.density_follows_schedule:
        raise ValueError(
            f"Method {entry.name!r} changes its density along a pruning schedule; cost it with "
            "tft.costs.gmp_training_flops (every step at its own density)."
        )
    return entry.name, facts


def _resolve(method, update_every, end_step, begin_step, end_fraction, gradient_batches):
    """Method name, its cost facts and schedule settings; a MaskUpdater fills the ones left None."""
    if gradient_batches is not None and (isinstance(gradient_batches, bool) or gradient_batches < 0):
        raise ValueError(f"gradient_batches must be >= 0 or None, got {gradient_batches!r}.")
    name, facts = _method_and_facts(method, gradient_batches)
    if isinstance(method, MaskUpdater):
        schedule = method.schedule
        update_every = schedule.update_every if update_every is None else update_every
        end_step = schedule.end_step if end_step is None else end_step
        begin_step = schedule.begin_step if begin_step is None else begin_step
        end_fraction = getattr(schedule, "end_fraction", 0.75) if end_fraction is None else end_fraction
    update_every = 100 if update_every is None else update_every
    begin_step = 0 if begin_step is None else begin_step
    end_fraction = 0.75 if end_fraction is None else end_fraction
    return name, facts, update_every, end_step, begin_step, end_fraction


def _forward(model, dense_flops, sparse_flops, name, facts):
    if model is not None:
        if dense_flops is not None or sparse_flops is not None:
            raise ValueError("Give either a model or dense_flops/sparse_flops, not both.")
        dense_flops, sparse_flops = forward_flops(model)
    if dense_flops is None:
        raise ValueError(f"Method {name!r} needs the dense forward FLOPs: pass model= or dense_flops=.")
    if facts.dense:
        return dense_flops, dense_flops
    if sparse_flops is None:
        raise ValueError(f"Method {name!r} needs the sparse forward FLOPs: pass model= or sparse_flops=.")
    return dense_flops, sparse_flops


def _gradient_pass(facts, dense, sparse, batch_size, gradient_batch_size):
    """Extra FLOPs of one dense-gradient computation for a mask update (0 if growth reads none)."""
    batches = facts.growth_gradient_batches
    if batches is None:
        return 0
    if batches == 0:
        return (dense - sparse) * batch_size
    return batches * gradient_batch_size * (2 * sparse + dense)


def training_flops(
    method,
    model=None,
    *,
    dense_flops=None,
    sparse_flops=None,
    total_steps,
    batch_size,
    update_every=None,
    end_step=None,
    begin_step=None,
    end_fraction=None,
    gradient_batches=None,
    gradient_batch_size=None,
):
    """FLOPs of one training run, by RigL's accounting (see the module docstring for the formulas).

    Args:
      method: a registered method name (`tft.sparse.method_names()`), or a
        `MaskUpdater` (Static, SET, RigL, SNFS, CigL), whose schedule and
        `gradient_batches` fill the arguments left None.
      model: a built model to read f_D and f_S from (`forward_flops`); or give
        `dense_flops` (and `sparse_flops` for sparse methods), per example.
      total_steps: optimizer steps of the run (epochs * steps per epoch).
      batch_size: training examples per step, B.
      update_every: ΔT in steps (default 100).
      end_step: last mask-update step (default int(end_fraction * total_steps)).
      begin_step: first mask-update step (default 0).
      end_fraction: default 0.75 (RigL).
      gradient_batches: G, extra dense-gradient batches per update (RigL/CigL
        default 1; 0: the update step's own batch; SNFS default None: the
        paper's dense gradient every step).
      gradient_batch_size: B_g, examples per dense-gradient batch (default B).

    Returns:
      `TrainingFlops` (total FLOPs of the run, not per example).

    Raises:
      ValueError: unknown method, missing forward FLOPs, bad counts.
    """
    return _run(
        method,
        model,
        dense_flops,
        sparse_flops,
        total_steps,
        batch_size,
        (update_every, end_step, begin_step, end_fraction, gradient_batches, gradient_batch_size),
    )


def _run(method, model, dense_flops, sparse_flops, total_steps, batch_size, settings, explorations=0):
    """`training_flops`, plus `explorations` EDST global exploration steps (one dense-gradient pass each)."""
    update_every, end_step, begin_step, end_fraction, gradient_batches, gradient_batch_size = settings
    name, facts, update_every, end_step, begin_step, end_fraction = _resolve(
        method, update_every, end_step, begin_step, end_fraction, gradient_batches
    )
    if total_steps < 0 or batch_size < 1:
        raise ValueError(f"Need total_steps >= 0 and batch_size >= 1, got {total_steps!r} and {batch_size!r}.")
    dense, sparse = _forward(model, dense_flops, sparse_flops, name, facts)
    gradient_batch_size = batch_size if gradient_batch_size is None else gradient_batch_size
    if facts.dense:
        per_step, updates = 3 * dense, 0
    else:
        per_step = 2 * sparse + dense if facts.dense_weight_gradient_every_step else 3 * sparse
        updates = num_mask_updates(total_steps, update_every, end_step, begin_step, end_fraction) if facts.updates_masks else 0
    step_flops = per_step * batch_size * total_steps
    passes = updates + explorations
    gradient_flops = passes * _gradient_pass(facts, dense, sparse, batch_size, gradient_batch_size)
    if facts.dense_weight_gradient_every_step and facts.growth_gradient_batches == 0:
        gradient_flops = 0  # the steps already computed the dense gradient
    return TrainingFlops(
        name, step_flops + gradient_flops, step_flops, gradient_flops, total_steps, updates, batch_size, 1, explorations
    )


def _sum(label, runs):
    first = runs[0]
    return TrainingFlops(
        label,
        sum(r.total_flops for r in runs),
        sum(r.step_flops for r in runs),
        sum(r.gradient_flops for r in runs),
        first.num_steps,
        first.num_mask_updates,
        first.batch_size,
        sum(r.runs for r in runs),
        first.num_global_explorations,
    )


def dst_ensemble_training_flops(method, model_or_models=None, *, num_members=None, **run_kwargs):
    """FLOPs of a DST ensemble (FreeTickets): M independent sparse runs, M x one run.

    Args:
      method: as for `training_flops`.
      model_or_models: one model (every member costs the same: give
        `num_members`), a list of member models (each run costed with its own
        masks), or None with `dense_flops`/`sparse_flops` in `run_kwargs`.
      num_members: M, needed unless a list of models is given.
      **run_kwargs: `training_flops` arguments of ONE run (total_steps,
        batch_size, update_every, ...).

    Returns:
      `TrainingFlops` with runs = M and total = sum over the runs.
    """
    if isinstance(model_or_models, (list, tuple)):
        if num_members is not None and num_members != len(model_or_models):
            raise ValueError(f"num_members={num_members} but {len(model_or_models)} models were given.")
        runs = [training_flops(method, m, **run_kwargs) for m in model_or_models]
    else:
        if num_members is None or num_members < 1:
            raise ValueError(f"num_members must be a positive integer, got {num_members!r}.")
        runs = [training_flops(method, model_or_models, **run_kwargs)] * num_members
    if not runs:
        raise ValueError("A DST ensemble needs at least one member.")
    return _sum(f"dst_ensemble:{runs[0].method}", runs)


def edst_training_flops(
    method,
    model=None,
    *,
    schedule=None,
    steps_per_epoch,
    batch_size,
    dense_flops=None,
    sparse_flops=None,
    update_every=None,
    end_step=None,
    begin_step=None,
    end_fraction=1.0,
    gradient_batches=None,
    gradient_batch_size=None,
):
    """FLOPs of ONE EDST run producing M tickets (FreeTickets Sec. 3.2).

    The run lasts t_ex + M t_re epochs (`EDSTSchedule.total_epochs`), with DST
    mask updates throughout (paper: end_fraction 1.0) at the cost of `method`,
    plus M - 1 global exploration steps; each of those costs one dense-gradient
    computation (G batches, as a mask update) when growth is gradient based
    (RigL, CigL, library SNFS) and nothing for SET. FreeTickets reports this
    total relative to ONE dense model trained for the standard budget (e.g.
    250 epochs on CIFAR, while EDST runs 150 + 3 x 100 = 450): compute that
    with `relative_to_dense(edst, training_flops("dense", ...))`.

    Args:
      method: a sparse method or `MaskUpdater` ("dense" is rejected).
      model: the sparse model to read f_D, f_S from (or pass dense_flops and
        sparse_flops, per example).
      schedule: an `EDSTSchedule` or an `EDST` callback (required; any object
        with `total_epochs` and `global_exploration_epochs`).
      steps_per_epoch: optimizer steps per epoch.
      batch_size: training batch size.
      update_every, end_step, begin_step: the DST update schedule, as for
        `training_flops` (paper: ΔT = 1000 steps at batch 128).
      end_fraction: fraction of the run with DST updates (paper: 1.0).
      gradient_batches, gradient_batch_size: as for `training_flops`.

    Returns:
      `TrainingFlops` labelled "edst:<method>" with num_global_explorations.
    """
    if schedule is None:
        raise ValueError(
            "edst_training_flops needs the run's schedule: an EDSTSchedule (FreeTickets' CIFAR layout is "
            "EDSTSchedule(num_tickets=3, exploration_epochs=150, refinement_epochs=100)) or the EDST callback."
        )
    schedule = getattr(schedule, "schedule", schedule)  # an EDST callback carries its schedule
    name, facts = _method_and_facts(method, gradient_batches)
    if facts.dense:
        raise ValueError(f"EDST trains a sparse network; use a sparse method, not {name!r}.")
    settings = (update_every, end_step, begin_step, end_fraction, gradient_batches, gradient_batch_size)
    total_steps = schedule.total_epochs * steps_per_epoch
    explorations = len(schedule.global_exploration_epochs)
    run = _run(method, model, dense_flops, sparse_flops, total_steps, batch_size, settings, explorations)
    return dataclasses.replace(run, method=f"edst:{run.method}")


def dnc_training_flops(method, members, **run_kwargs):
    """FLOPs of Divide-and-Co-training (Zhao et al. 2022): the sum over the S members.

    Every member runs its own forward and backward pass on its own view of each
    batch, so each costs a full training run of its (narrow) network; the
    co-training loss and view augmentation are not counted.

    Args:
      method: as for `training_flops` ("dense" in the paper).
      members: a list of member models, a `CoTrainingModel`/`EnsembleModel`, or
        a list of (dense_flops, sparse_flops) per-example pairs.
      **run_kwargs: `training_flops` arguments shared by the members
        (total_steps, batch_size, ...).

    Returns:
      `TrainingFlops` labelled "dnc:<method>" with runs = S.
    """
    members = list(getattr(members, "members", members))
    if not members:
        raise ValueError("Divide-and-Co-training needs at least one member.")
    runs = []
    for member in members:
        if isinstance(member, (list, tuple)):
            dense, sparse = member
            runs.append(training_flops(method, dense_flops=dense, sparse_flops=sparse, **run_kwargs))
        else:
            runs.append(training_flops(method, member, **run_kwargs))
    return _sum(f"dnc:{runs[0].method}", runs)
