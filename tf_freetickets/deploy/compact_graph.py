"""The graph analysis behind `compact`: channel spaces of a Keras graph and the constants their channels hold.

A *space* is a set of tensors that share one channel indexing (their last axis): the output of a
Dense or Conv2D layer (a *producer*) and every tensor that channel-wise layers make from it; an Add
joins the spaces of its inputs into one. A tensor after Flatten holds `reps` copies of the space's
channels (feature f is channel f % C, Keras' channels-last order), so removing channel c removes
the features c, C + c, 2C + c, ... of the flattened tensor.

Supported layers (`layer_kind`), exact classes only (a subclass may compute something else):
- producers: Dense (any input rank), Conv2D (groups=1, channels_last); their output units go;
- channel-wise, sliced with the channels: BatchNormalization (also the library's
  FusedBatchNormalization, written out as Keras' class), DepthwiseConv2D (depth_multiplier=1), a
  Rescaling with a scalar scale and an offset map whose last axis is the channels (what `compact`
  puts after a convolution that took constant channels; a channel stays constant through it only
  where its offset is the same at every position);
- channel-wise, unchanged: ReLU, LeakyReLU, ELU, Activation with an element-wise function,
  Rescaling with scalar scale and offset, Dropout and the other inference-time identities,
  Max/AveragePooling2D and GlobalAverage/GlobalMaxPooling2D (channels_last), Flatten, Add;
- channel-mixing (Softmax, LayerNormalization, UnitNormalization, Activation("softmax"), a
  producer with such an activation): the space they read keeps every channel.
Any other layer (Normalization and other preprocessing at the model's input included) is copied
unchanged and treated as reading every channel of what it reads: nothing there can go. Where that
blocks a channel that would otherwise go (a dead unit behind it), `compact_decide.decide` refuses in one line
naming the layer, or with `unsupported="keep"` keeps the channel and says why.

Each tensor carries, per feature, the constant it holds for every input (NaN: not constant). A
producer's output channel whose kernel slice is all zero holds activation(bias) everywhere; the
channel-wise layers map such constants on (TensorFlow's pools leave the padding out, so a constant
stays constant under "same" pooling), an Add sums them; a DepthwiseConv2D keeps a constant only where
its windows lie inside the input, and a zero depthwise filter makes its channel constant.

What goes, given these spaces and constants, is `compact_decide`'s part.
"""

import dataclasses

import keras
import numpy as np

from tf_freetickets import keras_compat
from tf_freetickets.models.fused_batch_norm import FusedBatchNormalization

#: Activations applied element by element (a removed channel does not change the others).
ELEMENTWISE_ACTIVATIONS = frozenset({
    "linear", "relu", "relu6", "sigmoid", "tanh", "elu", "selu", "gelu", "silu", "swish", "softplus", "softsign",
    "hard_sigmoid", "hard_silu", "hard_swish", "leaky_relu", "exponential", "mish", "celu",
})  # fmt: skip
#: Layers that are the identity at inference.
IDENTITY_LAYERS = (keras.layers.Dropout, keras.layers.SpatialDropout1D, keras.layers.SpatialDropout2D,
                   keras.layers.SpatialDropout3D, keras.layers.GaussianNoise, keras.layers.GaussianDropout,
                   keras.layers.AlphaDropout)  # fmt: skip
#: Pooling layers that keep channels apart and a constant channel constant (TensorFlow's pools skip the padding).
POOLING_LAYERS = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D, keras.layers.GlobalAveragePooling2D,
                  keras.layers.GlobalMaxPooling2D)  # fmt: skip
#: Layers that mix the channels of their input: the space they read keeps every channel.
COUPLING_LAYERS = (keras.layers.Softmax, keras.layers.LayerNormalization, keras.layers.UnitNormalization)
BATCH_NORM_LAYERS = (keras.layers.BatchNormalization, FusedBatchNormalization)


def activation_name(function):
    """The registered name of a Keras activation function ('relu', 'softmax', ...), or its Python name."""
    try:
        name = keras.activations.serialize(function)
    except (TypeError, ValueError):
        name = None
    if isinstance(name, dict):
        name = name.get("config", name.get("class_name"))
    return name if isinstance(name, str) else getattr(function, "__name__", repr(function))


def elementwise(function):
    """True when the activation `function` acts on each value alone."""
    return activation_name(function) in ELEMENTWISE_ACTIVATIONS


def windows_inside(layer):
    """True when every window of a convolution lies inside its input: "valid" padding, or a 1x1 kernel
    (TensorFlow's "same" padding adds nothing then), so a constant input channel adds the same to
    every output position."""
    return layer.padding == "valid" or all(k == 1 for k in layer.kernel_size)


def _channels_last(layer):
    return getattr(layer, "data_format", "channels_last") == "channels_last"


def _plain_kernel(layer):
    """True when the layer's weights are its kernel and bias alone (no LoRA factors, no quantization scales)."""
    return {v.name for v in layer.weights} <= {"kernel", "bias"} and not getattr(layer, "lora_enabled", False)


def layer_kind(op):
    """How `compact` treats the operation `op`: "dense", "conv", "depthwise", "batchnorm", "elementwise",
    "offset", "identity", "pooling", "flatten", "add", "coupling" or "unknown"."""
    kind = type(op)
    if kind in (keras.layers.Dense, keras.layers.Conv2D, keras.layers.DepthwiseConv2D) and not _plain_kernel(op):
        return "unknown"
    if kind is keras.layers.Dense:
        return "dense"
    if kind is keras.layers.Conv2D and op.groups == 1 and _channels_last(op):
        return "conv"
    if kind is keras.layers.DepthwiseConv2D and op.depth_multiplier == 1 and _channels_last(op):
        return "depthwise"
    if kind in BATCH_NORM_LAYERS and not op.renorm:
        return "batchnorm"
    if kind in (keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU):
        return "elementwise"
    if kind is keras.layers.Activation:
        return "elementwise" if elementwise(op.activation) else "coupling"
    if kind is keras.layers.Rescaling and np.ndim(op.scale) == 0 and np.ndim(op.offset) == 0:
        return "elementwise"
    if kind is keras.layers.Rescaling and np.ndim(op.scale) == 0:
        return "offset"
    if kind in IDENTITY_LAYERS:
        return "identity"
    if kind in POOLING_LAYERS and _channels_last(op):
        return "pooling"
    if kind is keras.layers.Flatten and _channels_last(op):
        return "flatten"
    if kind is keras.layers.Add:
        return "add"
    if kind in COUPLING_LAYERS:
        return "coupling"
    return "unknown"


@dataclasses.dataclass
class Space:
    """Tensors sharing one channel indexing (module doc); `fixed` says why every channel stays, if one must."""

    channels: int
    fixed: str | None = None
    producers: list = dataclasses.field(default_factory=list)  # (layer, output tensor id)
    exits: list = dataclasses.field(default_factory=list)  # (tensor id, Dense/Conv2D layer reading it)
    unknown: list = dataclasses.field(default_factory=list)  # (tensor id, layer of unknown kind reading it)
    has_add: bool = False
    parent: int | None = None


@dataclasses.dataclass
class TensorInfo:
    """A tensor's space, how many copies of the channels its last axis holds, and its constants (NaN: varies)."""

    space: int
    reps: int
    const: np.ndarray


class Graph:
    """A model's graph with its spaces and constants (module doc); `compact_decide.decide` then says what goes.

    Args:
      model: a plain (unmasked) Functional or built Sequential Keras model.

    Attributes:
      inputs, outputs, nodes: as `keras_compat.graph_nodes` returns them.
      tensors: {id(KerasTensor): TensorInfo}.
      spaces: list of `Space` (merged ones point to their `parent`).
      kinds: {id(operation): kind from `layer_kind`}.
    """

    def __init__(self, model):
        self.model = model
        self.inputs, self.outputs, self.nodes = keras_compat.graph_nodes(model)
        self.tensors, self.spaces, self.kinds, self.readers = {}, [], {}, {}
        seen = set()
        for tensor in self.inputs:
            self._new_space(tensor, fixed="model input")
        for op, inputs, outputs, _ in self.nodes:
            if id(op) in seen:
                raise ValueError(f"compact: layer {op.name!r} is called more than once in the model; compact rebuilds "
                                 "models whose layers are each called once.")  # fmt: skip
            seen.add(id(op))
            for tensor in inputs:
                self.readers.setdefault(id(tensor), []).append(op)
            self.kinds[id(op)] = kind = layer_kind(op)
            _HANDLERS.get(kind, Graph._unknown)(self, op, inputs, outputs)
        for tensor in self.outputs:
            self.space_of(tensor).fixed = self.space_of(tensor).fixed or "model output"

    # -- spaces ---------------------------------------------------------------

    def root(self, index):
        """The index of the space that space `index` was merged into (itself when not merged)."""
        while self.spaces[index].parent is not None:
            index = self.spaces[index].parent
        return index

    def space_of(self, tensor):
        """The (merged) `Space` of a KerasTensor."""
        return self.spaces[self.root(self.tensors[id(tensor)].space)]

    def info(self, tensor):
        """The `TensorInfo` of a KerasTensor."""
        return self.tensors[id(tensor)]

    def _new_space(self, tensor, fixed=None, const=None):
        channels = int(tensor.shape[-1]) if tensor.shape and tensor.shape[-1] is not None else 0
        self.spaces.append(Space(channels, fixed=fixed))
        if const is None:
            const = np.full(channels, np.nan)
        self.tensors[id(tensor)] = TensorInfo(len(self.spaces) - 1, 1, const)
        return self.spaces[-1]

    def _same_space(self, source, tensor, const, reps=None):
        info = self.info(source)
        self.tensors[id(tensor)] = TensorInfo(info.space, info.reps if reps is None else reps, const)

    def _single(self, op, inputs, outputs):
        """True for a one-input, one-output call on a rank-known tensor; else treats `op` as unknown."""
        if len(inputs) == 1 and len(outputs) == 1:
            return True
        self._unknown(op, inputs, outputs)
        return False

    # -- handlers, one per kind ------------------------------------------------

    def _producer(self, op, inputs, outputs):
        if not self._single(op, inputs, outputs):
            return
        kernel = keras.ops.convert_to_numpy(op.kernel)
        self.space_of(inputs[0]).exits.append((id(inputs[0]), op))
        dead = ~np.any(kernel.reshape(-1, kernel.shape[-1]) != 0, axis=0)
        bias = keras.ops.convert_to_numpy(op.bias) if op.use_bias else np.zeros(kernel.shape[-1], kernel.dtype)
        const = np.where(dead, _activate(op.activation, bias), np.nan)
        fixed = None if elementwise(op.activation) else f"{op.name!r} applies {activation_name(op.activation)!r}"
        space = self._new_space(outputs[0], fixed=fixed, const=const)
        space.producers.append((op, id(outputs[0])))

    def _batchnorm(self, op, inputs, outputs):
        if not self._single(op, inputs, outputs):
            return
        if op.axis not in (-1, len(inputs[0].shape) - 1):
            return self._unknown(op, inputs, outputs)
        weights = {v.name: keras.ops.convert_to_numpy(v).astype(np.float64) for v in op.weights}
        x = self.info(inputs[0]).const
        y = (x - weights["moving_mean"]) / np.sqrt(weights["moving_variance"] + op.epsilon)
        y = y * weights.get("gamma", 1.0) + weights.get("beta", 0.0)
        self._same_space(inputs[0], outputs[0], y)

    def _elementwise(self, op, inputs, outputs):
        if not self._single(op, inputs, outputs):
            return
        x = self.info(inputs[0]).const
        y = keras.ops.convert_to_numpy(op(np.nan_to_num(x)[None].astype(np.float32)))[0].astype(np.float64)
        self._same_space(inputs[0], outputs[0], np.where(np.isnan(x), np.nan, y))

    def _offset(self, op, inputs, outputs):
        if not self._single(op, inputs, outputs):
            return
        offset, info = np.asarray(op.offset, np.float64), self.info(inputs[0])
        shape = inputs[0].shape
        if info.reps != 1 or offset.ndim > len(shape) or offset.shape[-1] != shape[-1]:
            return self._unknown(op, inputs, outputs)
        per_channel = offset.reshape(-1, offset.shape[-1])
        uniform = np.all(per_channel == per_channel[0], axis=0)
        y = info.const * float(op.scale) + per_channel[0]
        self._same_space(inputs[0], outputs[0], np.where(uniform, y, np.nan))

    def _identity(self, op, inputs, outputs):
        if self._single(op, inputs, outputs):
            self._same_space(inputs[0], outputs[0], self.info(inputs[0]).const)

    def _pooling(self, op, inputs, outputs):
        if not self._single(op, inputs, outputs):
            return
        if len(inputs[0].shape) != 4 or self.info(inputs[0]).reps != 1:
            return self._unknown(op, inputs, outputs)
        self._same_space(inputs[0], outputs[0], self.info(inputs[0]).const)

    def _flatten(self, op, inputs, outputs):
        if not self._single(op, inputs, outputs):
            return
        shape, info = inputs[0].shape, self.info(inputs[0])
        if len(shape) == 2:
            return self._identity(op, inputs, outputs)
        if info.reps != 1 or any(d is None for d in shape[1:-1]):
            return self._unknown(op, inputs, outputs)
        reps = int(np.prod(shape[1:-1]))
        self._same_space(inputs[0], outputs[0], np.tile(info.const, reps), reps=reps)

    def _depthwise(self, op, inputs, outputs):
        if not self._single(op, inputs, outputs):
            return
        if len(inputs[0].shape) != 4 or self.info(inputs[0]).reps != 1:
            return self._unknown(op, inputs, outputs)
        if not elementwise(op.activation):
            return self._coupling(op, inputs, outputs)
        kernel = keras.ops.convert_to_numpy(op.kernel)[:, :, :, 0].astype(np.float64)
        bias = keras.ops.convert_to_numpy(op.bias).astype(np.float64) if op.use_bias else 0.0
        dead = ~np.any(kernel.reshape(-1, kernel.shape[-1]) != 0, axis=0)
        # A constant input stays constant only where every window lies inside the input.
        x = self.info(inputs[0]).const if windows_inside(op) else np.full(kernel.shape[-1], np.nan)
        pre = np.where(dead, 0.0, x * kernel.sum(axis=(0, 1))) + bias
        y = np.where(np.isnan(pre), np.nan, _activate(op.activation, np.nan_to_num(pre)))
        self._same_space(inputs[0], outputs[0], y)

    def _add(self, op, inputs, outputs):
        infos = [self.info(t) for t in inputs]
        shapes = {(self.spaces[self.root(i.space)].channels, i.reps) for i in infos}
        if len(outputs) != 1 or len(shapes) != 1 or any(t.shape != outputs[0].shape for t in inputs):
            return self._unknown(op, inputs, outputs)
        roots = sorted({self.root(i.space) for i in infos})
        target = self.spaces[roots[0]]
        for other in roots[1:]:
            merged = self.spaces[other]
            merged.parent = roots[0]
            target.fixed = target.fixed or merged.fixed
            target.producers += merged.producers
            target.exits += merged.exits
            target.unknown += merged.unknown
            target.has_add = target.has_add or merged.has_add
        target.has_add = True
        self._same_space(inputs[0], outputs[0], np.sum([i.const for i in infos], axis=0))

    def _coupling(self, op, inputs, outputs):
        for tensor in inputs:
            space = self.space_of(tensor)
            space.fixed = space.fixed or f"read by {type(op).__name__} {op.name!r}, which mixes channels"
        for tensor in outputs:
            self._new_space(tensor, fixed=f"output of {type(op).__name__} {op.name!r}")

    def _unknown(self, op, inputs, outputs):
        self.kinds[id(op)] = "unknown"
        for tensor in inputs:
            self.space_of(tensor).unknown.append((id(tensor), op))
        for tensor in outputs:
            self._new_space(tensor, fixed=f"output of {type(op).__name__} {op.name!r}")


def _activate(function, values):
    """`function` (a Keras activation) on a numpy vector, as float64."""
    out = function(keras.ops.convert_to_tensor(np.asarray(values, np.float32)[None]))
    return keras.ops.convert_to_numpy(out)[0].astype(np.float64)


_HANDLERS = {
    "dense": Graph._producer, "conv": Graph._producer, "depthwise": Graph._depthwise, "batchnorm": Graph._batchnorm,
    "elementwise": Graph._elementwise, "offset": Graph._offset, "identity": Graph._identity, "pooling": Graph._pooling,
    "flatten": Graph._flatten, "add": Graph._add, "coupling": Graph._coupling,
}  # fmt: skip
