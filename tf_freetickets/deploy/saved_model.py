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

Input contract of every endpoint, the same for every SavedModel the library
writes (`export_member`: the members and EDST tickets a training run writes
under members/; `export_ensemble`: `EnsembleModel.export` and the export
binary): the model's input dtype, float32 images as the model was trained on
(the library's image models: pixels scaled to [0, 1]) or integer ids (token
ids: an Embedding model). Each check raises `InvalidArgumentError` naming the
contract, in the graph and before any of the model's ops, so it holds for the
signatures too (`signatures["serving_default"]`, TF Serving), which do not
check the shape they are fed:
  - shape: a batch of the model's example shape, (N, H, W, C) for images; a
    wrong rank, size or channel count is refused naming the expected and the
    received shape (not answered, and never passed to a kernel: a rank-3 batch
    killed the process in TensorFlow's oneDNN convolution);
  - NaN/Inf float inputs are refused rather than answered with NaN;
  - range: with the default `input_range="auto"`, float inputs must lie in
    [0, 1], so raw 0..255 pixels (uint8 or int arrays are converted to float32
    by a float signature) fail loudly instead of being answered confidently
    wrong; integer ids get no range unless one is given. `input_range=None`
    drops the range check (inputs normalised otherwise, e.g. ImageNet's
    mean/std: `input_range_for_dataset`).
An empty batch gives an empty answer.
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


#: `input_range` value that picks the range from the input dtype (`resolve_input_range`).
AUTO = "auto"
#: Datasets whose pipelines normalise images outside the model (mean/std): their inputs have no [0, 1] range.
_NORMALISED_OUTSIDE_THE_MODEL = ("imagenet2012",)


def input_range_for_dataset(dataset):
    """The `input_range` the SavedModels of a run on `dataset` should enforce.

    Every pipeline of the library scales pixels to [0, 1] and CIFAR's mean/std
    normalisation is a layer inside the model, so "auto" ([0, 1] for float
    inputs) fits all datasets but ImageNet, whose stream normalises by the
    channel mean/std before the model (no range: None).
    """
    return None if dataset in _NORMALISED_OUTSIDE_THE_MODEL else AUTO


def resolve_input_range(input_range, dtype):
    """(low, high) or None: `input_range` with "auto" resolved for inputs of `dtype`.

    "auto" is (0.0, 1.0) for float inputs (images scaled by 1/255, the
    library's pipelines) and None for integer ids (their valid range is the
    vocabulary's, which only the caller knows).
    """
    if isinstance(input_range, str):
        if input_range != AUTO:
            raise ValueError(f"input_range={input_range!r} must be {AUTO!r}, None or (low, high).")
        return (0.0, 1.0) if tf.as_dtype(dtype).is_floating else None
    return input_range


def _shape_check(x, example_shape):
    """An assert op: `x` is a batch of `example_shape` examples (None: any size), of exactly that rank.

    The comparison uses run-time values only: a signature call feeds tensors
    of any shape whatever the traced spec says, so neither the static rank
    nor the static sizes can be trusted. The shape is padded with -1 and cut
    to rank + 1 values, which works for a batch of any rank: the last value is
    -1 exactly when the rank is right.
    """
    rank = len(example_shape) + 1
    got = tf.shape(x, out_type=tf.int64)
    padded = tf.concat([got, tf.fill([rank + 1], tf.constant(-1, tf.int64))], 0)[: rank + 1]
    checks = [padded[0] >= 0, tf.equal(padded[rank], -1)]
    for axis, size in enumerate(example_shape, start=1):
        checks.append(padded[axis] >= 0 if size is None else tf.equal(padded[axis], size))
    wanted = ", ".join(["N", *("?" if size is None else str(size) for size in example_shape)])
    message = f"inputs must be a batch of shape ({wanted}); got shape"
    return tf.debugging.Assert(tf.reduce_all(tf.stack(checks)), [message, got], summarize=rank + 8)


def checked_inputs(x, input_range=None, example_shape=None):
    """`x` after in-graph checks: its shape, float values finite and, with `input_range`, every value inside it.

    Args:
      x: a tensor (a batch of inputs): float images, or integer ids (token ids,
        class indices), which cannot hold NaN/Inf and skip that check.
      input_range: optional (low, high) inclusive bounds, e.g. (0.0, 1.0) for
        images scaled as the library's pipelines scale them; integer inputs are
        checked against [ceil(low), floor(high)], exactly. "auto": see
        `resolve_input_range`.
      example_shape: optional shape of one example, e.g. (28, 28, 1), None for
        a free size; `x` must then be a batch of such examples (any rank or
        size else is refused, before any op reads `x`).

    Returns:
      `x`, once the checks pass; otherwise the call raises InvalidArgumentError.
    """
    dtype = tf.as_dtype(x.dtype)
    input_range = resolve_input_range(input_range, dtype)
    if example_shape is not None:  # first: the value checks' reductions assume the traced rank
        with tf.control_dependencies([_shape_check(x, tuple(example_shape))]):
            x = tf.identity(x)
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


def _serving_fn(fn, input_range, example_shape, batch_axis=0):
    """`fn` behind the input checks (`checked_inputs`); an empty batch is answered with an empty result of the right shape.

    (TensorFlow's convolution mis-shapes a batch of 0 examples, so the
    endpoint runs one zero example instead and slices the answer to 0.)
    """

    def serve(x):
        safe, size = _non_empty(checked_inputs(x, input_range, example_shape))
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


def export_member(model, path, input_range=AUTO):
    """Exports one (sparse) Keras model as a SavedModel at `path`, its `serve` endpoint behind the input contract.

    Args:
      model: a built Functional/Sequential model, masked or dense.
      path: output folder (created).
      input_range: (low, high) bounds the `serve` endpoint enforces, "auto"
        ([0, 1] for float inputs, none for integer ids) or None (no range);
        the batch shape and NaN/Inf are always checked (module doc;
        single-input models: several inputs get Keras' own, unchecked export).

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
    serve = _serving_fn(lambda x: model(x, training=False), input_range, signature.shape[1:])
    archive = keras.export.ExportArchive()
    archive.track(model)
    with masking.unmasked_kernels(model):  # pruned entries are zeros (checked): serve without the mask products
        archive.add_endpoint("serve", serve, input_signature=[signature])
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        archive.write_out(path, verbose=False)
    return path


def export_ensemble(ensemble, path, input_range=AUTO):
    """Writes an `EnsembleModel` as one SavedModel with three endpoints (module doc), each behind the input contract.

    Args:
      ensemble: an `EnsembleModel`.
      path: output folder (created).
      input_range: (low, high) bounds every endpoint enforces, "auto" ([0, 1]
        for float inputs, none for integer ids) or None (no range); the batch
        shape and NaN/Inf are always checked.

    Returns:
      `path`.
    """
    for member in ensemble.members:
        check_weights_are_finite(member)
        check_pruned_weights_are_zero(member)
    shape = tuple(ensemble.input_shape_per_example)
    signature = tf.TensorSpec((None, *shape), ensemble.member_input_dtype, name="inputs")
    archive = keras.export.ExportArchive()
    archive.track(ensemble)
    endpoints = {
        "serve": _serving_fn(lambda x: ensemble(x, training=False), input_range, shape),
        "member_probabilities": _serving_fn(ensemble.member_probabilities, input_range, shape, batch_axis=1),
        "uncertainty": _serving_fn(ensemble.uncertainty, input_range, shape),
    }
    with contextlib.ExitStack() as unmasked:  # as export_member: no mask products in the endpoints
        for member in ensemble.members:
            unmasked.enter_context(masking.unmasked_kernels(member))
        for name, serve in endpoints.items():
            archive.add_endpoint(name, serve, input_signature=[signature])
        os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        archive.write_out(path, verbose=False)
    return path
