"""Which pruned layers XNNPACK's sparse inference path can use: tfmot's `PruneForLatencyOnXNNPack`.

tfmot's policy (pruning_policy.py; Elsen et al. 2019, "Fast Sparse ConvNets")
prunes only 1x1 Conv2D layers, and accepts a model only when every input
branch reaches a start layer (a 3x3 Conv2D with 3 input channels, stride 2,
"valid" padding, fed by ZeroPadding2D(1)), every output branch goes back to a
GlobalAveragePooling2D(keepdims=True), and every layer between them is one
XNNPACK runs in its CHW (sparse) layout: Add, Multiply, ZeroPadding2D, ReLU,
LeakyReLU, ELU, 1x1 stride-1 Conv2D, 3x3/5x5 DepthwiseConv2D (stride 1 "same",
or stride 2 "valid" after a matching ZeroPadding2D), BatchNormalization on the
channel axis, bilinear UpSampling2D, or an Activation relu/relu6/leaky_relu/
elu/sigmoid. Here the same conditions are a report rather than a wrapper rule:
a model is pruned as usual and `xnnpack_sparse_report(model)` says, per masked
layer, whether that path can use it.

The path exists on ARM (and SSE-only x86): XNNPACK's
`xnn_is_chw_compatible_config` returns false on x86 CPUs with AVX, so there its
sparse kernels are never used, whatever the model.
"""

import collections

import keras

from tf_freetickets.sparse import layers as masking

X86_NOTE = (
    "On x86 CPUs with AVX XNNPACK's sparse path is off regardless (xnn_is_chw_compatible_config); these verdicts are for ARM."
)

XnnpackRow = collections.namedtuple("XnnpackRow", ["layer", "usable", "reason"])
XnnpackRow.__doc__ = "One masked layer's verdict: its name, whether XNNPACK's sparse path can use it on ARM, and why."

_ALWAYS = (keras.layers.Add, keras.layers.Multiply, keras.layers.ZeroPadding2D, keras.layers.ReLU, keras.layers.LeakyReLU)
_ACTIVATIONS = ("relu", "relu6", "leaky_relu", "elu", "sigmoid")


class _Graph:
    """Producers and consumers of the top-level layers of a functional or Sequential model."""

    def __init__(self, model):
        nodes = {id(node) for depth in model._nodes_by_depth.values() for node in depth}
        self.producers, self.consumers = {}, {}
        for layer in model.layers:
            inbound = [n for n in layer._inbound_nodes if id(n) in nodes]
            self.producers[id(layer)] = [p.operation for n in inbound for p in n.parent_nodes]
            outbound = [n for n in layer._outbound_nodes if id(n) in nodes]
            self.consumers[id(layer)] = [n.operation for n in outbound]
        self.inputs = [t._keras_history.operation for t in model.inputs]
        self.outputs = [t._keras_history.operation for t in model.outputs]

    def lookup(self, sources, stop, step):
        """tfmot's search: the layers where `stop` holds on every path from `sources` (empty if a path ends first)."""
        to_visit, seen, found = list(sources), {id(s) for s in sources}, []
        while to_visit:
            layer = to_visit.pop()
            if stop(layer):
                found.append(layer)
                continue
            following = step(id(layer))
            if not following:
                return []
            for nxt in following:
                if id(nxt) not in seen:
                    seen.add(id(nxt))
                    to_visit.append(nxt)
        return found


def _single_zero_padding(graph, layer, pad):
    producers = graph.producers[id(layer)]
    return (
        len(producers) == 1
        and isinstance(producers[0], keras.layers.ZeroPadding2D)
        and tuple(map(tuple, producers[0].padding)) == ((pad, pad), (pad, pad))
    )


def _is_start(graph, layer):
    """A 3x3 stride-2 "valid" Conv2D on 3 channels after ZeroPadding2D(1): XNNPACK's HWC->CHW entry."""
    return (
        isinstance(layer, keras.layers.Conv2D)
        and tuple(layer.kernel.shape[:3]) == (3, 3, 3)
        and tuple(layer.strides) == (2, 2)
        and layer.padding == "valid"
        and _single_zero_padding(graph, layer, 1)
    )


def _is_end(layer):
    return isinstance(layer, keras.layers.GlobalAveragePooling2D) and layer.keepdims


def _is_1x1(layer):
    return (
        isinstance(layer, keras.layers.Conv2D)
        and tuple(layer.kernel_size) == (1, 1)
        and tuple(layer.strides) == (1, 1)
        and tuple(layer.dilation_rate) == (1, 1)
        and layer.groups == 1
    )


def _supported(graph, layer):
    """tfmot's `_check_layer_support`: XNNPACK runs `layer` in the CHW layout."""
    if isinstance(layer, _ALWAYS) or isinstance(layer, keras.layers.ELU):
        return True
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        size, strides = tuple(layer.kernel_size), tuple(layer.strides)
        if layer.depth_multiplier != 1 or tuple(layer.dilation_rate) != (1, 1) or size not in ((3, 3), (5, 5)):
            return False
        if strides == (1, 1):
            return layer.padding == "same"
        return strides == (2, 2) and layer.padding == "valid" and _single_zero_padding(graph, layer, size[0] // 2)
    if isinstance(layer, keras.layers.Conv2D):
        return _is_1x1(layer)
    if isinstance(layer, keras.layers.GlobalAveragePooling2D):
        return layer.keepdims
    if isinstance(layer, keras.layers.BatchNormalization):
        return layer.axis in (3, -1, [3], [-1])
    if isinstance(layer, keras.layers.UpSampling2D):
        return layer.interpolation == "bilinear"
    if isinstance(layer, keras.layers.Activation):
        return keras.activations.serialize(layer.activation) in _ACTIVATIONS
    return False


def _graph_model(model):
    """The functional graph of `model` (a Sequential model keeps one), or None for a subclassed model."""
    model = getattr(model, "_functional", None) or model if isinstance(model, keras.Sequential) else model
    return model if hasattr(model, "_nodes_by_depth") else None


def _subgraph(model):
    """(layers between start and end, None) or (None, why the model has no sparse subgraph)."""
    model = _graph_model(model)
    if model is None:
        return None, "a subclassed model: its graph cannot be checked (tfmot refuses it too)"
    graph = _Graph(model)
    starts = graph.lookup(graph.inputs, lambda layer: _is_start(graph, layer), graph.consumers.get)
    if not starts:
        return None, "no 3x3 stride-2 'valid' Conv2D on 3 channels after ZeroPadding2D(1) in every input branch"
    ends = graph.lookup(graph.outputs, _is_end, graph.producers.get)
    if not ends:
        return None, "no GlobalAveragePooling2D(keepdims=True) in every output branch"
    end_ids, inside, bad = {id(e) for e in ends}, [], []

    def visit(layer):
        if id(layer) not in end_ids:
            inside.append(layer)
            if not _supported(graph, layer):
                bad.append(layer)
        return id(layer) in end_ids

    graph.lookup([c for s in starts for c in graph.consumers[id(s)]], visit, graph.consumers.get)
    if bad:
        return None, f"layer {bad[0].name!r} ({type(bad[0]).__name__}) between start and end has no CHW (sparse) kernel"
    return {id(layer) for layer in inside}, None


def _verdict(layer, inside, model_reason):
    if not (isinstance(layer, keras.layers.Conv2D) and tuple(layer.kernel_size) == (1, 1)):
        kind = getattr(type(layer), "plain_class", type(layer)).__name__
        size = f" {tuple(layer.kernel_size)}" if hasattr(layer, "kernel_size") else ""
        return False, f"a {kind}{size}: XNNPACK's sparse path runs only 1x1 Conv2D"
    if not _is_1x1(layer):
        return False, "a 1x1 Conv2D with stride, dilation or groups other than 1"
    if model_reason is not None:
        return False, f"the model has no sparse subgraph: {model_reason}"
    if id(layer) not in inside:
        return False, "outside the start..GlobalAveragePooling2D subgraph"
    return True, "1x1 Conv2D inside the sparse subgraph"


def xnnpack_sparse_report(model, print_fn=print):
    """Per masked layer, whether XNNPACK's sparse inference can use it on ARM (tfmot's `PruneForLatencyOnXNNPack`).

    Args:
      model: a `sparsify`'d functional or Sequential Keras model (its masked
        layers are the pruned ones; layers in nested models are reported as
        not checked).
      print_fn: called with each line of the table (None: print nothing).

    Returns:
      A list of `XnnpackRow(layer, usable, reason)`, one per masked layer in
      model order. The printed table ends with a note: on x86 CPUs with AVX
      XNNPACK's sparse path is off regardless (its `xnn_is_chw_compatible_config`),
      so these verdicts hold for ARM.
    """
    inside, model_reason = _subgraph(model)
    top = {id(layer) for layer in (_graph_model(model) or model).layers}
    rows = []
    for layer in masking.masked_layers(model):
        if id(layer) not in top:
            rows.append(XnnpackRow(layer.name, False, "inside a nested model: not checked"))
            continue
        rows.append(XnnpackRow(layer.name, *_verdict(layer, inside or set(), model_reason)))
    if print_fn is not None:
        width = max([len(row.layer) for row in rows] + [5])
        for row in rows:
            print_fn(f"{row.layer:<{width}}  {'sparse path' if row.usable else 'dense only '}  {row.reason}")
        print_fn(X86_NOTE)
    return rows
