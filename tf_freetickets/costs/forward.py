"""Forward-pass FLOPs of dense and masked models (RigL, Evci et al. 2020, App. H; FreeTickets, Liu et al. 2022).

Convention (the one RigL reports, via the MicroNet-challenge counter): a
multiply-add is **2 FLOPs** (one multiplication, one addition), so a dense
ResNet-50 forward pass is ~8.2e9 FLOPs (4.1e9 multiply-adds). Only the kernel
multiply-adds of layers with a `kernel` are counted:

- Dense: 2 * kernel.size * (positions), positions = product of the output's
  non-batch, non-feature dims (1 for a (N, units) output).
- Conv1D/2D/3D, DepthwiseConv1D/2D: 2 * kernel.size * product of the OUTPUT
  spatial dims (groups and depth multipliers are in the kernel shape).
- Conv1D/2D/3DTranspose: 2 * kernel.size * product of the INPUT spatial dims
  (every input position scatters the whole kernel; the output size would
  overcount strided transposed convolutions).
- SeparableConv1D/2D: 2 * (depthwise.size + pointwise.size) * output positions
  (never masked by this library, so always dense).
- EinsumDense: 2 * kernel.size * product of the sizes of the equation's
  non-kernel, non-batch indices.

Sparse FLOPs of a layer = 2 * active weights * positions = dense FLOPs * density,
with density = active / total read from `kernel_mask` (1 for unmasked layers).
Bias additions, BatchNorm, activations, pooling, softmax and the loss are not
counted: they are a few FLOPs per output element, the same for dense and sparse
models, and RigL's training-cost comparisons leave them out too. Sizes come from
the recorded calls of a built Functional/Sequential model, so layers called twice
count twice, and a nested model's layers count once per call of the model.
"""

import dataclasses
import math

import keras
import numpy as np

from tf_freetickets.sparse import layers as masking

#: FLOPs per multiply-add (RigL / MicroNet convention: a multiplication and an addition).
FLOPS_PER_MULTIPLY_ADD = 2

CONVENTION = (
    "FLOPs per example; one multiply-add = 2 FLOPs (RigL/MicroNet); kernel multiply-adds only "
    "(bias, normalization, activations and pooling excluded); sparse = dense * active/total weights"
)

_L = keras.layers
_CONV = (_L.Conv1D, _L.Conv2D, _L.Conv3D, _L.DepthwiseConv1D, _L.DepthwiseConv2D)
_TRANSPOSE = (_L.Conv1DTranspose, _L.Conv2DTranspose, _L.Conv3DTranspose)
_SEPARABLE = (_L.SeparableConv1D, _L.SeparableConv2D)


@dataclasses.dataclass(frozen=True)
class LayerFlops:
    """Forward FLOPs of one kernel layer (all its calls, times the batch size).

    Attributes:
      name: the layer name, prefixed by its nested model ("inner/conv") or its
        ensemble member ("members[0]/conv").
      dense_flops: FLOPs with every kernel weight active.
      sparse_flops: FLOPs with only the active (mask = 1) weights,
        dense_flops * density.
      density: active / total kernel weights (1.0 for unmasked layers).
      layer_type: the layer's class name, e.g. "MaskedConv2D".
    """

    name: str
    dense_flops: int
    sparse_flops: int
    density: float
    layer_type: str = ""


def _has_kernel(layer):
    return masking.is_masked(layer) or any(v.name.endswith("kernel") for v in layer.weights)


def _graph_nodes(model):
    """Keys of the nodes in `model`'s graph, or None for a subclassed model."""
    nodes = getattr(model, "_nodes", None)
    if nodes is None:
        nodes = getattr(getattr(model, "_functional", None), "_nodes", None)
    return nodes


def _calls_in(layer, graph_nodes):
    """The layer's recorded calls that belong to the graph (all calls without a graph)."""
    calls = list(getattr(layer, "_inbound_nodes", []))
    if graph_nodes is None:
        return calls
    return [node for index, node in enumerate(calls) if f"{id(layer)}_ib-{index}" in graph_nodes]


def _members(model_or_models):
    if isinstance(model_or_models, (list, tuple)):
        return list(model_or_models)
    members = getattr(model_or_models, "members", None)
    if isinstance(members, (list, tuple)) and members and all(isinstance(m, keras.Model) for m in members):
        return list(members)
    return None


def _walk(model, prefix, repeats):
    """Yields (qualified name, layer, recorded calls, repeats) for every non-model layer."""
    members = _members(model)
    if members is not None:
        for index, member in enumerate(members):
            yield from _walk(member, f"{prefix}members[{index}]/", repeats)
        return
    if not isinstance(model, keras.Model):
        raise ValueError(f"Expected a Keras model or a list of models, got {type(model).__name__}: {model!r}.")
    if not model.built:
        raise ValueError(f"Model {model.name!r} is not built; build it (call it on an Input) before counting FLOPs.")
    graph_nodes = _graph_nodes(model)
    for layer in model.layers:
        calls = _calls_in(layer, graph_nodes)
        if isinstance(layer, keras.Model):
            yield from _walk(layer, f"{prefix}{layer.name}/", repeats * max(len(calls), 1))
        else:
            yield f"{prefix}{layer.name}", layer, calls, repeats


def _known(dims, name, layer, what):
    dims = tuple(dims)
    if any(d is None for d in dims):
        raise ValueError(
            f"Layer {name!r} ({type(layer).__name__}) has an unknown {what} size {dims}; build the model with a "
            "fixed input shape to count its FLOPs."
        )
    return math.prod(dims)


def _spatial(shape, layer):
    shape = tuple(shape)
    return shape[2:] if getattr(layer, "data_format", "channels_last") == "channels_first" else shape[1:-1]


def _einsum_positions(layer, input_shape, kernel_shape, name):
    """Product of the sizes of the non-kernel, non-batch indices of an EinsumDense equation."""
    lhs, out = layer.equation.split("->")
    inp, ker = lhs.split(",")
    input_shape = tuple(input_shape)
    if "..." in inp:
        before, after = inp.split("...")
        inp_symbols = list(before) + [f"#{i}" for i in range(len(input_shape) - len(before) - len(after))] + list(after)
    else:
        inp_symbols = list(inp)
    if len(inp_symbols) != len(input_shape) or len(ker) != len(kernel_shape):
        raise ValueError(f"Cannot match EinsumDense {name!r} equation {layer.equation!r} to input {input_shape}.")
    sizes = dict(zip(inp_symbols, input_shape))
    others = [s for s in dict.fromkeys(inp_symbols[1:]) if s not in ker and s != inp_symbols[0]]
    return _known([sizes[s] for s in others], name, layer, "input")


def _count_layer(name, layer, calls, repeats, batch_size):
    """A `LayerFlops` for one layer, or None for layers without kernel multiply-adds."""
    kind = type(layer).__name__
    supported = isinstance(layer, (_L.Dense, _L.EinsumDense, *_CONV, *_TRANSPOSE, *_SEPARABLE))
    if not supported:
        if _has_kernel(layer):
            raise ValueError(
                f"Cannot count the FLOPs of layer {name!r} of type {kind}: supported kernel layers are Dense, "
                "EinsumDense, Conv1D/2D/3D, DepthwiseConv1D/2D, SeparableConv1D/2D and Conv1D/2D/3DTranspose."
            )
        return None
    if not calls:
        raise ValueError(
            f"Layer {name!r} ({kind}) has no recorded call in its model's graph, so its output size is unknown; "
            "count FLOPs on a built Functional or Sequential model."
        )
    if isinstance(layer, _SEPARABLE):
        total = int(np.prod(layer.depthwise_kernel.shape)) + int(np.prod(layer.pointwise_kernel.shape))
        active = total
    else:
        variable = layer.kernel_variable if masking.is_masked(layer) else layer.kernel
        total = int(np.prod(variable.shape))
        active = int(np.count_nonzero(layer.kernel_mask.numpy())) if masking.is_masked(layer) else total
    positions = 0
    for node in calls:
        input_shape, output_shape = node.input_tensors[0].shape, node.output_tensors[0].shape
        if isinstance(layer, _L.Dense):
            positions += _known(tuple(output_shape)[1:-1], name, layer, "output")
        elif isinstance(layer, _L.EinsumDense):
            positions += _einsum_positions(layer, input_shape, tuple(layer.kernel.shape), name)
        elif isinstance(layer, _TRANSPOSE):
            positions += _known(_spatial(input_shape, layer), name, layer, "input")
        else:
            positions += _known(_spatial(output_shape, layer), name, layer, "output")
    scale = FLOPS_PER_MULTIPLY_ADD * positions * repeats * batch_size
    return LayerFlops(name, scale * total, scale * active, active / total, kind)


def layer_forward_flops(model, batch_size=1):
    """Per-layer forward FLOPs of a model, dense and sparse (RigL's counting).

    Args:
      model: a built Functional or Sequential `keras.Model` (nested models
        included), an `EnsembleModel`/`CoTrainingModel` (its `members` are
        counted, rows prefixed "members[i]/"), or a list of such models.
      batch_size: examples per forward pass; FLOPs scale linearly (1: per
        example).

    Returns:
      list of `LayerFlops`, one per kernel layer in graph order. FLOPs follow
      the module's convention: 2 FLOPs per multiply-add, kernel multiply-adds
      only, sparse = dense * (active / total) read from `kernel_mask`.

    Raises:
      ValueError: a layer with a kernel of a type this module cannot count
        (named with its type, e.g. LSTM, MultiHeadAttention), a layer with no
        recorded call, unknown spatial sizes, or an unbuilt model.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}.")
    rows = []
    for name, layer, calls, repeats in _walk(model, "", 1):
        row = _count_layer(name, layer, calls, repeats, batch_size)
        if row is not None:
            rows.append(row)
    return rows


def forward_flops(model_or_models, batch_size=1):
    """(dense, sparse) forward FLOPs of a model or ensemble: f_D and f_S of RigL.

    Args:
      model_or_models: as for `layer_forward_flops`; an ensemble or list sums
        its members.
      batch_size: examples per forward pass (1: per example, RigL's f_D / f_S).

    Returns:
      tuple of two ints (dense_flops, sparse_flops).
    """
    rows = layer_forward_flops(model_or_models, batch_size)
    return sum(r.dense_flops for r in rows), sum(r.sparse_flops for r in rows)


def inference_flops(model_or_models):
    """Sparse forward FLOPs per example: the test-time cost in RigL and FreeTickets tables.

    Args:
      model_or_models: one model, an `EnsembleModel`, or a list of member models
        (the ensemble runs every member, so the members' costs add up).

    Returns:
      int, FLOPs for one example (2 per multiply-add of an active weight).
    """
    return forward_flops(model_or_models)[1]


def _total(flops):
    value = getattr(flops, "total_flops", flops)
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise ValueError(f"Expected a FLOP count or an object with `total_flops`, got {flops!r}.")
    return value


def relative_to_dense(flops, dense_flops):
    """flops / dense_flops: the "1x / 0.57x" figures of RigL and FreeTickets tables.

    Args:
      flops: a FLOP count, or a result with `total_flops` (`TrainingFlops`).
      dense_flops: the dense baseline, same kinds of value and same units
        (per example forward FLOPs, or whole-run training FLOPs).

    Returns:
      float.

    Raises:
      ValueError: a non-positive baseline or values that are not counts.
    """
    baseline = _total(dense_flops)
    if baseline <= 0:
        raise ValueError(f"The dense baseline must be positive, got {baseline!r}.")
    return float(_total(flops)) / float(baseline)


def flops_report(model_or_models, training=None, dense_training=None):
    """A JSON-able FLOPs report of a model or ensemble.

    Args:
      model_or_models: as for `layer_forward_flops`.
      training: optional training cost of the run (a `TrainingFlops` from
        `tf_freetickets.costs.training`).
      dense_training: optional training cost of the dense baseline run;
        with `training`, the report adds their ratio.

    Returns:
      dict with "convention" (str), "layers" (list of dicts, see `LayerFlops`),
      "dense_forward_flops", "sparse_forward_flops", "inference_flops" (ints,
      per example), "forward_relative_to_dense" (float) and, when given,
      "training", "dense_training" (dicts) and "training_relative_to_dense".
    """
    rows = layer_forward_flops(model_or_models)
    dense = sum(r.dense_flops for r in rows)
    sparse = sum(r.sparse_flops for r in rows)
    report = {
        "convention": CONVENTION,
        "layers": [dataclasses.asdict(r) for r in rows],
        "dense_forward_flops": int(dense),
        "sparse_forward_flops": int(sparse),
        "inference_flops": int(sparse),
        "forward_relative_to_dense": relative_to_dense(sparse, dense) if dense else None,
    }
    if training is not None:
        report["training"] = training.to_dict()
    if dense_training is not None:
        report["dense_training"] = dense_training.to_dict()
        if training is not None:
            report["training_relative_to_dense"] = relative_to_dense(training, dense_training)
    return report


def flops_table(model_or_models):
    """A printable table: layer, type, density, dense and sparse forward FLOPs per example, and a total line."""
    rows = layer_forward_flops(model_or_models)
    lines = [f"{'layer':<32} {'type':<22} {'density':>8} {'dense FLOPs':>14} {'sparse FLOPs':>14}"]
    for r in rows:
        lines.append(f"{r.name:<32} {r.layer_type:<22} {r.density:>8.4f} {r.dense_flops:>14,d} {r.sparse_flops:>14,d}")
    dense = sum(r.dense_flops for r in rows)
    sparse = sum(r.sparse_flops for r in rows)
    if dense:
        lines.append(f"{'total':<32} {'':<22} {sparse / dense:>8.4f} {dense:>14,d} {sparse:>14,d}")
    return "\n".join(lines)
