"""What `compact` removes, given a `compact_graph.Graph`: per space, the channels that go and what takes their constants.

A channel is removed from its whole space when every *exit* of the space (a Dense or Conv2D that
reads one of its tensors) can do without it: its weights on the channel are all zero (*unread*), or
the channel is constant there and the exit can take the constant into its bias exactly. A Dense
always can (bias += sum over the channel's features of constant x weight row). A Conv2D can when
every window lies inside its input ("valid" padding, or a 1x1 kernel): bias += constant x the sum
of its kernel over the window. A Conv2D with "same" padding and a larger kernel can only for the
constant 0: at the borders the padding cuts the window, so the contribution depends on the position
and no bias holds it.

Constant channels into "same"-padded convolutions are instead *merged into a carrier*: a
convolution is linear in its input channels, so k channels of constants a_1..a_k read with kernel
slices W_1..W_k give exactly what one of them, the carrier j, gives when read with
sum_i (a_i / a_j) W_i, border windows included. The carrier stays (one channel instead of k, in the
table as "kept: carries the constants of ..."), the other k - 1 go and count as folded. The carrier
is the channel whose smallest |constant| over those convolutions is largest (it must be nonzero
wherever another merged channel's constant is read); where none qualifies, the channels stay and
are reported ("constant into 'same'-padded Conv2D").

The carrier can go too (`padded="offset"`, `compact(padded_constants="offset")`): what constant
channels add to a convolution's output is a fixed map over its output positions (H, W, filters),
the interior value everywhere but at the border windows the padding cuts (`constant_input_map`). A
plain Keras `Rescaling(1, offset=map)` after the convolution adds it back exactly, so every such
channel goes and no odd channel count is left behind (a carrier turns 16 channels into 17, which
vector kernels pad to 32). It needs the convolution's input height and width to be known, a linear
activation (the offset goes between the convolution and what follows) and an output that is not a
model output (whose name the offset layer would take); elsewhere the carrier stays.

The library's CNNs put a "same" 3x3 convolution after BatchNormalization + ReLU, so a removed
channel there holds relu(beta - gamma * mean / sqrt(var + eps)), nonzero after training: the ResNet
blocks' first convolutions, which Chase prunes, reach the next convolution this way.

A space that reaches a model output keeps every channel; so does one channel per space when all
would go (a layer keeps at least one unit). A space read by a layer `compact` cannot slice keeps
every channel, and where a channel that could otherwise go is a constant there, `decide` refuses
naming the layer (or keeps it, with `unsupported="keep"`).
"""

import dataclasses

import keras
import numpy as np

from tf_freetickets.deploy.compact_graph import activation_name, windows_inside

#: How `decide` treats constant channels into "same"-padded convolutions (module doc).
PADDED_MODES = ("offset", "carrier", "keep")


@dataclasses.dataclass
class Decision:
    """What `decide` says of one space: `keep` (bool per channel), why a channel stays (`reason`, None when it is
    simply live), and `folded` (a removed channel whose nonzero constant went into a bias or a carrier)."""

    keep: np.ndarray
    reason: list
    folded: np.ndarray


@dataclasses.dataclass
class ExitCheck:
    """One Dense/Conv2D exit of a space (`exit_check`).

    Attributes:
      consumer: the layer; tensor_id: id of the tensor of the space it reads.
      unread: its weights on the channel are all zero; constant: the channel is constant there.
      foldable: the channel may go (unread, or constant and taken into the bias exactly).
      padded: constant, not foldable, read by a "same"-padded convolution (a carrier can take it).
      contribution: (channels, units), what the constant adds to each output unit (0 where unread).
    """

    consumer: object
    tensor_id: int
    unread: np.ndarray
    constant: np.ndarray
    foldable: np.ndarray
    padded: np.ndarray
    contribution: np.ndarray


def exit_check(consumer, tensor_id, info, channels):
    """The `ExitCheck` of a space's `channels` at one Dense/Conv2D exit reading the tensor with `TensorInfo` `info`.

    Dense: contribution = sum over the channel's features of constant x weight row; Conv2D:
    constant x the sum of its kernel over the window (exact only where every window lies inside).
    """
    const = info.const.reshape(info.reps, channels)
    constant = ~np.isnan(const).any(axis=0)
    values = np.nan_to_num(const)
    kernel = keras.ops.convert_to_numpy(consumer.kernel).astype(np.float64)
    if kernel.ndim == 2:  # Dense: (reps * channels, units), feature f is channel f % channels
        kernel = kernel.reshape(info.reps, channels, -1)
        contribution = np.einsum("rc,rcu->cu", values, kernel)
        exact = constant
    else:  # Conv2D: (kh, kw, channels, filters)
        kernel = kernel.reshape(-1, channels, kernel.shape[-1])
        contribution = values[0][:, None] * kernel.sum(axis=0)
        exact = constant & (windows_inside(consumer) | np.all(values == 0, axis=0))
    unread = ~np.any(kernel != 0, axis=(0, 2))
    foldable = unread | exact
    padded = constant & ~foldable  # a Dense is exact wherever constant: only "same" convolutions are left
    return ExitCheck(consumer, tensor_id, unread, constant, foldable, padded,
                     np.where(unread[:, None], 0.0, contribution))  # fmt: skip


def _check_unknown(graph, space, removable, reason, unsupported):
    """Refuses (or keeps, with `unsupported="keep"`) the channels an unknown layer reads that would otherwise go.

    An unknown layer is taken to read every channel of the space, so no channel of it can go. Where a
    channel that could otherwise go is a constant at that layer (a dead unit behind it), compact
    refuses, naming the layer; channels that vary there just stay (there was nothing to remove).
    """
    for tensor_id, op in space.unknown:
        const = graph.tensors[tensor_id].const.reshape(graph.tensors[tensor_id].reps, space.channels)
        constant = ~np.isnan(const).any(axis=0)
        blocked = removable & constant
        if blocked.any() and unsupported == "refuse":
            producers = ", ".join(repr(p.name) for p, _ in space.producers) or "a model input"
            raise ValueError(
                f"compact: layer {op.name!r} ({type(op).__name__}) reads {int(blocked.sum())} constant channel(s) of "
                f"{producers} that compact would remove, and compact cannot slice a {type(op).__name__}; pass "
                "unsupported='keep' to keep them."
            )
        for c in np.flatnonzero(blocked):
            reason[c] = f"read by unsupported {type(op).__name__} {op.name!r}"
        removable[:] = False  # it reads every channel: none can go


def _carrier(graph, checks, merged):
    """(carrier channel, {id(conv): ratios (channels,)}) for the `merged` channels (module doc), or None.

    At each "same"-padded exit where a merged channel's nonzero constant is read, the carrier's new
    kernel slice is sum_i ratios[i] W_i with ratios[i] = a_i / a_carrier (1 for the carrier itself).
    """
    needed = []
    for check in checks:
        if check.padded.any():
            values = np.nan_to_num(graph.tensors[check.tensor_id].const)
            if np.any(merged & ~check.unread & (values != 0)):
                needed.append((check, values))
    if not needed:
        return None
    score = np.min([np.where(c.constant, np.abs(v), 0.0) for c, v in needed], axis=0)
    carrier = int(np.argmax(np.where(merged, score, -1.0)))
    if score[carrier] == 0:
        return None
    ratios = {}
    for check, values in needed:
        ratio = np.where(merged & ~check.unread, values / values[carrier], 0.0)
        ratio[carrier] = 1.0
        ratios[id(check.consumer)] = ratio
    return carrier, ratios


def offset_ready(conv):
    """True when an offset map after `conv` can stand for constant input channels: a linear activation and an
    input of known height and width (module doc)."""
    shape = conv.input.shape
    return activation_name(conv.activation) == "linear" and len(shape) == 4 and None not in shape[1:3]


def constant_input_map(conv, values):
    """What constant input channels add to each output position of the Conv2D `conv`, in float64.

    Args:
      conv: a built Conv2D (groups 1, channels_last) whose input height and width are known.
      values: (input channels,) the constant each input channel holds (0 for the others).

    Returns:
      (out height, out width, filters): sum over the taps of the window that lie inside the input of
      kernel[tap] . values, TensorFlow's "same"/"valid" padding, strides and dilation included.
    """
    kernel = keras.ops.convert_to_numpy(conv.kernel).astype(np.float64)
    per_tap = np.einsum("hwcf,c->hwf", kernel, np.asarray(values, np.float64))
    inside = []
    for axis in (0, 1):
        size_in, size_out = int(conv.input.shape[1 + axis]), int(conv.output.shape[1 + axis])
        taps, stride, dilation = kernel.shape[axis], conv.strides[axis], conv.dilation_rate[axis]
        span = (taps - 1) * dilation + 1
        before = max((size_out - 1) * stride + span - size_in, 0) // 2 if conv.padding == "same" else 0
        rows = np.arange(size_out)[:, None] * stride + np.arange(taps)[None, :] * dilation - before
        inside.append(((rows >= 0) & (rows < size_in)).astype(np.float64))
    return np.einsum("ah,bw,hwf->abf", inside[0], inside[1], per_tap)


def _offset(graph, checks, removable, loose):
    """Removes the channels `loose` allows and `removable` does not; each "same"-padded exit takes their constants as
    an offset map (module doc).

    Returns:
      (moved: bool (channels,), {id(conv): the constants it takes (channels,), 0 elsewhere}), or None where an exit
      that reads a nonzero one is not `offset_ready` or gives a model output, whose name the offset layer would
      take (the caller merges into a carrier instead).
    """
    moved = loose & ~removable
    if not moved.any():
        return None
    offsets, outputs = {}, {id(t) for t in graph.outputs}
    for check in checks:
        if not check.padded.any():  # a Dense or "valid" exit (after a Flatten its tensor holds reps x channels)
            continue
        values = np.nan_to_num(graph.tensors[check.tensor_id].const)
        taken = moved & check.padded & ~check.unread & (values != 0)
        if not taken.any():
            continue
        if not offset_ready(check.consumer) or id(check.consumer.output) in outputs:
            return None
        offsets[id(check.consumer)] = np.where(taken, values, 0.0)
    removable |= moved
    return moved, offsets


def _merge(graph, checks, removable, loose, reason):
    """Merges the channels `loose` allows and `removable` does not into a carrier (they become removable).

    Returns:
      (merged: bool (channels,), the channels removed into the carrier; the carrier or None; {id(conv): ratios}).
    """
    merged = loose & ~removable
    found = _carrier(graph, checks, merged) if merged.sum() >= 2 else None
    if found is None:
        return np.zeros_like(merged), None, {}
    carrier, ratios = found
    merged[carrier] = False
    names = ", ".join(repr(c.consumer.name) for c in checks if id(c.consumer) in ratios)
    removable |= merged
    reason[carrier] = f"carries the constants of {int(merged.sum())} removed channel(s) into 'same'-padded {names}"
    return merged, carrier, ratios


def decide(graph, unsupported="refuse", padded="carrier"):
    """Which channels of each space go, what each exit takes into its bias, and which carriers or offsets take the rest.

    Args:
      graph: a `compact_graph.Graph`.
      unsupported: "refuse" (a layer of unknown kind that reads removable channels raises ValueError
        naming it) or "keep" (that space keeps every channel; the reason says which layer).
      padded: constant channels into "same"-padded convolutions: "carrier" (merged into one kept
        channel), "offset" (all go, each such convolution adds an offset map; a carrier where it
        cannot) or "keep" (they stay) (module doc).

    Returns:
      ({root space index: Decision}, {id(exit layer): bias increment (its output units,)},
      {id(conv exit layer): (carrier input channel, ratios (input channels,))}: the carrier's kernel
      slice becomes sum_i ratios[i] x the slice of input channel i,
      {id(conv exit layer): constants (input channels,)}: what `constant_input_map` adds after it).
    """
    if padded not in PADDED_MODES:
        raise ValueError(f"padded={padded!r}; use one of {PADDED_MODES}.")
    decisions, folds, merges, offsets = {}, {}, {}, {}
    for index, space in enumerate(graph.spaces):
        if space.parent is not None:
            continue
        channels = space.channels
        removable, reason = np.full(channels, space.fixed is None), [space.fixed] * channels
        loose = removable.copy()  # removable if every constant into a "same" convolution could be carried
        checks = [exit_check(consumer, tensor_id, graph.tensors[tensor_id], channels) for tensor_id, consumer in space.exits]
        for check in checks:
            name = f"{type(check.consumer).__name__} {check.consumer.name!r}"
            for c in np.flatnonzero(removable & ~check.foldable):
                reason[c] = (f"constant into 'same'-padded {name}" if check.constant[c]
                             else "an add" if space.has_add else f"varies where {check.consumer.name!r} reads it")  # fmt: skip
            removable &= check.foldable
            loose &= check.foldable | check.padded
        if space.unknown:
            _check_unknown(graph, space, removable, reason, unsupported)
            loose = removable.copy()
        moved = _offset(graph, checks, removable, loose) if padded == "offset" else None
        if moved is not None:
            merged, taken = moved
        elif padded != "keep":
            merged, carrier, ratios = _merge(graph, checks, removable, loose, reason)
            merges.update({key: (carrier, ratio) for key, ratio in ratios.items()})
        else:
            merged, taken = np.zeros(channels, bool), {}
        if channels and removable.all():
            removable[0], reason[0], merged[0] = False, "a layer keeps at least one unit", False
        if moved is not None:
            for key, values in taken.items():
                offsets[key] = np.where(merged, values, 0.0)
        folded = merged.copy()
        for check in checks:
            part = np.where((removable & ~(merged & check.padded))[:, None], check.contribution, 0.0)
            folded |= removable & np.any(part != 0, axis=1)
            folds[id(check.consumer)] = folds.get(id(check.consumer), 0.0) + part.sum(axis=0)
        decisions[index] = Decision(~removable, reason, folded)
    return decisions, folds, merges, offsets
