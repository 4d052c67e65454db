"""`compact(model)`: a physically smaller plain Keras model without a ticket's dead units and channels.

A sparse ticket keeps the dense shapes: its zeros cost the same time as the weights they replace
(BENCHMARKS.md section 6). Where whole units are gone, the shapes themselves can shrink. `compact`
removes

- **dead** units and channels: a Dense unit or Conv2D output channel whose kernel slice is all zero
  (after the masks). Its output is activation(bias), then BatchNormalization etc., the same constant
  for every input; the constant's contribution is added to the bias of every Dense/Conv2D that reads
  it ("constant-folded"; to the moving mean of the BatchNormalization that directly follows a
  bias-free layer, or a bias is switched on);
- **unread** units and channels: every layer that reads them has all-zero weights on them;

together with the matching input slices of every layer that reads them (strided for a Flatten:
features p * C + c of channel c) and the matching entries of the BatchNormalization and
DepthwiseConv2D layers between. The rules, the supported layers and the refusal of the others are in
`compact_graph` and `compact_decide` (a Conv2D with "same" padding takes no constant into its bias:
the padding cuts the border windows: by default several such channels are merged into one kept
*carrier* channel whose kernel slice takes theirs scaled by constant ratios, exactly, and a lone one
is kept; with `padded_constants="offset"` they all go and a `Rescaling(1, offset=map)` after the
convolution adds back what they gave at each output position, also exactly). An Add's channel goes
only where it can go from every branch; model outputs keep every unit. Removals can free more units
(a unit whose only inputs were removed becomes dead), so the analysis repeats until a pass removes
nothing.

The result has only Keras layers (a Sequential model comes back Functional, with the same layer
names, plus, with offsets, a `<conv>_offset` Rescaling after each convolution that took some), so a `.keras`
file of it loads without this library, in safe mode. What it does not do:
remove individual zero weights (the kept layers stay as sparse as the ticket was: use `export_tflite`
for the file size), fold BatchNormalization into convolutions, or change any layer but the ones named.
"""

import dataclasses

import keras
import numpy as np

from tf_freetickets import keras_compat
from tf_freetickets.deploy.compact_decide import constant_input_map, decide
from tf_freetickets.deploy.compact_graph import Graph, activation_name
from tf_freetickets.sparse import layers as masking
from tf_freetickets.sparse.strip import strip

UNSUPPORTED_MODES = ("refuse", "keep")
PADDED_CONSTANT_MODES = ("offset", "carrier")
_PRODUCERS = ("dense", "conv")


@dataclasses.dataclass
class CompactRow:
    """One layer of the compaction table.

    Attributes:
      layer, kind: the layer's name and class.
      before, after: its units / channels (its output's last axis) in the model and in the compact model.
      inputs_before, inputs_after: the features of its input (Dense, Conv2D; None for the others).
      dead: zero-kernel units removed whose constant was 0 wherever it was read.
      folded: zero-kernel units removed whose nonzero constant went into the next layers' biases (or a carrier, or an
        offset map).
      unread: units removed because no layer after them reads them (zero weights on them).
      kept_add: zero-kernel units kept because another branch of an Add is live on that channel.
      kept_other: zero-kernel units kept for another reason (`note` says which).
      note: what else happened (bias switched on, moving mean shifted, reasons for kept units).
    """

    layer: str
    kind: str
    before: int
    after: int
    inputs_before: int | None = None
    inputs_after: int | None = None
    dead: int = 0
    folded: int = 0
    unread: int = 0
    kept_add: int = 0
    kept_other: int = 0
    note: str = ""


@dataclasses.dataclass
class CompactReport:
    """What `compact` did: `rows` (a `CompactRow` per Dense/Conv2D, BatchNormalization and DepthwiseConv2D),
    the number of analysis `passes`, parameter counts and the max abs output difference on a random probe."""

    rows: list
    passes: int
    params_before: int
    params_after: int
    max_abs_diff: float | None = None

    def row(self, layer):
        """The row of the layer named `layer` (KeyError if it has none)."""
        for row in self.rows:
            if row.layer == layer:
                return row
        raise KeyError(layer)

    def __str__(self):
        header = "layer | kind | units before -> after | inputs before -> after | dead | folded | unread | " \
                 "kept (add) | kept (other) | note"  # fmt: skip
        lines = [header, "-" * len(header)]
        for r in self.rows:
            inputs = "" if r.inputs_before is None else f"{r.inputs_before} -> {r.inputs_after}"
            lines.append(f"{r.layer} | {r.kind} | {r.before} -> {r.after} | {inputs} | {r.dead} | {r.folded} | "
                         f"{r.unread} | {r.kept_add} | {r.kept_other} | {r.note}")  # fmt: skip
        diff = "not checked" if self.max_abs_diff is None else f"{self.max_abs_diff:.2e}"
        lines.append(f"parameters {self.params_before} -> {self.params_after}; {self.passes} pass(es); "
                     f"max abs output difference on random inputs: {diff}")  # fmt: skip
        return "\n".join(lines)


def _weights(op):
    return {v.name: keras.ops.convert_to_numpy(v) for v in op.weights}


class _Rebuild:
    """One compaction pass: a new model from a `Graph`, its decisions and folds, and the pass's rows."""

    def __init__(self, graph, decisions, folds, merges, offsets=None):
        self.graph, self.decisions, self.folds, self.merges = graph, decisions, folds, merges
        self.offsets, self.offset_layers = offsets or {}, {}
        self.rows, self.shifts, self.bias_on = [], {}, set()
        output_ids = {id(t) for t in graph.outputs}
        for op, _, outputs, _ in graph.nodes:  # where the constants of a bias-free layer go
            fold = folds.get(id(op))
            if graph.kinds[id(op)] not in _PRODUCERS or op.use_bias or fold is None or not np.any(fold != 0):
                continue
            readers = graph.readers.get(id(outputs[0]), [])
            linear = activation_name(op.activation) == "linear"
            if linear and len(readers) == 1 and graph.kinds[id(readers[0])] == "batchnorm" \
                    and id(outputs[0]) not in output_ids:  # fmt: skip
                self.shifts[id(readers[0])] = (fold, op.name)
            else:
                self.bias_on.add(id(op))

    def keep(self, tensor):
        """Bool mask over the tensor's last axis: the features the compact model keeps."""
        info = self.graph.info(tensor)
        return np.tile(self.decisions[self.graph.root(info.space)].keep, info.reps)

    def model(self):
        """The compact model (Functional, the original's name and layer names)."""
        new = {}
        for tensor in self.graph.inputs:
            new[id(tensor)] = keras.Input(batch_shape=tensor.shape, dtype=tensor.dtype, name=tensor.name)
        for op, inputs, outputs, call in self.graph.nodes:
            layer, weights = self._layer(op, inputs, outputs)
            values = keras.tree.flatten(call(layer, new))
            if id(op) in self.offset_layers:  # the removed constant channels' share, position by position
                values = [self.offset_layers[id(op)](values[0])]
            for tensor, value in zip(outputs, values):
                new[id(tensor)] = value
            if weights is not None:
                layer.set_weights(weights)
        ins = [new[id(t)] for t in self.graph.inputs]
        outs = [new[id(t)] for t in self.graph.outputs]
        return keras.Model(ins[0] if len(ins) == 1 else ins, outs[0] if len(outs) == 1 else outs,
                           name=self.graph.model.name)  # fmt: skip

    def _layer(self, op, inputs, outputs):
        kind = self.graph.kinds[id(op)]
        if kind in _PRODUCERS:
            return self._producer(op, inputs, outputs)
        if kind in ("batchnorm", "depthwise"):
            return self._sliced(op, inputs, kind)
        if kind == "offset":
            offset = np.compress(self.keep(inputs[0]), np.asarray(op.offset, np.float32), axis=-1)
            return keras.layers.Rescaling.from_config({**op.get_config(), "offset": offset.tolist()}), None
        if isinstance(op, keras.Model):
            return keras.models.clone_model(op), op.get_weights()
        if isinstance(op, keras.layers.Layer):
            return type(op).from_config(op.get_config()), op.get_weights()
        return op, None  # a stateless operation of the functional API (keras.ops on symbolic tensors)

    def _producer(self, op, inputs, outputs):
        keep_in, keep_out = self.keep(inputs[0]), self.keep(outputs[0])
        weights = _weights(op)
        kernel = weights["kernel"]
        if id(op) in self.merges:  # the carrier's slice takes the merged constant channels' (compact_decide)
            carrier, ratios = self.merges[id(op)]
            kernel = kernel.copy()
            kernel[..., carrier, :] = np.einsum("...cf,c->...f", kernel.astype(np.float64), ratios).astype(kernel.dtype)
        kernel = np.compress(keep_out, np.compress(keep_in, kernel, axis=-2), axis=-1)
        config = op.get_config()
        config["units" if "units" in config else "filters"] = int(keep_out.sum())
        fold = self.folds.get(id(op))
        folded = fold is not None and bool(np.any(fold != 0))
        bias, note = weights.get("bias"), []
        if folded and bias is None and id(op) in self.bias_on:
            config["use_bias"], bias = True, np.zeros(keep_out.size, kernel.dtype)
            note.append("bias switched on for folded constants")
        if folded and bias is not None:
            bias = (bias.astype(np.float64) + fold).astype(kernel.dtype)
            note = note or ["folded constants added to the bias"]
        if id(op) in self.offsets:
            offset = np.compress(keep_out, constant_input_map(op, self.offsets[id(op)]), axis=-1).astype(np.float32)
            name = self._unused_name(f"{op.name}_offset")
            self.offset_layers[id(op)] = keras.layers.Rescaling(1.0, offset=offset.tolist(), name=name)
            taken = int(np.count_nonzero(self.offsets[id(op)]))
            note.append(f"{name!r} adds the border-dependent share of {taken} removed constant input channel(s)")
        layer = type(op).from_config(config)
        self.rows.append(self._producer_row(op, inputs, outputs, keep_in, keep_out, note))
        return layer, [kernel] + ([] if bias is None else [np.compress(keep_out, bias)])

    def _unused_name(self, name):
        """`name`, or `name_2`, `name_3`, ... where a layer of the model already has it."""
        taken = {layer.name for layer in self.graph.model.layers}
        candidate, index = name, 1
        while candidate in taken:
            index += 1
            candidate = f"{name}_{index}"
        return candidate

    def _producer_row(self, op, inputs, outputs, keep_in, keep_out, note):
        info = self.graph.info(outputs[0])
        decision = self.decisions[self.graph.root(info.space)]
        dead_here = ~np.isnan(info.const)
        removed = ~keep_out
        kept_dead = np.flatnonzero(keep_out & dead_here)
        reasons = [decision.reason[c] or "varies downstream" for c in kept_dead]
        add = [r for r in reasons if r == "an add"]
        others = sorted({r for r in reasons if r != "an add"})
        return CompactRow(
            op.name, type(op).__name__, keep_out.size, int(keep_out.sum()), keep_in.size, int(keep_in.sum()),
            dead=int(np.sum(removed & dead_here & ~decision.folded)), folded=int(np.sum(removed & dead_here & decision.folded)),
            unread=int(np.sum(removed & ~dead_here)), kept_add=len(add), kept_other=len(kept_dead) - len(add),
            note="; ".join(note + [f"kept: {r}" for r in others]),
        )  # fmt: skip

    def _sliced(self, op, inputs, kind):
        keep = self.keep(inputs[0])
        config = op.get_config()
        layer = keras.layers.BatchNormalization.from_config(config) if kind == "batchnorm" else type(op).from_config(config)
        shift, source = self.shifts.get(id(op), (None, None))
        weights = []
        for variable in op.weights:
            value = keras.ops.convert_to_numpy(variable)
            if variable.name == "moving_mean" and shift is not None:
                value = (value.astype(np.float64) - shift).astype(value.dtype)
            weights.append(np.compress(keep, value, axis=2 if value.ndim == 4 else -1))
        note = f"moving mean absorbs the constants folded into {source!r}" if source else ""
        self.rows.append(CompactRow(op.name, type(op).__name__, keep.size, int(keep.sum()), note=note))
        return layer, weights


def _merge(passes):
    """One row per layer over several passes: sizes from the first and last, removals summed, kept from the last
    (with the last pass's "kept: ..." notes: an earlier pass's reason may no longer hold)."""
    merged = {}
    for rows in passes:
        for row in rows:
            first = merged.get(row.layer)
            if first is None:
                merged[row.layer] = dataclasses.replace(row)
                continue
            first.after, first.inputs_after = row.after, row.inputs_after
            first.dead, first.folded, first.unread = first.dead + row.dead, first.folded + row.folded, first.unread + row.unread
            first.kept_add, first.kept_other = row.kept_add, row.kept_other
            earlier = [n for n in first.note.split("; ") if not n.startswith("kept: ")]
            notes = [n for n in earlier + row.note.split("; ") if n]
            first.note = "; ".join(dict.fromkeys(notes))
    return list(merged.values())


def _probe(original, compacted, examples=4, seed=0):
    """Max abs difference of the two models' outputs on random normal inputs (None for non-float inputs)."""
    inputs = []
    rng = np.random.default_rng(seed)
    for tensor in original.inputs:
        if not keras.backend.standardize_dtype(tensor.dtype).startswith("float") or None in tensor.shape[1:]:
            return None
        inputs.append(rng.standard_normal((examples, *tensor.shape[1:])).astype(tensor.dtype))
    inputs = inputs[0] if len(inputs) == 1 else inputs
    want = keras.tree.flatten(original(inputs, training=False))
    got = keras.tree.flatten(compacted(inputs, training=False))
    diffs = [np.max(np.abs(keras.ops.convert_to_numpy(a) - keras.ops.convert_to_numpy(b))) for a, b in zip(want, got)]
    scale = max(float(np.max(np.abs(keras.ops.convert_to_numpy(a)))) for a in want)
    return float(max(diffs)), scale


def compact(model, unsupported="refuse", verbose=False, check=True, max_passes=10, padded_constants="carrier"):
    """A physically smaller plain Keras model without `model`'s dead and unread units (module doc).

    Args:
      model: a built Functional or Sequential Keras model, masked (a ticket: its masks are folded
        first, as `strip` does) or plain.
      unsupported: what to do when a layer that `compact` cannot slice reads channels that would be
        removed: "refuse" (ValueError naming the layer) or "keep" (those channels stay; the table says why).
      verbose: print the table.
      check: compare the outputs of both models on 4 random normal examples and raise if they differ
        by more than 1e-4 x the largest output (never expected: a guard against a silent error).
      max_passes: at most this many analysis passes (each can free units for the next).
      padded_constants: constant channels read by "same"-padded convolutions (a dead unit after
        BatchNormalization + ReLU holds relu(beta')): "carrier" merges them into one kept channel
        per space (a lone one stays), which adds no layer but leaves an odd channel count; "offset"
        removes them all and adds their share after each such convolution as a `<conv>_offset`
        Rescaling holding an (H, W, filters) map (one more pass; a carrier where the convolution has
        a nonlinear activation or an unknown input size). The offset form served trained small_cnn
        Chase tickets 4-9% faster in TFLite and ResNet-20 ones no faster, and its maps are stored
        dense (BENCHMARKS.md section 7c).

    Returns:
      (compact model, `CompactReport`): the model is a new, uncompiled Functional `keras.Model` with
      the original's inputs, outputs and layer names (and the offset layers); the report has a
      `CompactRow` per Dense, Conv2D, BatchNormalization and DepthwiseConv2D layer.

    Raises:
      TypeError: not a Keras model, or a subclassed one.
      ValueError: an unknown `unsupported` or `padded_constants`, a layer called twice, or (with
        "refuse") an unsupported layer reading removable channels.
    """
    if not isinstance(model, keras.Model) or not keras_compat.is_functional_or_sequential(model):
        raise TypeError(f"compact expects a Functional or Sequential keras.Model, got {type(model).__name__}.")
    if unsupported not in UNSUPPORTED_MODES:
        raise ValueError(f"unsupported={unsupported!r}; use one of {UNSUPPORTED_MODES}.")
    if padded_constants not in PADDED_CONSTANT_MODES:
        raise ValueError(f"padded_constants={padded_constants!r}; use one of {PADDED_CONSTANT_MODES}.")
    plain = strip(model) if masking.masked_layers(model) else model
    current, passes = plain, []
    # With offsets, the passes keep padded constants until nothing else goes; then one pass removes them
    # into offset maps, and plain passes resume (a channel made constant by a zero depthwise filter can
    # free the unit before it), until neither removes anything.
    padded = "keep" if padded_constants == "offset" else "carrier"
    while len(passes) < max_passes:
        graph = Graph(current)
        decisions, folds, merges, offsets = decide(graph, unsupported, padded)
        if passes and all(d.keep.all() for d in decisions.values()):
            if padded != "keep":
                break
            padded = "offset"
            continue
        rebuild = _Rebuild(graph, decisions, folds, merges, offsets)
        current = rebuild.model()
        passes.append(rebuild.rows)
        padded = "keep" if padded_constants == "offset" else "carrier"
    report = CompactReport(_merge(passes), len(passes), plain.count_params(), current.count_params())
    if check:
        probe = _probe(plain, current)
        if probe is not None:
            report.max_abs_diff = probe[0]
            if probe[0] > 1e-4 * max(1.0, probe[1]):
                raise RuntimeError(f"compact: the compact model's outputs differ from {model.name!r}'s by {probe[0]:.3g} "
                                   "on random inputs; this is a bug of compact, please report it with the model.")  # fmt: skip
    if verbose:
        print(report)
    return current, report
