"""SRigL: Structured RigL, dynamic sparse training with a constant fan-in (Lasby et al., ICLR 2024).

"Dynamic Sparse Training with Structured Sparsity" (arXiv 2305.02299, the SRigL method section)
and the authors' code (calgaryml/condensed-sparsity,
`src/rigl_torch/rigl_constant_fan.py`: `RigLConstFanScheduler`;
`src/rigl_torch/utils/rigl_utils.py`: `get_fan_in_after_ablation`). RigL's
update (drop the smallest |w|, grow the largest |dense gradient|, cosine
drop fraction, ERK densities) under one constraint: every active output unit
(neuron, or convolution filter) of a layer has the same number of active
incoming weights, its fan-in k. A layer of U units whose kernel holds B
active weights (its ERK count, the "budget") has k = floor(B / U).

One update of a layer with n active weights and drop fraction f
(`constant_fan_in_update`):

1. Kept set, RigL's: the n - floor(f n) active weights of largest |w|, chosen
   over the whole layer (`_get_drop_mask` of the code).
2. Neuron ablation (the paper's neuron ablation; the code's
   `_get_neurons_to_ablate`): a weight is salient if it is kept, or among
   the floor(f n) positions of the whole layer with the largest |dense
   gradient| (the union of RigL's two criteria). A unit with fewer than
   max(1, floor(gamma_sal k0)) salient weights is ablated, k0 = floor(B / U)
   the fan-in without ablation; gamma_sal = 0.3 is the paper's value (the
   code's `min_salient_weights_per_neuron: 0.3` with
   `use_sparse_const_fan_in_for_ablation: True`). The threshold is lowered so
   that at least floor(B / F) + 1 units survive (F the dense fan-in), so the
   new fan-in never exceeds F. Ablated units get all-zero columns; an ablated
   unit comes back at a later update if it has enough salient weights again
   (its dense gradient still flows). gamma_sal = 0 turns ablation off.
3. New fan-in: k = floor(B / A) for the A units left. The budget of the
   ablated units goes to the others; the remainder B mod A stays unused, as
   in the code's `get_fan_in_after_ablation`, so the layer holds k * A <= B
   weights (exactly k0 * U while nothing is ablated).
4. Kept weights are restricted to the surviving units (the code pushes the
   ablated units' drop scores below every other), and a unit that keeps more
   than k drops its smallest |w| down to k.
5. Growth per unit: each surviving unit grows the k - kept positions of
   largest |dense gradient| among its positions not kept (a weight dropped
   in this update may be grown again, as in RigL).

Ties go to the lower index: of the layer's flattened (fan-in, units) matrix
in steps 1 and 2 (the kernel's own flat order for Dense and convolutions),
and of the fan-in position within a unit in steps 4 and 5.

The last masked layer (the classifier) keeps a constant fan-in but is never
ablated, as in the code (`no_ablation_module_names` unset: the last layer).

Initial masks (the code's `random_sparsify`): at `attach`, when the optimizer
is at step 0, each layer's mask is redrawn to k0 = floor(B / U) weights per
unit, B the layer's ERK count from `sparsify` (`target_density`): each unit
keeps k0 of its currently active positions chosen at random, or all of them
plus random inactive positions when it has fewer than k0 (a uniformly random
constant fan-in mask, seeded from (seed, layer index)). Positions that become
active take values from the layer's own kernel initializer (a draw seeded
from (seed, layer index)), positions kept keep their values; the kernel is
zeroed outside the new mask. The redraw is idempotent: a mask that already
has k0 weights per unit is left as it is.
"""

import dataclasses
import math

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from tf_freetickets.sparse import optimizer_slots
from tf_freetickets.sparse.densities import active_count
from tf_freetickets.sparse.drop_grow import top_k_mask
from tf_freetickets.sparse.masked_set import MaskedLayerSet
from tf_freetickets.sparse.methods.common import dst_updater_kwargs, gradient_growth_costs
from tf_freetickets.sparse.methods.rigl import GROWTH_GRADIENT_FIELD, RigL
from tf_freetickets.sparse.registry import ConfigField, register_method

# Separates the initial-mask draws from other (seed, layer) streams.
_INITIAL_MASK_STREAM = 0x5121
_TRANSPOSED_CONVS = (keras.layers.Conv1DTranspose, keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose)
_DEPTHWISE_CONVS = (keras.layers.DepthwiseConv1D, keras.layers.DepthwiseConv2D)


@dataclasses.dataclass(frozen=True)
class UnitLayout:
    """How a kernel splits into output units and their incoming weights.

    Attributes:
      shape: the kernel's shape.
      unit_axes: the kernel axes that index output units (the rest are fan-in).
    """

    shape: tuple
    unit_axes: tuple

    @property
    def perm(self):
        """Kernel axes reordered: fan-in axes first, unit axes last."""
        return tuple(a for a in range(len(self.shape)) if a not in self.unit_axes) + tuple(self.unit_axes)

    @property
    def fan_in(self):
        """F: incoming weights of one unit when dense."""
        return math.prod(self.shape[a] for a in self.perm[: len(self.shape) - len(self.unit_axes)])

    @property
    def units(self):
        """U: the number of output units."""
        return math.prod(self.shape[a] for a in self.unit_axes)

    def _is_identity(self):
        return self.perm == tuple(range(len(self.shape)))

    def to_matrix(self, x):
        """The kernel-shaped `x` as an (F, U) matrix: column u holds unit u's incoming weights."""
        if not self._is_identity():
            x = ops.transpose(x, self.perm)
        return ops.reshape(x, (self.fan_in, self.units))

    def from_matrix(self, x):
        """Inverse of `to_matrix`: an (F, U) matrix back in the kernel's shape."""
        x = ops.reshape(x, tuple(self.shape[a] for a in self.perm))
        if self._is_identity():
            return x
        return ops.transpose(x, tuple(int(i) for i in np.argsort(self.perm)))


def unit_layout(layer):
    """The `UnitLayout` of masked `layer`'s kernel: which axes are its output units.

    Dense, Conv1D/2D/3D and other layers: the last axis (the kernel is (..., in,
    out)). DepthwiseConv: the last two (input channel, depth multiplier), each
    output channel's fan-in being its kernel window. Conv*Transpose (kernel
    (..., out, in)): the second to last. EinsumDense (the projections of
    MultiHeadAttention too): the kernel axes whose letter appears in the
    output of its equation.

    Raises:
      ValueError: a kernel of rank < 2, or a layout with no fan-in or no unit axis.
    """
    shape = tuple(int(d) for d in layer.kernel_mask.shape)
    rank = len(shape)
    if rank < 2:
        raise ValueError(f"Layer {layer.name!r} has kernel shape {shape}; SRigL needs a kernel of rank >= 2.")
    if isinstance(layer, keras.layers.EinsumDense):
        inputs, output = layer.equation.replace(" ", "").split("->")
        kernel_spec = inputs.split(",")[1]
        axes = tuple(a for a, letter in enumerate(kernel_spec) if letter in output)
    elif isinstance(layer, _DEPTHWISE_CONVS):
        axes = (rank - 2, rank - 1)
    elif isinstance(layer, _TRANSPOSED_CONVS):
        axes = (rank - 2,)
    else:
        axes = (rank - 1,)
    if not axes or len(axes) == rank:
        raise ValueError(f"Layer {layer.name!r} (kernel {shape}): no split into output units and fan-in (unit axes {axes}).")
    return UnitLayout(shape, axes)


def unit_fan_ins(layer):
    """Active incoming weights of each output unit of masked `layer`: int numpy array of shape (U,)."""
    layout = unit_layout(layer)
    return np.asarray(ops.convert_to_numpy(ops.sum(layout.to_matrix(layer.kernel_mask), axis=0))).astype(int)


# -- the compiled update ------------------------------------------------------
def _top_k_among(scores, candidates, k):
    """0/1 matrix of the min(k, #candidates) candidates of largest score (ties to the lower flat index)."""
    count = ops.sum(ops.cast(candidates, "int32"))
    k = ops.minimum(ops.cast(k, "int32"), count)
    lowest = ops.cast(float("-inf"), scores.dtype)
    flat = ops.reshape(ops.where(candidates, scores, lowest), (-1,))
    return ops.reshape(top_k_mask(flat, k), ops.shape(scores))


def _ranks_within_units(scores):
    """Rank (0 = largest) of each entry within its column of the (F, U) `scores`; ties to the lower row."""
    order = tf.argsort(scores, axis=0, direction="DESCENDING", stable=True)
    return tf.argsort(order, axis=0, stable=True)


def _units_to_ablate(kept, gradient, num_drop, budget, gamma_sal):
    """Bool (U,): the units with fewer salient weights than the threshold (SRigL's neuron ablation).

    Salient: kept, or among the `num_drop` positions of the layer with the
    largest |gradient|. Threshold: max(1, floor(gamma_sal * floor(B / U))),
    lowered to the count of the (floor(B / F) + 1)-th most salient unit so
    that the surviving units can hold the budget at fan-in <= F.
    """
    fan_in_dim, units = kept.shape
    grow_salient = ops.reshape(top_k_mask(ops.reshape(gradient, (-1,)), ops.cast(num_drop, "int32")), ops.shape(kept))
    counts = ops.sum(ops.maximum(kept, grow_salient), axis=0)
    threshold = ops.cast(max(1, int(gamma_sal * (budget // units))), counts.dtype)
    floor_units = budget // fan_in_dim
    threshold = ops.minimum(threshold, ops.sort(counts)[units - 1 - floor_units])
    return counts < threshold


def constant_fan_in_update(mask, weights, grow_scores, drop_fraction, budget, gamma_sal=0.0, need_grown=False):
    """SRigL's update of one layer in (F, U) layout (see the module docstring for the steps).

    Runs inside the compiled update (keras.ops / TF ops, static shapes).

    Args:
      mask: (F, U) 0/1 float tensor, column u = unit u's incoming positions.
      weights: (F, U) kernel values.
      grow_scores: (F, U) dense gradient (its magnitude is the growth score).
      drop_fraction: scalar, the schedule's fraction f of active weights dropped.
      budget: int B, the layer's weight budget; the fan-in is floor(B / units left).
      gamma_sal: ablation threshold as a fraction of the fan-in floor(B / U);
        0 turns neuron ablation off.
      need_grown: also return the 0/1 mask of grown positions.

    Returns:
      (new_mask, grown): (F, U) 0/1 tensors; `grown` is None unless `need_grown`.
    """
    fan_in_dim, units = mask.shape
    dtype = mask.dtype
    active = mask > 0
    num_drop = ops.floor(ops.cast(drop_fraction, dtype) * ops.sum(mask))
    num_keep = ops.sum(mask) - num_drop
    magnitude = ops.abs(ops.cast(weights, dtype))
    gradient = ops.abs(ops.cast(grow_scores, dtype))
    kept = _top_k_among(magnitude, active, num_keep)
    if gamma_sal > 0 and budget // fan_in_dim < units:
        ablated = _units_to_ablate(kept, gradient, num_drop, budget, gamma_sal)
        kept = ops.cond(
            ops.any(ablated),
            lambda: _top_k_among(magnitude, ops.logical_and(active, ops.logical_not(ablated)[None, :]), num_keep),
            lambda: kept,
        )
    else:
        ablated = ops.zeros((units,), "bool")
    alive = units - ops.sum(ops.cast(ablated, "int32"))
    fan_in = ops.floor_divide(budget, alive)
    lowest = ops.cast(float("-inf"), dtype)
    kept = kept * ops.cast(_ranks_within_units(ops.where(kept > 0, magnitude, lowest)) < fan_in, dtype)
    need = ops.where(ablated, 0, fan_in - ops.cast(ops.sum(kept, axis=0), "int32"))
    grown = ops.cast(_ranks_within_units(ops.where(kept > 0, lowest, gradient)) < need[None, :], dtype)
    return kept + grown, (grown if need_grown else None)


# -- initial masks ----------------------------------------------------------
def constant_fan_in_mask(mask, fan_in, rng):
    """A random (F, U) 0/1 numpy mask with `fan_in` ones per column that keeps as much of `mask` as it can.

    Each column keeps `fan_in` of its active positions chosen at random, or all
    of them plus random inactive positions when it has fewer. For a uniformly
    random `mask` the result is a uniformly random constant fan-in mask.
    """
    priority = (np.asarray(mask) > 0) + rng.random(np.shape(mask))
    chosen = np.argsort(-priority, axis=0, kind="stable")[:fan_in]
    new = np.zeros(np.shape(mask), dtype="float32")
    np.put_along_axis(new, chosen, 1.0, axis=0)
    return new


def _initializer_draw(layer, seed):
    """A kernel-shaped numpy draw of `layer`'s kernel initializer with integer `seed` (GlorotUniform if it has none)."""
    initializer = getattr(layer, "kernel_initializer", None)
    if initializer is None:
        initializer = keras.initializers.GlorotUniform(seed=seed)
    else:
        config = initializer.get_config()
        if "seed" in config:  # seeded copy: the user's initializer object keeps its own state
            initializer = type(initializer).from_config({**config, "seed": seed})
    variable = layer.kernel_variable
    return np.asarray(ops.convert_to_numpy(initializer(tuple(variable.shape), dtype=variable.dtype)))


# -- the updater --------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class LayerPlan:
    """What SRigL fixes for one masked layer when it attaches.

    Attributes:
      layout: its `UnitLayout`.
      budget: B, the weights it may hold (its `sparsify` count).
      ablate: whether its units may be ablated (False for the last layer).
    """

    layout: UnitLayout
    budget: int
    ablate: bool

    @property
    def initial_fan_in(self):
        """k0 = floor(B / U), the fan-in without ablation."""
        return self.budget // self.layout.units


class SRigL(RigL):
    """Structured RigL (Lasby et al. 2024): RigL with a constant fan-in per output unit and neuron ablation.

    Grows by the dense gradient like `RigL` (same score source,
    `growth_gradient` options and schedule); the hook
    (`constant_fan_in_update`) keeps every active unit of a layer at one fan-in
    and ablates units with too few salient weights. Use it with `MaskUpdate`;
    at the first `fit` (optimizer step 0) `attach` redraws the masks to a
    constant fan-in (module docstring).

    Args:
      gamma_sal: the paper's gamma_sal, in [0, 1]: a unit with fewer than
        max(1, floor(gamma_sal * k0)) salient weights is ablated (k0 the
        layer's fan-in without ablation). 0.3 in the paper and code (ViT: 0.95).
      ablation: False keeps every unit (the paper's "SRigL w/o ablation").
      no_ablation_layers: names of masked layers never ablated besides the
        last one (the code's `no_ablation_module_names`, e.g. extra heads;
        the code stops exempting the last layer when names are given, here
        it stays exempt).
      *args, **kwargs: `RigL`'s arguments.

    After `attach`, `plans[i]` is layer i's `LayerPlan`.
    """

    def __init__(self, *args, gamma_sal=0.3, ablation=True, no_ablation_layers=(), **kwargs):
        super().__init__(*args, **kwargs)
        if isinstance(gamma_sal, bool) or not isinstance(gamma_sal, (int, float)) or not 0.0 <= gamma_sal <= 1.0:
            raise ValueError(f"gamma_sal must be a number in [0, 1], got {gamma_sal!r}.")
        if not isinstance(ablation, bool):
            raise ValueError(f"ablation must be True or False, got {ablation!r}.")
        self.gamma_sal = float(gamma_sal)
        self.ablation = ablation
        self.no_ablation_layers = tuple(no_ablation_layers)
        self.plans = None

    def bind(self, layers):
        """Fixes each layer's layout, budget and ablation flag (`plans`) from `layers` (a `MaskedLayerSet`).

        The budget is `active_count(size, target_density)` (the count
        `sparsify` / `init_masks` gave the layer), or its active count now when
        it has no `target_density`.

        Raises:
          ValueError: a layer whose budget is smaller than its number of units
            (a fan-in of 0), or an unknown name in `no_ablation_layers`.
        """
        unknown = sorted(set(self.no_ablation_layers) - {layer.name for layer in layers})
        if unknown:
            names = [layer.name for layer in layers]
            raise ValueError(f"no_ablation_layers names {unknown}, not masked layers of the model: {names}.")
        plans = []
        for index, layer in enumerate(layers):
            layout = unit_layout(layer)
            size = math.prod(layout.shape)
            density = getattr(layer, "target_density", None)
            budget = active_count(size, density) if density is not None else int(ops.convert_to_numpy(ops.sum(layer.kernel_mask)))
            if budget < layout.units:
                raise ValueError(
                    f"Layer {layer.name!r} may hold {budget} weights for {layout.units} output units: SRigL's constant "
                    "fan-in needs at least one weight per unit; lower the sparsity or keep this layer dense."
                )
            ablate = index < len(layers) - 1 and layer.name not in self.no_ablation_layers
            plans.append(LayerPlan(layout, budget, ablate))
        self.plans = plans

    def attach(self, model, layers=None):
        """Binds the plans, redraws constant fan-in masks at step 0, then installs RigL's hooks."""
        layers = MaskedLayerSet(model) if layers is None else layers
        self.bind(layers)
        if int(ops.convert_to_numpy(model.optimizer.iterations)) == 0:
            self._draw_initial_masks(model, layers)
        return super().attach(model, layers)

    def _draw_initial_masks(self, model, layers):
        """The step-0 constant fan-in masks (module docstring), assigned once for every replica."""
        for index, (layer, plan) in enumerate(zip(layers, self.plans)):
            mask = np.asarray(ops.convert_to_numpy(layer.kernel_mask))
            rng = np.random.default_rng((self.seed, _INITIAL_MASK_STREAM, index))
            matrix = np.asarray(ops.convert_to_numpy(plan.layout.to_matrix(mask)))
            new = constant_fan_in_mask(matrix, plan.initial_fan_in, rng)
            new = np.asarray(ops.convert_to_numpy(plan.layout.from_matrix(new)))
            if np.array_equal(new, mask):
                continue
            kernel = np.asarray(ops.convert_to_numpy(layer.kernel_variable))
            if np.any((new > 0) & (mask == 0)):  # newly active positions start from the initializer
                kernel = np.where(mask > 0, kernel, _initializer_draw(layer, int(rng.integers(2**31 - 1))))
            layer.kernel_variable.assign(kernel * new)
            for slot in optimizer_slots.slots_for(model.optimizer, layer.kernel_variable):
                slot.assign(slot * ops.cast(new, slot.dtype))
            layer.kernel_mask.assign(new)

    def new_mask(self, layer_index, old_mask, weights, scores, step, drop_fraction):
        """The hook: `constant_fan_in_update` in the layer's (fan-in, units) layout."""
        if self.plans is None:
            raise ValueError("SRigL is not attached; use it through MaskUpdate or call attach(model) first.")
        plan = self.plans[layer_index]
        to_matrix = plan.layout.to_matrix
        gamma_sal = self.gamma_sal if self.ablation and plan.ablate else 0.0
        new, grown = constant_fan_in_update(
            to_matrix(old_mask), to_matrix(weights), to_matrix(scores), drop_fraction, plan.budget, gamma_sal,
            need_grown=self.reinit_when_same,
        )  # fmt: skip
        return plan.layout.from_matrix(new), (None if grown is None else plan.layout.from_matrix(grown))


# -- registry -------------------------------------------------------------------
def check_gamma_sal(value, sparse):
    """Config check of `sparse.srigl_gamma_sal`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"config.sparse.srigl_gamma_sal={value!r} must be a number in [0, 1].")


def check_ablation(value, sparse):
    """Config check of `sparse.srigl_ablation`."""
    if not isinstance(value, bool):
        raise ValueError(f"config.sparse.srigl_ablation={value!r} must be True or False.")


def _make_srigl(sparse, seed):
    return SRigL(
        gamma_sal=float(sparse.srigl_gamma_sal),
        ablation=bool(sparse.srigl_ablation),
        growth_gradient=sparse.get("growth_gradient", "extra_batch"),
        **dst_updater_kwargs(sparse, seed),
    )


register_method(
    "srigl",
    summary="SRigL (Lasby et al. 2024): RigL with a constant fan-in per output unit and neuron ablation.",
    make_updater=_make_srigl,
    # RigL's accounting: one dense gradient per update. The sparse step cost is read
    # from the final masks; ablation moves a layer's count by less than its unit count.
    cost_facts=gradient_growth_costs,
    config_fields=(
        GROWTH_GRADIENT_FIELD,
        ConfigField("srigl_gamma_sal", 0.3, "srigl: ablate units with < gamma_sal * fan-in salient weights", check_gamma_sal),
        ConfigField("srigl_ablation", True, "srigl: neuron ablation on (False: SRigL w/o ablation)", check_ablation),
    ),
    updater_class=SRigL,
    dynamic=True,
)
