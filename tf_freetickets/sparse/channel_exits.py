"""Where a masked layer's output channels go: which layers may lose whole channels (Chase).

A layer's output channel can be removed (all its incoming weights zero) only where nothing needs
that channel to carry a learned signal of its own. Two places do: an arithmetic merge (`Add`,
`Subtract`, `Multiply`, `Average`, `Maximum`, `Minimum`), whose channel c mixes every branch's
channel c, so it is gone only if every branch agrees (a residual block); and a model output, whose
units are the predictions. `channel_exits` follows each masked layer's output through the layers
that keep channels apart (BatchNormalization, activations, pooling, dropout, Flatten, Concatenate,
...) until a layer with a kernel reads it, and says whether a merge or a model output was reached
on the way. Chase (`sparse/methods/chase.py`) never removes channels of such a layer: the simplest
rule that is always correct, and the official Chase code's choice for ResNets (only the convs
inside a block, not the ones that feed its addition, are channel-pruned).
"""

import keras

from tf_freetickets import keras_compat
from tf_freetickets.sparse import layers as masking

#: Merges whose output channel c combines every input's channel c.
MERGES = (
    keras.layers.Add,
    keras.layers.Subtract,
    keras.layers.Multiply,
    keras.layers.Average,
    keras.layers.Maximum,
    keras.layers.Minimum,
)


def _graph(model):
    """({id(layer): [layers that take its output]}, ids of the output layers, ids of all graph layers)."""
    inputs, outputs, nodes = keras_compat.graph_nodes(model)
    producer = {id(tensor): operation for operation, _, produced, _ in nodes for tensor in produced}
    consumers = {}
    for operation, taken, _, _ in nodes:
        for tensor in taken:
            if id(tensor) in producer:
                consumers.setdefault(id(producer[id(tensor)]), []).append(operation)
    output_layers = {id(producer[id(t)]) for t in outputs if id(t) in producer}
    return consumers, output_layers, {id(operation) for operation, _, _, _ in nodes}


def channel_exits(model, layer):
    """Why `layer`'s output channels must stay (an empty tuple: they may be removed).

    Args:
      model: a Functional or Sequential Keras model that holds `layer` at its top level.
      layer: one of its masked layers.

    Returns:
      a tuple of reasons, each naming the layer reached: "feeds merge 'add_1'", "reaches model
      output 'dense'" (or "inside a nested model": its graph is not followed, so it is kept).

    Raises:
      ValueError: `model` has no graph to follow (a subclassed model).
    """
    if not keras_compat.is_functional_or_sequential(model):
        raise ValueError(f"Model {model.name!r} is subclassed: Chase's channel removal needs a Functional or Sequential model.")
    consumers, outputs, members = _graph(model)
    if id(layer) not in members:
        return (f"inside a nested model of {model.name!r}",)
    reasons, seen, frontier = [], set(), [layer]
    while frontier:
        current = frontier.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        if id(current) in outputs:
            reasons.append(f"reaches model output {current.name!r}")
        for consumer in consumers.get(id(current), []):
            if isinstance(consumer, MERGES):
                reasons.append(f"feeds merge {consumer.name!r}")
            elif not (masking.is_masked(consumer) or hasattr(consumer, "kernel")):
                frontier.append(consumer)
    return tuple(dict.fromkeys(reasons))
