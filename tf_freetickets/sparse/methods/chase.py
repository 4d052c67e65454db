"""Chase: channel-aware dynamic sparse training (Yin et al., NeurIPS 2023).

"Dynamic Sparsity Is Channel-Level Sparsity Learner" (arXiv 2305.19454) and the authors' code
(luuyin/chase, `Cifar/sparselearning/core_dst_chase.py`: `Masking.del_layer`, `prune_score`,
`gradual_pruning_rate`, `step`). Unstructured DST leaves some channels far sparser than others;
Chase removes those channels gradually during training, so the trained ticket has whole output
channels (units) gone and `tft.compact` can shrink its shapes.

Here: RigL (drop the smallest |w|, grow the largest |dense gradient|, cosine drop fraction, ERK
densities) with one more step at every mask update of a layer that may lose channels
(`chase_update`, in the layer's (fan-in, units) layout of `srigl.unit_layout`):

1. Channel target: n(t) = min(floor(S(t) U), U - ceil(B / F)) removed units of U, B the layer's
   active count, F its dense fan-in. S(t) is the gradual (cubic) schedule of Zhu & Gupta the code's
   `gradual_pruning_rate` uses: 0 up to step t0, S_c (1 - (1 - (t - t0) / (t1 - t0))^3) up to t1,
   S_c after. The cap keeps enough units to hold the B weights, so counts stay exact.
2. Removed units are the units whose mask column is all zero (the state lives in the masks, so a
   resumed run continues exactly). If fewer than n(t) are removed, the live units of smallest UMM
   are removed: UMM (unmasked mean magnitude) = sum of |w| over the unit's F incoming positions,
   masked ones (zero) included, divided by F (the code's `mag_wise` metric, the one its scripts
   use). Ties remove the lower unit index. Their weights, mask and optimizer slots become zero.
3. RigL's drop and grow over the units left: the floor(f n') active weights of smallest |w| are
   dropped (n' the active count after step 2, f the drop fraction), then B - kept positions of
   largest |dense gradient| in live units are grown (the dropped and the freed budget), a weight
   dropped in this update may be grown again. Ties keep and grow the lower flat index. So the
   layer ends with exactly B active weights, its freed budget spread over its remaining units.

Layers that never lose channels (`ChaseLayerPlan.prunable` False): the last masked layer, layers
whose output feeds an arithmetic merge (a residual Add) or a model output (`channel_exits`), and
kernels other than Dense / Conv1D/2D/3D. They run RigL's update unchanged. Departures from the
paper and code are listed in docs/METHODS.md ("Chase").
"""

import dataclasses
import math

import keras
from keras import ops

from tf_freetickets.sparse.channel_exits import channel_exits
from tf_freetickets.sparse.drop_grow import top_k_mask
from tf_freetickets.sparse.masked_set import MaskedLayerSet
from tf_freetickets.sparse.methods.common import dst_updater_kwargs, gradient_growth_costs
from tf_freetickets.sparse.methods.rigl import GROWTH_GRADIENT_FIELD, RigL
from tf_freetickets.sparse.methods.srigl import UnitLayout, unit_layout
from tf_freetickets.sparse.registry import ConfigField, register_method
from tf_freetickets.sparse.schedules import UpdateSchedule

_CHANNEL_KERNELS = (keras.layers.Dense, keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D)
_NOT_CHANNEL_KERNELS = (
    keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose,
    keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D, keras.layers.SeparableConv1D,
    keras.layers.SeparableConv2D,
)  # fmt: skip


@dataclasses.dataclass
class ChaseSchedule(UpdateSchedule):
    """RigL's `UpdateSchedule` plus Chase's channel schedule.

    Attributes (besides `UpdateSchedule`'s):
      channel_sparsity: S_c, the fraction of each prunable layer's units removed at the end.
      channel_begin_fraction, channel_end_fraction: t0 and t1 as fractions of the run.
      channel_begin_step, channel_end_step: t0 and t1 in steps (given, or set by `resolved`: then
        t1 is at most the schedule's `end_step`, since channels are removed at mask updates only).
    """

    channel_sparsity: float = 0.5
    channel_begin_fraction: float = 0.0
    channel_end_fraction: float = 0.8125
    channel_begin_step: int | None = None
    channel_end_step: int | None = None

    def __post_init__(self):
        super().__post_init__()
        if not 0.0 <= self.channel_sparsity < 1.0:
            raise ValueError(f"channel_sparsity must be in [0, 1), got {self.channel_sparsity!r}.")
        if not 0.0 <= self.channel_begin_fraction < self.channel_end_fraction <= 1.0:
            raise ValueError(
                "Need 0 <= channel_begin_fraction < channel_end_fraction <= 1, got "
                f"{self.channel_begin_fraction!r} and {self.channel_end_fraction!r}."
            )
        steps = (self.channel_begin_step, self.channel_end_step)
        if None not in steps and not 0 <= steps[0] <= steps[1]:
            raise ValueError(f"Need 0 <= channel_begin_step <= channel_end_step, got {steps[0]!r} and {steps[1]!r}.")

    def resolved(self, total_steps):
        """`UpdateSchedule.resolved`, then t0 = int(begin fraction * total), t1 = min(int(end fraction * total), end_step).

        Steps given explicitly are kept (a run that is stopped and resumed with another length).
        """
        schedule = super().resolved(total_steps)
        if schedule.channel_begin_step is not None and schedule.channel_end_step is not None:
            return schedule
        if total_steps is None:
            raise ValueError(
                "Chase's channel schedule needs the run length, or explicit channel_begin_step and channel_end_step."
            )
        begin = schedule.channel_begin_step
        begin = int(self.channel_begin_fraction * total_steps) if begin is None else begin
        end = schedule.channel_end_step
        end = max(min(int(self.channel_end_fraction * total_steps), schedule.end_step), begin) if end is None else end
        return dataclasses.replace(schedule, channel_begin_step=begin, channel_end_step=end)

    def channel_fraction_at(self, step):
        """S(t): the gradual channel sparsity after step `step` (a Python number or an int tensor)."""
        if self.channel_end_step is None:
            raise ValueError("Call resolved(total_steps) before asking for the channel sparsity.")
        begin, end = self.channel_begin_step, self.channel_end_step
        progress = ops.clip((ops.cast(step, "float32") - begin) / float(max(end - begin, 1)), 0.0, 1.0)
        return self.channel_sparsity * (1.0 - (1.0 - progress) ** 3)


def removed_units(layer):
    """Bool numpy (U,): the units of masked `layer` whose mask column is all zero (Chase's removed channels)."""
    layout = unit_layout(layer)
    return ops.convert_to_numpy(ops.sum(layout.to_matrix(layer.kernel_mask), axis=0)) == 0


def _top_k_among(scores, candidates, k):
    """0/1 matrix of min(k, #candidates) candidates of largest score (ties to the lower flat index)."""
    flat = ops.reshape(ops.where(candidates, scores, ops.cast(float("-inf"), scores.dtype)), (-1,))
    k = ops.minimum(ops.cast(k, "int32"), ops.sum(ops.cast(candidates, "int32")))
    return ops.reshape(top_k_mask(flat, k), ops.shape(scores))


def chase_update(mask, weights, gradient, drop_fraction, num_removed, need_grown=False):
    """One Chase update of a layer in (F, U) layout (module docstring, steps 2 and 3).

    Args:
      mask, weights, gradient: (F, U) tensors (0/1 mask, kernel, dense gradient).
      drop_fraction: scalar f.
      num_removed: int scalar tensor n(t), the units that are to be removed after the update.
      need_grown: also return the 0/1 mask of grown positions.

    Returns:
      (new_mask, grown): (F, U) tensors; `grown` is None unless `need_grown`.
    """
    fan_in_dim, units = mask.shape
    dtype = mask.dtype
    budget = ops.sum(mask)
    alive = ops.sum(mask, axis=0) > 0
    umm = ops.sum(ops.abs(ops.cast(weights, dtype)) * mask, axis=0) / float(fan_in_dim)
    to_remove = ops.maximum(ops.cast(num_removed, "int32") - (units - ops.sum(ops.cast(alive, "int32"))), 0)
    lowest = ops.cast(float("-inf"), dtype)
    # Smallest UMM first; a top-k of the negated scores breaks ties towards the lower index.
    removed = top_k_mask(ops.where(alive, -umm, lowest), to_remove) > 0
    alive = ops.logical_and(alive, ops.logical_not(removed))
    active = ops.logical_and(mask > 0, alive[None, :])
    count = ops.sum(ops.cast(active, dtype))
    num_drop = ops.floor(ops.cast(drop_fraction, dtype) * count)
    kept = _top_k_among(ops.abs(ops.cast(weights, dtype)), active, count - num_drop)
    candidates = ops.logical_and(kept == 0, ops.broadcast_to(alive[None, :], (fan_in_dim, units)))
    grown = _top_k_among(ops.abs(ops.cast(gradient, dtype)), candidates, budget - ops.sum(kept))
    return kept + grown, (grown if need_grown else None)


@dataclasses.dataclass(frozen=True)
class ChaseLayerPlan:
    """What Chase fixes for one masked layer when it attaches.

    Attributes:
      layout: its `UnitLayout` (None for a layer that never loses channels and is not Dense/Conv).
      budget: B, its active count at attach.
      prunable: whether its channels may be removed.
      reason: why not, when not.
    """

    layout: UnitLayout | None
    budget: int
    prunable: bool
    reason: str = ""

    @property
    def max_removed(self):
        """U - ceil(B / F): the most units it may lose and still hold its B weights."""
        return self.layout.units - math.ceil(self.budget / self.layout.fan_in) if self.prunable else 0


def _layer_plan(model, layer, is_last):
    budget = int(ops.convert_to_numpy(ops.sum(layer.kernel_mask)))
    if is_last:
        return ChaseLayerPlan(None, budget, False, "the last masked layer")
    if not isinstance(layer, _CHANNEL_KERNELS) or isinstance(layer, _NOT_CHANNEL_KERNELS):
        return ChaseLayerPlan(None, budget, False, f"a {type(layer).__name__} kernel")
    reasons = channel_exits(model, layer)
    if reasons:
        return ChaseLayerPlan(None, budget, False, "; ".join(reasons))
    return ChaseLayerPlan(unit_layout(layer), budget, True)


class Chase(RigL):
    """Chase (Yin et al. 2023): RigL that gradually removes the output channels of smallest UMM.

    Grows by the dense gradient like `RigL` (same score source and `growth_gradient` options).
    Use it with `MaskUpdate`; the channel schedule is resolved with the run length.

    Args:
      channel_sparsity: S_c in [0, 1), the fraction of each prunable layer's units removed by
        `channel_end_fraction` (the code's `start_layer_rate`: 0.5 in its CIFAR scripts).
      channel_begin_fraction, channel_end_fraction: t0, t1 of the cubic ramp as fractions of the
        run (the code: 0 and `stop_gmp_epochs / epochs` = 130 / 160).
      channel_begin_step, channel_end_step: t0, t1 in steps (override the fractions).
      *args, **kwargs: `RigL`'s arguments.

    After `attach`, `plans[i]` is layer i's `ChaseLayerPlan`.
    """

    def __init__(
        self, *args, channel_sparsity=0.5, channel_begin_fraction=0.0, channel_end_fraction=0.8125,
        channel_begin_step=None, channel_end_step=None, **kwargs,
    ):  # fmt: skip
        super().__init__(*args, **kwargs)
        self.schedule = ChaseSchedule(
            **dataclasses.asdict(self.schedule),
            channel_sparsity=channel_sparsity,
            channel_begin_fraction=channel_begin_fraction,
            channel_end_fraction=channel_end_fraction,
            channel_begin_step=channel_begin_step,
            channel_end_step=channel_end_step,
        )
        self.plans = None

    def attach(self, model, layers=None):
        """Fixes the layer plans (which layers may lose channels), then installs RigL's hooks."""
        layers = MaskedLayerSet(model) if layers is None else layers
        self.plans = [_layer_plan(model, layer, index == len(layers) - 1) for index, layer in enumerate(layers)]
        return super().attach(model, layers)

    def new_mask(self, layer_index, old_mask, weights, scores, step, drop_fraction):
        """The hook: `chase_update` for a prunable layer, RigL's update for the others."""
        if self.plans is None:
            raise ValueError("Chase is not attached; use it through MaskUpdate or call attach(model) first.")
        plan = self.plans[layer_index]
        if not plan.prunable:
            return super().new_mask(layer_index, old_mask, weights, scores, step, drop_fraction)
        layout = plan.layout
        target = ops.floor(self.schedule.channel_fraction_at(step) * layout.units)
        target = ops.minimum(ops.cast(target, "int32"), plan.max_removed)
        to_matrix = layout.to_matrix
        new, grown = chase_update(
            to_matrix(old_mask), to_matrix(weights), to_matrix(scores), drop_fraction, target, self.reinit_when_same
        )
        return layout.from_matrix(new), (None if grown is None else layout.from_matrix(grown))


# -- registry -------------------------------------------------------------------
def check_channel_sparsity(value, sparse):
    """Config check of `sparse.chase_channel_sparsity`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ValueError(f"config.sparse.chase_channel_sparsity={value!r} must be a number in [0, 1).")


def _check_fraction(name):
    def check(value, sparse):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise ValueError(f"config.sparse.{name}={value!r} must be a number in [0, 1].")
        begin, end = sparse.get("chase_begin_fraction", 0.0), sparse.get("chase_end_fraction", 0.8125)
        if name == "chase_end_fraction" and not begin < end:
            raise ValueError(f"config.sparse.chase_end_fraction={end!r} must be above chase_begin_fraction={begin!r}.")

    check.__doc__ = f"Config check of `sparse.{name}`."
    return check


def _make_chase(sparse, seed):
    return Chase(
        channel_sparsity=float(sparse.chase_channel_sparsity),
        channel_begin_fraction=float(sparse.chase_begin_fraction),
        channel_end_fraction=float(sparse.chase_end_fraction),
        growth_gradient=sparse.get("growth_gradient", "extra_batch"),
        **dst_updater_kwargs(sparse, seed),
    )


register_method(
    "chase",
    summary="Chase (Yin et al. 2023): RigL that gradually removes the output channels of smallest mean magnitude.",
    make_updater=_make_chase,
    # RigL's accounting: one dense gradient per update; removed channels' budget is regrown in the
    # layer, so the sparse step cost (read from the final masks) is RigL's.
    cost_facts=gradient_growth_costs,
    config_fields=(
        GROWTH_GRADIENT_FIELD,
        ConfigField(
            "chase_channel_sparsity",
            0.5,
            "chase: S_c, fraction of each prunable layer's channels removed",
            check_channel_sparsity,
        ),
        ConfigField(
            "chase_begin_fraction",
            0.0,
            "chase: fraction of training where channel removal starts",
            _check_fraction("chase_begin_fraction"),
        ),
        ConfigField(
            "chase_end_fraction",
            0.8125,
            "chase: fraction of training where it reaches S_c (at most end_fraction)",
            _check_fraction("chase_end_fraction"),
        ),
    ),
    updater_class=Chase,
    dynamic=True,
)
