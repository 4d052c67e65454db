"""TFLite deployment of (masked) sparse models and ensembles, with sparse weight encoding.

`export_tflite(model, path, sparse=True)` writes the model's inference function as a TFLite flatbuffer:

1. The model is written to a temporary SavedModel with one `serve` endpoint, `model(x, training=False)`,
   over a batch of inputs of any size (`keras.export.ExportArchive`; this is what
   `tf.lite.TFLiteConverter.from_keras_model` does for Keras 3 models too, minus its console output).
   A masked layer computes `kernel * kernel_mask`; the converter freezes both variables and folds the
   product (and BatchNorm) into one constant weight tensor, so the pruned entries are exact zeros in it.
2. `tf.lite.TFLiteConverter.from_saved_model` converts it; with `sparse=True` the converter gets
   `tf.lite.Optimize.EXPERIMENTAL_SPARSITY`, which stores a constant weight tensor in TFLite's sparse
   format (values plus per-dimension index arrays) when that tensor is sparse enough; the others stay
   dense. `sparse_tensors(path)` lists the tensors that were stored sparse.

At run time the TFLite interpreter inserts a DENSIFY op in front of each sparse weight, so the
sparse encoding shrinks the file (and the download), not the arithmetic: latency stays that of the
dense model. `tflite_latency` measures it; `tflite_predict` runs a batch; `tflite_function` keeps one
interpreter for many batches.

Works for Functional/Sequential models (masked or not) and for `EnsembleModel` (one file computing
the mean of the members' probabilities). Importing this module does not import `tf_keras`.
"""

import os
import statistics
import tempfile
import time
import warnings

import keras
import numpy as np
import tensorflow as tf

from tf_freetickets.deploy.saved_model import check_pruned_weights_are_zero


def _signature(model):
    """The `serve` input signature: batch dimension free, the rest from the model."""
    if isinstance(getattr(model, "members", None), (list, tuple)) and hasattr(model, "input_shape_per_example"):
        return tf.TensorSpec((None, *model.input_shape_per_example), model.member_input_dtype, name="inputs")
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        raise ValueError(
            f"export_tflite needs a built model with exactly one input (or an EnsembleModel); {getattr(model, 'name', model)!r} "
            f"has {len(inputs) if inputs else 'no'} inputs."
        )
    tensor = inputs[0]
    return tf.TensorSpec((None, *tuple(tensor.shape)[1:]), tensor.dtype, name="inputs")


def _check_zeros(model):
    for member in getattr(model, "members", None) or [model]:
        check_pruned_weights_are_zero(member)


def convert_to_tflite(model, sparse=True, quantize=False):
    """The TFLite flatbuffer (bytes) of `model`'s inference function; see the module doc.

    Args:
      model: a built single-input Functional/Sequential Keras model, masked or dense, or an
        `EnsembleModel`.
      sparse: let the converter store sparse constant weights in TFLite's sparse format
        (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`).
      quantize: also apply dynamic-range quantization (`tf.lite.Optimize.DEFAULT`: int8 weights,
        float activations).

    Returns:
      bytes.
    """
    if not isinstance(model, keras.Model) or not model.built:
        raise ValueError(f"export_tflite expects a built keras.Model, got {model!r}.")
    _check_zeros(model)
    signature = _signature(model)
    optimizations = []
    if quantize:
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    with tempfile.TemporaryDirectory(prefix="tft_tflite_") as tmp:
        archive = keras.export.ExportArchive()
        archive.track(model)
        archive.add_endpoint("serve", lambda x: model(x, training=False), input_signature=[signature])
        archive.write_out(tmp, verbose=False)
        converter = tf.lite.TFLiteConverter.from_saved_model(tmp, signature_keys=["serve"])
        converter.optimizations = optimizations
        return converter.convert()


def export_tflite(model, path, sparse=True, quantize=False):
    """Converts `model` to TFLite (see `convert_to_tflite`) and writes it to `path`.

    Args:
      model: a built single-input Keras model (masked or dense) or an `EnsembleModel`.
      path: output file; its folder is created.
      sparse: sparse weight encoding (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`).
      quantize: also dynamic-range (int8 weight) quantization.

    Returns:
      int, the size of the written file in bytes.
    """
    content = convert_to_tflite(model, sparse=sparse, quantize=quantize)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    with open(path, "wb") as f:
        f.write(content)
    return os.path.getsize(path)


def make_interpreter(path_or_content, num_threads=None, default_delegates=True):
    """A TFLite interpreter: LiteRT's (`ai_edge_litert`) if installed, else `tf.lite.Interpreter`.

    Args:
      path_or_content: a .tflite path or its bytes.
      num_threads: interpreter threads (None: the runtime's default).
      default_delegates: keep the default XNNPACK delegate. False runs TFLite's builtin kernels only;
        needed for sparse + int8 (`quantize=True`) models, which TF 2.21's XNNPACK delegate rejects.
    """
    kwargs = {"num_threads": num_threads}
    if isinstance(path_or_content, (bytes, bytearray)):
        kwargs["model_content"] = bytes(path_or_content)
    else:
        kwargs["model_path"] = os.fspath(path_or_content)
    try:
        from ai_edge_litert import interpreter as litert
    except ImportError:
        if not default_delegates:
            kwargs["experimental_op_resolver_type"] = tf.lite.experimental.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
            return tf.lite.Interpreter(**kwargs)
    if not default_delegates:
        kwargs["experimental_op_resolver_type"] = litert.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    return litert.Interpreter(**kwargs)


def sparse_tensors(path_or_content):
    """The tensors of a TFLite model stored in the sparse format.

    Returns:
      list of dicts, one per sparse tensor: "name", "shape" (tuple), "format" (per-dimension
      formats from the flatbuffer's dim_metadata: 0 dense, 1 sparse CSR), "nonzeros" (stored
      values) and "segments" (length of the last sparse dimension's segment array). Empty when
      the converter stored every tensor dense.
    """
    interpreter = make_interpreter(path_or_content)
    found = []
    for detail in interpreter.get_tensor_details():
        params = detail.get("sparsity_parameters") or {}
        if not params:
            continue
        dims = params.get("dim_metadata", [])
        sparse_dims = [d for d in dims if int(d.get("format", 0)) == 1]
        found.append(
            {
                "name": detail["name"],
                "shape": tuple(int(s) for s in detail["shape"]),
                "format": tuple(int(d.get("format", 0)) for d in dims),
                "nonzeros": int(len(sparse_dims[-1]["array_indices"])) if sparse_dims else int(np.prod(detail["shape"])),
                "segments": int(len(sparse_dims[-1]["array_segments"])) if sparse_dims else 0,
            }
        )
    return found


def op_names(path_or_content):
    """Names of the ops of a TFLite model (DENSIFY appears in front of sparse weights)."""
    interpreter = make_interpreter(path_or_content)
    return sorted({op["op_name"] for op in interpreter._get_ops_details()})


def _prepare(interpreter, batch_shape):
    detail = interpreter.get_input_details()[0]
    if tuple(detail["shape"]) != tuple(batch_shape):
        interpreter.resize_tensor_input(detail["index"], list(batch_shape))
    interpreter.allocate_tensors()
    return detail["index"], interpreter.get_output_details()[0]["index"]


def tflite_function(path_or_content, batch_shape, num_threads=None, default_delegates=True):
    """A callable running the TFLite model on batches of `batch_shape`, with one interpreter allocated once.

    For serving loops and timing: `tflite_predict` builds an interpreter per call.

    Args:
      path_or_content: a .tflite path or its bytes.
      batch_shape: the input shape every call gets, e.g. (1, 28, 28, 1).
      num_threads, default_delegates: as for `make_interpreter`.

    Returns:
      f(x) -> numpy output of the batch x (numpy of shape `batch_shape`).
    """
    interpreter = make_interpreter(path_or_content, num_threads, default_delegates)
    input_index, output_index = _prepare(interpreter, tuple(batch_shape))
    dtype = interpreter.get_input_details()[0]["dtype"]

    def run(x):
        interpreter.set_tensor(input_index, np.asarray(x).astype(dtype, copy=False))
        interpreter.invoke()
        return np.array(interpreter.get_tensor(output_index))

    return run


def tflite_predict(path_or_content, x, num_threads=None, default_delegates=True):
    """Runs the TFLite model on the batch `x` (numpy, the model's input shape); returns the output.

    `num_threads`, `default_delegates`: as for `make_interpreter`.
    """
    x = np.asarray(x)
    return tflite_function(path_or_content, x.shape, num_threads, default_delegates)(x)


def tflite_latency(path, input, runs=50, warmup=5, num_threads=None, default_delegates=True):
    """Median wall-clock seconds of one `invoke()` of the TFLite model at `path` on CPU.

    Args:
      path: a .tflite file (or its bytes).
      input: numpy batch to feed (its shape sets the batch size; usually one example).
      runs: timed invocations (median taken).
      warmup: untimed invocations first (the first one densifies sparse weights).
      num_threads: interpreter threads (None: the runtime's default).
      default_delegates: keep the default XNNPACK delegate (see `make_interpreter`).

    Returns:
      float seconds.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs!r}.")
    x = np.asarray(input)
    interpreter = make_interpreter(path, num_threads, default_delegates)
    input_index, _ = _prepare(interpreter, x.shape)
    interpreter.set_tensor(input_index, x.astype(interpreter.get_input_details()[0]["dtype"]))
    for _ in range(warmup):
        interpreter.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        interpreter.invoke()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
