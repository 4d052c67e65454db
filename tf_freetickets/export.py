"""SavedModel deployment of sparse members and of whole ensembles.

A member is exported with Keras' own `model.export` (endpoint `serve`, the
model's output, usually logits). Its pruned kernel entries are exact zeros in
the stored variables, which `export_member` checks before writing.

An ensemble is one SavedModel written with `keras.export.ExportArchive`, with
three endpoints over a batch of inputs:
  - `serve`: mean of the members' probabilities, (N, C);
  - `member_probabilities`: every member's probabilities, (M, N, C);
  - `uncertainty`: dict of `mean_probabilities` (N, C), `predictive_entropy`
    (N,) and `mutual_information` (N,).
"""

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


def _input_signature(model):
    specs = [tf.TensorSpec(tensor.shape, tensor.dtype, name=f"input_{i}") for i, tensor in enumerate(model.inputs)]
    return specs if len(specs) > 1 else specs[0]


def export_member(model, path):
    """Exports one (sparse) Keras model as a SavedModel at `path`.

    Args:
      model: a built Functional/Sequential model, masked or dense.
      path: output folder (created).

    Returns:
      `path`. Reload with `tf.saved_model.load(path).serve(x)` or
      `EnsembleModel.from_saved_models`.
    """
    check_pruned_weights_are_zero(model)
    model.export(path, format="tf_saved_model", verbose=False, input_signature=[_input_signature(model)])
    return path


def export_ensemble(ensemble, path):
    """Writes an `EnsembleModel` as one SavedModel with three endpoints (module doc).

    Args:
      ensemble: an `EnsembleModel`.
      path: output folder (created).

    Returns:
      `path`.
    """
    for member in ensemble.members:
        check_pruned_weights_are_zero(member)
    signature = tf.TensorSpec((None, *ensemble.input_shape_per_example), ensemble.member_input_dtype, name="inputs")
    archive = keras.export.ExportArchive()
    archive.track(ensemble)
    archive.add_endpoint("serve", lambda x: ensemble(x, training=False), input_signature=[signature])
    archive.add_endpoint("member_probabilities", ensemble.member_probabilities, input_signature=[signature])
    archive.add_endpoint("uncertainty", ensemble.uncertainty, input_signature=[signature])
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    archive.write_out(path, verbose=False)
    return path
