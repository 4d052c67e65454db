"""SavedModel deployment of sparse members and of whole ensembles.

A member is exported with Keras' own `model.export` (endpoint `serve`, the
model's output, usually logits). Its pruned kernel entries are exact zeros in
the stored variables, which `export_member` checks before writing; the
endpoints are therefore traced reading the raw kernels (`unmasked_kernels`),
so serving skips the kernel * mask product of every call (same outputs; a
masked 784-4096-4096-10 MLP served at 4.0x its dense twin's batch-1 time with
the products, BENCHMARKS.md section 6c).

An ensemble is one SavedModel written with `keras.export.ExportArchive`, with
three endpoints over a batch of inputs:
  - `serve`: mean of the members' probabilities, (N, C);
  - `member_probabilities`: every member's probabilities, (M, N, C);
  - `uncertainty`: dict of `mean_probabilities` (N, C), `predictive_entropy`
    (N,) and `mutual_information` (N,).

Input contract of every endpoint: the model's input dtype, float32 images as
the model was trained on (the library's image models: pixels scaled to
[0, 1]) or integer ids (token ids: an Embedding model). NaN/Inf float inputs
are rejected (`InvalidArgumentError` naming the contract) rather than
answered with NaN; with `input_range=(0.0, 1.0)` inputs outside it are
rejected too, so raw 0..255 pixels (uint8 or int arrays are converted to
float32 by a float signature) fail loudly instead of being answered
confidently wrong. An empty batch gives an empty answer.
"""

import contextlib
import math
import os

import keras
import numpy as np
import tensorflow as tf

from tf_freetickets.sparse import layers as masking


def check_pruned_weights_are_zero(model):
    """Raises ValueError naming the layer if a kernel is nonzero where its mask is 0."""
    for layer in masking.masked_layers(model):
        kernel = np.asarray(layer.kernel_variable.numpy())
        outside = kernel[np.asarray(layer.kernel_mask.numpy()) == 0]
        if outside.size and np.any(outside != 0):
            raise ValueError(
                f"Layer {layer.name!r} has {int(np.count_nonzero(outside))} nonzero kernel entries outside its mask; "
                "the model was changed outside the sparse training engine."
            )


def checked_inputs(x, input_range=None):
    """`x` after in-graph checks: float values finite and, with `input_range`, every value inside it.

    Args:
      x: a tensor (a batch of inputs): float images, or integer ids (token ids,
        class indices), which cannot hold NaN/Inf and skip that check.
      input_range: optional (low, high) inclusive bounds, e.g. (0.0, 1.0) for
        images scaled as the library's pipelines scale them; integer inputs are
        checked against [ceil(low), floor(high)], exactly.

    Returns:
      `x`, once the checks pass; otherwise the call raises InvalidArgumentError.
    """
    dtype = tf.as_dtype(x.dtype)
    checks = []
    if dtype.is_floating:  # assert_all_finite takes float tensors only
        checks.append(tf.debugging.assert_all_finite(x, "inputs hold NaN or Inf; the model takes finite values"))
    if input_range is not None and (dtype.is_floating or dtype.is_integer):
        low, high = (float(v) for v in input_range)
        if dtype.is_floating:
            contract = f"inputs must be float32 values in [{low:g}, {high:g}] (raw 0..255 pixels: divide by 255 first)"
        else:
            low, high = math.ceil(low), math.floor(high)
            contract = f"inputs must be integers in [{low}, {high}]"
        checks.append(tf.debugging.assert_greater_equal(x, tf.cast(low, x.dtype), message=contract))
        checks.append(tf.debugging.assert_less_equal(x, tf.cast(high, x.dtype), message=contract))
    with tf.control_dependencies(checks):
        return tf.identity(x)


def _non_empty(x):
    """(x, or one zero example in place of an empty batch, the true batch size)."""
    size = tf.shape(x)[0]
    safe = tf.cond(size > 0, lambda: x, lambda: tf.zeros(tf.concat([[1], tf.shape(x)[1:]], 0), x.dtype))
    safe.set_shape(x.shape)
    return safe, size


def _serving_fn(fn, input_range, batch_axis=0):
    """`fn` behind the input checks; an empty batch is answered with an empty result of the right shape.

    (TensorFlow's convolution mis-shapes a batch of 0 examples, so the
    endpoint runs one zero example instead and slices the answer to 0.)
    """

    def serve(x):
        safe, size = _non_empty(checked_inputs(x, input_range))
        result = fn(safe)
        take = (lambda t: t[:size]) if batch_axis == 0 else (lambda t: t[:, :size])
        return tf.nest.map_structure(take, result)

    return serve


def _input_signature(model):
    specs = [tf.TensorSpec(tensor.shape, tensor.dtype, name=f"input_{i}") for i, tensor in enumerate(model.inputs)]
    return specs if len(specs) > 1 else specs[0]


def check_weights_are_finite(model):
    """Raises ValueError naming the variables of `model` that hold NaN or Inf (a diverged training)."""
    bad = [v.path for v in model.weights if v.dtype.startswith("float") and not np.all(np.isfinite(v.numpy()))]
    if bad:
        raise ValueError(f"Model {model.name!r} has NaN/Inf weights in {bad[:3]}: its training diverged.")


def export_member(model, path, input_range=None):
    """Exports one (sparse) Keras model as a SavedModel at `path`.

    Args:
      model: a built Functional/Sequential model, masked or dense.
      path: output folder (created).
      input_range: optional (low, high) bounds the `serve` endpoint enforces
        (module doc); NaN/Inf inputs are always rejected (single-input models).

    Returns:
      `path`. Reload with `tf.saved_model.load(path).serve(x)` or
      `EnsembleModel.from_saved_models`.
    """
    check_weights_are_finite(model)
    check_pruned_weights_are_zero(model)
    signature = _input_signature(model)
    if isinstance(signature, list):  # several inputs: Keras' own export, unchecked
        model.export(path, format="tf_saved_model", verbose=False, input_signature=[signature])
        return path
    archive = keras.export.ExportArchive()
    archive.track(model)
    with masking.unmasked_kernels(model):  # pruned entries are zeros (checked): serve without the mask products
        archive.add_endpoint("serve", _serving_fn(lambda x: model(x, training=False), input_range), input_signature=[signature])
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        archive.write_out(path, verbose=False)
    return path


def export_ensemble(ensemble, path, input_range=None):
    """Writes an `EnsembleModel` as one SavedModel with three endpoints (module doc).

    Args:
      ensemble: an `EnsembleModel`.
      path: output folder (created).
      input_range: optional (low, high) bounds every endpoint enforces;
        NaN/Inf inputs are always rejected.

    Returns:
      `path`.
    """
    for member in ensemble.members:
        check_weights_are_finite(member)
        check_pruned_weights_are_zero(member)
    signature = tf.TensorSpec((None, *ensemble.input_shape_per_example), ensemble.member_input_dtype, name="inputs")
    archive = keras.export.ExportArchive()
    archive.track(ensemble)
    with contextlib.ExitStack() as unmasked:  # as export_member: no mask products in the endpoints
        for member in ensemble.members:
            unmasked.enter_context(masking.unmasked_kernels(member))
        archive.add_endpoint("serve", _serving_fn(lambda x: ensemble(x, training=False), input_range),
                             input_signature=[signature])  # fmt: skip
        archive.add_endpoint(
            "member_probabilities",
            _serving_fn(ensemble.member_probabilities, input_range, batch_axis=1),
            input_signature=[signature],
        )
        archive.add_endpoint("uncertainty", _serving_fn(ensemble.uncertainty, input_range), input_signature=[signature])
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        archive.write_out(path, verbose=False)
    return path
