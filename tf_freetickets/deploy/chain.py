"""The layer chain of a model served outside Keras (`csr.CSRPredictor`, `fused.FusedMLPEnsemble`)."""

import keras

from tf_freetickets import keras_compat


def chain_layers(model, server, refuse):
    """`model`'s layers after its InputLayer, checked to form one chain from its one input to its one output.

    Args:
      model: a built Functional or Sequential Keras model.
      server: the serving class's name, for the messages.
      refuse: refuse(layer, problem) raises the caller's error for a layer
        that is a nested model (problem "nested") or does not read the
        previous layer's output (problem "branch").

    Raises:
      ValueError: another kind of model, several inputs or outputs, or an
        output that is not the last layer's.
    """
    if not (isinstance(model, keras.Sequential) or keras_compat.is_plain_functional(model)):
        raise ValueError(f"{server} serves Functional and Sequential models; got {type(model).__name__}.")
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"{server} serves one-input, one-output models; {model.name!r} has "
                         f"{len(model.inputs)} inputs and {len(model.outputs)} outputs.")  # fmt: skip
    layers, previous = [], model.inputs[0]
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if isinstance(layer, keras.Model):
            refuse(layer, "nested")
        if layer.input is not previous:
            refuse(layer, "branch")
        layers.append(layer)
        previous = layer.output
    if previous is not model.outputs[0]:
        raise ValueError(f"The output of {model.name!r} is not its last layer's; {server} serves chains.")
    return layers
