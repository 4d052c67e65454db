"""`stack_ensemble`: the M members of a CNN ensemble as ONE plain Keras Functional model.

The stacked model takes the shared input once, runs the M member networks side by side inside one
graph (each member's layers copied with their weights, renamed `m<i>_<name>` so the names stay
unique) and outputs the mean of the members' softmax probabilities, (N, C): what `EnsembleModel`
returns, but as one Functional model of Keras layers only, so its `.keras` file loads with
`keras.models.load_model` without this library and `export_member` writes it as one SavedModel
(one `serve` endpoint, the input contract of `saved_model`; that endpoint returns the model's
output as it is, so here the mean probabilities, with no softmax applied on top).

Members may differ in widths and layers (compacted tickets of different sizes from `tft.compact`,
a ResNet next to a small CNN) as long as they share the input spec and the class count. A masked
member (a ticket) is copied through `tft.strip` first (its masks folded into the kernels, exact);
to serve fewer channels, `tft.compact` the tickets before stacking.

The grouped form, for members of ONE architecture (the first Conv2D fused over the shared input,
Conv2D(groups=M) after it, per-member EinsumDense heads), is `deploy.grouped.group_ensemble`: exact
too, but not faster on CPU in its first measurement (tools/bench_stacked_serving.py, small_cnn x3 on
the shared 2-core machine): as a SavedModel it was slower than this form (2.5x against 1.9x one dense
twin at batch 1, one thread), because Keras runs grouped convolutions on TensorFlow's CPU through XLA;
as TFLite (native grouped CONV_2D) it was about as fast as this form at batch 1. Both forms convert
with `deploy.tflite.export_tflite`, within 1e-5 of Keras.
"""

import keras

from tf_freetickets import keras_compat
from tf_freetickets.sparse import layers as masking
from tf_freetickets.sparse.strip import strip


def _spec(member, index):
    """(input shape per example, input dtype, output shape) of a built single-input, single-output graph model."""
    if not isinstance(member, keras.Model) or not keras_compat.is_functional_or_sequential(member):
        raise ValueError(
            f"member {index} ({getattr(member, 'name', member)!r}) is a {type(member).__name__}; stack_ensemble copies "
            "layer graphs, so members must be Functional or Sequential Keras models."
        )
    if not member.built or len(member.inputs) != 1 or len(member.outputs) != 1:
        raise ValueError(f"member {index} ({member.name!r}) must be a built Keras model with one input and one output.")
    return tuple(member.inputs[0].shape[1:]), str(member.inputs[0].dtype), tuple(member.outputs[0].shape[1:])


def check_stackable(members, from_logits):
    """Raises one ValueError naming the first mismatch (module doc); returns (input shape, dtype).

    The rules are `EnsembleModel`'s (ensembles sit above deploy, so they are restated here): at
    least one member, the same input shape, dtype and output shape (class count) as member 0, and
    no member whose last layer visibly ends in a softmax with `from_logits=True` (softmax twice).
    """
    if not members:
        raise ValueError("stack_ensemble needs at least one member; got an empty list.")
    reference = _spec(members[0], 0)
    for index, member in enumerate(members):
        spec = _spec(member, index)
        for what, got, want in zip(("input shape", "input dtype", "output shape (classes)"), spec, reference):
            if got != want:
                raise ValueError(f"member {index} ({member.name!r}) has {what} {got}, but member 0 "
                                 f"({members[0].name!r}) has {want}; stacked members must agree.")  # fmt: skip
        last = member.layers[-1] if keras_compat.is_functional_or_sequential(member) and member.layers else None
        softmaxed = (
            isinstance(last, keras.layers.Softmax) or getattr(getattr(last, "activation", None), "__name__", "") == "softmax"
        )
        if from_logits and softmaxed:
            raise ValueError(f"member {index} ({member.name!r}) ends in a softmax but from_logits=True would apply "
                             "softmax twice; pass from_logits=False.")  # fmt: skip
    return reference[0], reference[1]


def plain_member(member):
    """`member` with no masked layer (stripped: exact)."""
    return strip(member) if masking.masked_layers(member) else member


def _copy_onto(member, inputs, prefix):
    """The output tensor of `member`'s layers, copied under `prefix` with their weights, applied to `inputs`."""
    pairs = []

    def clone(layer):
        config = layer.get_config()
        config["name"] = f"{prefix}{layer.name}"
        copy = type(layer).from_config(config)
        pairs.append((layer, copy))
        return copy

    if isinstance(member, keras.Sequential):
        x = inputs
        for layer in member.layers:
            x = clone(layer)(x)
        outputs = x
    else:
        copied = keras.models.clone_model(member, input_tensors=inputs, clone_function=clone)
        outputs = copied.outputs[0]
    for layer, copy in pairs:  # built by the calls above: now the weights can be set
        copy.set_weights(layer.get_weights())
    return outputs


def stack_ensemble(members, from_logits=True, name="stacked_ensemble"):
    """One plain Keras Functional model computing the mean of the members' probabilities (module doc).

    Args:
      members: list of M >= 1 built single-input, single-output Functional or Sequential Keras
        models with the same input shape/dtype and class count (widths and depths may differ;
        masked tickets are stripped, exact).
      from_logits: the members output logits (True: the library's `tft.models`, as
        `EnsembleModel`) and are softmaxed before averaging, or probabilities (False: averaged as
        they are). A member whose last layer visibly contradicts it is refused (see `check_stackable`).
      name: the stacked model's name.

    Returns:
      A new, uncompiled `keras.Model`: inputs (N, *example shape) -> mean probabilities (N, C),
      equal to `EnsembleModel(members, from_logits)(x)` up to float rounding. Export it with
      `tf_freetickets.deploy.saved_model.export_member` (one SavedModel, checked inputs).

    Raises:
      ValueError: no members; a member whose input shape, dtype or class count differs from
        member 0's (named, with both specs); a subclassed member; a last activation contradicting
        `from_logits`.
    """
    members = list(members)
    input_shape, dtype = check_stackable(members, from_logits)
    plains = [plain_member(member) for member in members]
    inputs = keras.Input(input_shape, dtype=dtype, name="inputs")
    probabilities = []
    for index, member in enumerate(plains):
        outputs = _copy_onto(member, inputs, f"m{index}_")
        if from_logits:
            outputs = keras.layers.Softmax(name=f"m{index}_probabilities")(outputs)
        probabilities.append(outputs)
    mean = probabilities[0] if len(probabilities) == 1 else keras.layers.Average(name="mean_probabilities")(probabilities)
    return keras.Model(inputs, mean, name=name)
