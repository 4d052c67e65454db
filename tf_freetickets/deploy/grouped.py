"""`group_ensemble`: M CNN members of ONE architecture as one plain Keras model with grouped convolutions.

`stack_ensemble` copies the M members side by side: M small convolutions per layer. When the
members share their architecture (M tickets of the same `tft.models.small_cnn`, stripped; or
compacted tickets that happen to keep the same widths), the grouped form runs each layer once for
all members:

- the layers before the first Conv2D (e.g. an input Normalization) once, shared (they must be
  equal in weights too);
- the first Conv2D as ONE Conv2D with M x filters (the members' kernels concatenated along the
  output channels): the shared input is read once;
- every later Conv2D as one Conv2D(groups=M x its groups) over the channel-concatenated members
  (member m owns channels [m C, (m + 1) C)); BatchNormalization (its four vectors concatenated),
  activations and pooling act per channel, so they run once on the concatenation;
- Flatten interleaves the members' channels, so the head is regrouped first: Reshape to
  (H, W, M, C), Permute to (M, H, W, C), Reshape to (M, H W C) (each member's own Flatten order),
  then every Dense as one EinsumDense "abc,bcd->abd" over (M, in) with an (M, in, units) kernel
  (a batched product per member, no zero blocks); GlobalAverage/MaxPooling2D becomes (M, C);
- the output (N, M, C): Softmax over C (from_logits), then GlobalAveragePooling1D over M, the
  mean probability, (N, C).

Every step is exact (the same products in the same order per member; max abs diff to the
members' mean probability ~1e-7 in tests). Plain Keras layers only: the `.keras` file and the
SavedModel load without this library. Members that differ (a layer's type, configuration or weight
shapes) are refused with one ValueError naming the first difference; `stack_ensemble` serves them.
Dropout-like layers are dropped (the model is for inference).

Speed: Keras on TensorFlow runs a Conv2D with groups > 1 through an XLA-compiled function on CPU
(keras/src/backend/tensorflow/nn.py, `conv`: "grouped convolutions are broken on CPU without XLA"),
about 1.3-1.5x slower per layer than TensorFlow's own grouped `tf.nn.conv2d` on the 2-core machine
this was written on; so as a SavedModel this form was slower than `stack_ensemble`'s in its first
measurement (tools/bench_stacked_serving.py), while its TFLite file (native grouped CONV_2D) ran about
as fast as the stacked one at batch 1. Its EinsumDense heads become BATCH_MATMUL in TFLite, which the
converter's sparse encoding does not compress: a grouped file of tickets is larger than a stacked one.
"""

import keras
import numpy as np

from tf_freetickets.deploy.chain import chain_layers
from tf_freetickets.deploy.stacked import check_stackable, plain_member

_ELEMENTWISE = (keras.layers.ReLU, keras.layers.LeakyReLU, keras.layers.ELU)
_POOLING = (keras.layers.MaxPooling2D, keras.layers.AveragePooling2D)
_TO_MEMBERS = (keras.layers.Flatten, keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)
_INFERENCE_IDENTITY = (keras.layers.Dropout, keras.layers.SpatialDropout2D, keras.layers.GaussianNoise,
                       keras.layers.GaussianDropout, keras.layers.AlphaDropout)  # fmt: skip
_CROSS_CHANNEL = ("softmax", "log_softmax")
_IGNORED_KEYS = ("name", "trainable")
_TRAINING_ONLY = ("_regularizer", "_constraint", "_initializer")  # irrelevant to serving; may name library classes
_SERVED_BY_STACK = "the non-grouped tf_freetickets.deploy.stacked.stack_ensemble(members) serves them"


def _refuse(layer, problem):
    what = "a nested model" if problem == "nested" else "not fed by the previous layer alone (a branch or skip)"
    raise ValueError(f"group_ensemble serves layer chains; layer {layer.name!r} is {what}; {_SERVED_BY_STACK}.")


def _config(layer):
    """The layer's configuration that decides what it computes."""
    return {k: v for k, v in layer.get_config().items() if k not in _IGNORED_KEYS and not k.endswith(_TRAINING_ONLY)}


def _first_difference(reference, layers):
    """A phrase naming the first difference between two layer lists, or None when they agree."""
    if len(layers) != len(reference):
        return f"{len(layers)} layers, member 0 has {len(reference)}"
    for index, (want, got) in enumerate(zip(reference, layers)):
        where = f"layer {index} after the input ({got.name!r}, {type(got).__name__})"
        if type(got) is not type(want):
            return f"{where} where member 0 has a {type(want).__name__} ({want.name!r})"
        config, wanted = _config(got), _config(want)
        for key in sorted(set(config) | set(wanted)):
            if config.get(key) != wanted.get(key):
                return f"{where}: {key} {config.get(key)!r}, member 0 has {wanted.get(key)!r}"
        shapes, wanted_shapes = [tuple(w.shape) for w in got.weights], [tuple(w.shape) for w in want.weights]
        if shapes != wanted_shapes:
            return f"{where}: weight shapes {shapes}, member 0 has {wanted_shapes}"
    return None


def check_groupable(members, from_logits=True):
    """The members' layer chains (stripped), checked to share one architecture; see the module doc.

    Args:
      members: as `group_ensemble`.
      from_logits: as `group_ensemble` (checked as `stack_ensemble` checks it).

    Returns:
      list of M lists of layers (each member's chain after its InputLayer, masks folded).

    Raises:
      ValueError: what `stack_ensemble` refuses; a member that is not a chain; a member whose
        architecture differs from member 0's (the first differing layer index, name and field named).
    """
    check_stackable(members, from_logits)
    chains = [chain_layers(plain_member(member), "group_ensemble", _refuse) for member in members]
    for index, chain in enumerate(chains[1:], start=1):
        difference = _first_difference(chains[0], chain)
        if difference:
            raise ValueError(f"group_ensemble needs members of one architecture; member {index} "
                             f"({members[index].name!r}) has {difference}; {_SERVED_BY_STACK}.")  # fmt: skip
    return chains


def _renamed(layer, name, **changes):
    """A new layer of `layer`'s class and configuration, renamed, without training-only objects (plain Keras)."""
    config = {**layer.get_config(), "name": name, **changes}
    for key in [k for k in config if k.endswith(_TRAINING_ONLY)]:
        config[key] = "zeros" if key.endswith("_initializer") else None
    return type(layer).from_config(config)


def _concatenated(layers, axis=-1):
    """Each weight of `layers` (one per member) concatenated along `axis`."""
    return [np.concatenate(values, axis=axis) for values in zip(*(layer.get_weights() for layer in layers))]


def _apply(layer, x, weights):
    y = layer(x)
    layer.set_weights(weights)
    return y


def _conv(layers, x, first):
    """One Conv2D for all members: shared input (first) or groups = M x the members' groups."""
    head, count = layers[0], len(layers)
    if head.get_config().get("data_format", "channels_last") != "channels_last":
        raise ValueError(f"group_ensemble needs channels_last convolutions; {head.name!r} is channels_first.")
    groups = head.get_config().get("groups", 1)
    if first and groups != 1:
        raise ValueError(f"group_ensemble fuses the first Conv2D over the shared input; {head.name!r} has "
                         f"groups={groups} (only 1 is supported there); {_SERVED_BY_STACK}.")  # fmt: skip
    changes = {"filters": count * head.filters, "groups": 1 if first else count * groups}
    return _apply(_renamed(head, f"grouped_{head.name}", **changes), x, _concatenated(layers))


def _dense(layers, x):
    """One EinsumDense over (N, M, in): member m's kernel and bias at index m."""
    head, count = layers[0], len(layers)
    layer = keras.layers.EinsumDense(
        "abc,bcd->abd",
        output_shape=(count, head.units),
        bias_axes="bd" if head.use_bias else None,
        activation=head.activation,
        name=f"grouped_{head.name}",
    )
    return _apply(layer, x, [np.stack(values) for values in zip(*(m.get_weights() for m in layers))])


def _to_members(layer, x, count):
    """Flatten or global pooling of the concatenated channels, regrouped to (N, M, features per member)."""
    height, width, channels = tuple(x.shape[1:])
    per_member = channels // count
    if isinstance(layer, keras.layers.Flatten):
        x = keras.layers.Reshape((height, width, count, per_member), name="grouped_split_channels")(x)
        x = keras.layers.Permute((3, 1, 2, 4), name="grouped_members_first")(x)
        return keras.layers.Reshape((count, height * width * per_member), name=f"grouped_{layer.name}")(x)
    x = _renamed(layer, f"grouped_{layer.name}")(x)
    return keras.layers.Reshape((count, per_member), name="grouped_split_members")(x)


def _pre_conv(layers, x):
    """Layers before the first Conv2D, applied once: they must hold the same weights in every member."""
    reference = layers[0]
    for index, layer in enumerate(layers[1:], start=1):
        if any(not np.array_equal(a, b) for a, b in zip(reference.get_weights(), layer.get_weights())):
            raise ValueError(f"group_ensemble shares the layers before the first Conv2D; member {index}'s "
                             f"{layer.name!r} holds other weights than member 0's; {_SERVED_BY_STACK}.")  # fmt: skip
    return _apply(_renamed(reference, f"shared_{reference.name}"), x, reference.get_weights())


def _grouped_layer(layers, x, stage):
    """x after the members' `layers` (one per member) in grouped form; stage: "input", "channels" or "members"."""
    head, count = layers[0], len(layers)
    activation = getattr(getattr(head, "activation", None), "__name__", "")
    elementwise = isinstance(head, _ELEMENTWISE) or (isinstance(head, keras.layers.Activation) and
                                                     (stage == "members" or activation not in _CROSS_CHANNEL))  # fmt: skip
    if isinstance(head, _INFERENCE_IDENTITY):
        return x, stage
    if type(head) is keras.layers.Conv2D and stage != "members":
        return _conv(layers, x, first=stage == "input"), "channels"
    if stage == "input":
        return _pre_conv(layers, x), stage
    if elementwise or (stage == "channels" and isinstance(head, _POOLING)):
        return _apply(_renamed(head, f"grouped_{head.name}"), x, []), stage
    if stage == "channels" and isinstance(head, keras.layers.BatchNormalization) and head.axis in (-1, 3, [3], [-1]):
        return _apply(_renamed(head, f"grouped_{head.name}"), x, _concatenated(layers)), stage
    if stage == "channels" and isinstance(head, _TO_MEMBERS) and not head.get_config().get("keepdims", False):
        return _to_members(head, x, count), "members"
    if stage == "members" and type(head) is keras.layers.Dense:
        return _dense(layers, x), stage
    where = {"input": "before the first Conv2D", "channels": "among the convolutions", "members": "in the head"}[stage]
    raise ValueError(f"group_ensemble does not group a {type(head).__name__} ({head.name!r}) {where}; "
                     f"{_SERVED_BY_STACK}.")  # fmt: skip


def group_ensemble(members, from_logits=True, name="grouped_ensemble"):
    """One plain Keras model computing the members' mean probability with grouped layers (module doc).

    Args:
      members: list of M >= 1 built single-input, single-output Functional or Sequential Keras
        models of ONE architecture, each a chain of (masked) Conv2D, BatchNormalization,
        activations, pooling, then Flatten or global pooling, then Dense layers (as
        `tft.models.small_cnn`); masked tickets are stripped first (exact).
      from_logits: the members output logits (softmaxed before averaging, as `EnsembleModel`) or
        probabilities (averaged as they are).
      name: the model's name.

    Returns:
      A new, uncompiled `keras.Model`: inputs (N, H, W, C) -> mean probabilities (N, classes),
      equal to `stack_ensemble(members, from_logits)` up to float rounding.

    Raises:
      ValueError: what `stack_ensemble` refuses; members whose architectures differ (the first
        difference named); a layer the grouped form cannot group (named). `stack_ensemble` serves
        such members.
    """
    members = list(members)
    chains = check_groupable(members, from_logits)
    inputs = keras.Input(tuple(members[0].inputs[0].shape[1:]), dtype=members[0].inputs[0].dtype, name="inputs")
    x, stage = inputs, "input"
    for layers in zip(*chains):
        x, stage = _grouped_layer(list(layers), x, stage)
    if stage != "members":
        raise ValueError(f"group_ensemble needs members ending in Flatten or global pooling then Dense layers; "
                         f"{members[0].name!r} ends while {stage!r}; {_SERVED_BY_STACK}.")  # fmt: skip
    if from_logits:
        x = keras.layers.Softmax(axis=-1, name="member_probabilities")(x)
    outputs = keras.layers.GlobalAveragePooling1D(name="mean_probabilities")(x)
    return keras.Model(inputs, outputs, name=name)
