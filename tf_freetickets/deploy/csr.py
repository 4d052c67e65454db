"""Batch-1 serving of sparse Dense-layer tickets and ensembles through CSR products, outside TensorFlow.

At 90% sparsity TensorFlow's sparse kernels do not beat its dense matmul on a CPU, and the TFLite
interpreter densifies sparse weights (BENCHMARKS.md sections 4, 6, 6b). A Dense layer at batch 1 is a
matrix-vector product, limited by reading the weights, and there a compressed-sparse-row (CSR) product
that reads only the nonzeros does pay. `CSRPredictor` runs a ticket, or an ensemble of tickets, as a
chain of `scipy.sparse` CSR products in numpy: no TensorFlow call per request.

Scope: a chain of InputLayer, Flatten, Dense (masked or plain), Activation, ReLU, Softmax and
Dropout layers, that is a multi-layer perceptron; any other layer is refused by name (convolutions
have no CSR form here). An ensemble of M members with the same chain serves as one chain: the first
Dense layer's M kernels are stacked (one product gives every member's output), each later one is
block-diagonal, so a request costs one sparse product per layer over the M tickets' nonzeros and the
members' logits come out side by side.

`matrix_format="dense"` runs the same chain with dense numpy matrices (BLAS): the control that shows
what the sparse format alone gains in the same runtime. `save`/`load` keep a predictor in one `.npz`
file of its arrays (about 2x the nonzeros' bytes for a CSR chain), loaded without the Keras model.
"""

import json
import os

import keras
import numpy as np
import scipy.sparse

from tf_freetickets.deploy.chain import chain_layers

#: Layers the chain can hold; Dropout is the identity at inference.
SUPPORTED_LAYERS = ("InputLayer", "Flatten", "Dense", "Activation", "ReLU", "Softmax", "Dropout")
MATRIX_FORMATS = ("csr", "dense")
_ACTIVATIONS = ("linear", "relu", "tanh", "sigmoid", "softmax")


def _activation_name(layer, function):
    name = getattr(function, "__name__", str(function))
    if name not in _ACTIVATIONS:
        raise ValueError(f"Layer {layer.name!r} uses activation {name!r}; CSRPredictor applies {_ACTIVATIONS}.")
    return name


def _relu_is_plain(layer):
    return not layer.negative_slope and layer.threshold == 0 and layer.max_value is None


def _layer_steps(layer):
    """The steps of one layer: ("flatten",), ("dense", kernel (in, out), bias (out,)), ("activation", name)."""
    kind = type(layer).__name__
    if isinstance(layer, (keras.layers.InputLayer, keras.layers.Dropout)):
        return []
    if isinstance(layer, keras.layers.Flatten):
        return [("flatten",)]
    if isinstance(layer, keras.layers.Dense):
        if len(layer.input.shape) != 2:
            raise ValueError(f"Dense layer {layer.name!r} takes a rank-{len(layer.input.shape)} input; CSRPredictor "
                             "serves Dense layers on flat (batch, features) inputs (add a Flatten before it).")  # fmt: skip
        kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float32)  # masked layers: kernel * mask
        bias = keras.ops.convert_to_numpy(layer.bias).astype(np.float32) if layer.use_bias else None
        activation = _activation_name(layer, layer.activation)
        return [("dense", kernel, bias)] + ([] if activation == "linear" else [("activation", activation)])
    if isinstance(layer, keras.layers.Activation):
        activation = _activation_name(layer, layer.activation)
        return [] if activation == "linear" else [("activation", activation)]
    if isinstance(layer, keras.layers.ReLU) and _relu_is_plain(layer):
        return [("activation", "relu")]
    if isinstance(layer, keras.layers.Softmax) and layer.axis in (-1, 1):
        return [("activation", "softmax")]
    raise ValueError(
        f"CSRPredictor cannot serve layer {layer.name!r} ({kind}); it serves chains of {SUPPORTED_LAYERS} "
        "(ReLU without slope, threshold or cap; Softmax over the last axis)."
    )


def _refuse_link(model, layer, problem):
    if problem == "nested":
        raise ValueError(f"Layer {layer.name!r} of {model.name!r} is a nested model; CSRPredictor serves flat chains.")
    raise ValueError(f"Layer {layer.name!r} of {model.name!r} does not take the previous layer's output; "
                     "CSRPredictor serves chains (no branches or skips).")  # fmt: skip


def model_steps(model):
    """`model` as a list of steps (see `_layer_steps`), checking that its layers form one chain.

    Args:
      model: a built Functional or Sequential Keras model with one input and one output.

    Raises:
      ValueError: a layer outside SUPPORTED_LAYERS, a nested model, or a graph that is not a chain.
    """
    steps = []
    for layer in chain_layers(model, "CSRPredictor", lambda layer, problem: _refuse_link(model, layer, problem)):
        steps += _layer_steps(layer)
    if not any(step[0] == "dense" for step in steps):
        raise ValueError(f"{model.name!r} has no Dense layer; nothing to serve sparse.")
    return steps


def _stack(member_steps, matrix_format):
    """One chain for M members: stacked first kernel, block-diagonal later kernels, concatenated biases."""
    signature = [tuple(s[0] if s[0] != "dense" else ("dense", s[1].shape, s[2] is None) for s in steps)
                 for steps in member_steps]  # fmt: skip
    for index, other in enumerate(signature[1:], start=1):
        if other != signature[0]:
            raise ValueError(f"Ensemble member {index} has a different chain of layers from member 0 "
                             f"({other} vs {signature[0]}); CSRPredictor stacks members of one architecture.")  # fmt: skip
    chain, first_dense = [], True
    for position, step in enumerate(member_steps[0]):
        if step[0] != "dense":
            chain.append(step)
            continue
        kernels = [steps[position][1].T for steps in member_steps]  # (out, in) each
        if matrix_format == "dense":
            # Stacked rows for the first layer; (M, out, in) for later ones, one batched product (no zero blocks).
            matrix = np.ascontiguousarray(np.concatenate(kernels) if first_dense or len(kernels) == 1 else np.stack(kernels))
        else:
            parts = [scipy.sparse.csr_matrix(k) for k in kernels]
            matrix = scipy.sparse.vstack(parts) if first_dense else scipy.sparse.block_diag(parts)
            matrix = scipy.sparse.csr_matrix(matrix, dtype=np.float32)
            matrix.eliminate_zeros()
        biases = [steps[position][2] for steps in member_steps]
        bias = None if biases[0] is None else np.concatenate(biases).astype(np.float32)
        chain.append(("dense", matrix, bias))
        first_dense = False
    return chain


def _softmax(z, groups):
    grouped = z.reshape(z.shape[0], groups, -1)
    grouped = np.exp(grouped - grouped.max(axis=-1, keepdims=True))
    return (grouped / grouped.sum(axis=-1, keepdims=True)).reshape(z.shape)


def _activate(z, name, groups):
    if name == "relu":
        return np.maximum(z, 0.0)
    if name == "tanh":
        return np.tanh(z)
    if name == "sigmoid":
        return 1.0 / (1.0 + np.exp(-z))
    return _softmax(z, groups)


class CSRPredictor:
    """Serves a Dense-layer ticket (or an ensemble of tickets) as numpy/scipy CSR products.

    Build it with `from_model(model)` or `from_ensemble(ensemble)`; `predict(x)`
    then gives the Keras model's outputs (the mean of the members' softmax
    probabilities for an ensemble, as `EnsembleModel`) up to float32 rounding.
    Weights are read once at construction: retraining the model does not
    change a predictor built before.

    Attributes:
      num_members: M (1 for a single model).
      nonzeros: stored weights over every Dense layer (all members).
      dense_size: weights of the same layers stored dense.
    """

    def __init__(self, chain, num_members, from_logits, input_shape, matrix_format, dense_size):
        self._chain = chain
        self.num_members = num_members
        self.from_logits = from_logits
        self.input_shape = tuple(input_shape)
        self.matrix_format = matrix_format
        self.dense_size = int(dense_size)
        matrices = [step[1] for step in chain if step[0] == "dense"]
        self.nonzeros = int(sum(m.nnz if scipy.sparse.issparse(m) else np.count_nonzero(m) for m in matrices))

    @classmethod
    def from_model(cls, model, matrix_format="csr", check=True):
        """The predictor of one model (a masked ticket or a plain, stripped one); outputs as `model(x)`.

        Args:
          model: built Functional/Sequential chain of SUPPORTED_LAYERS.
          matrix_format: "csr" (sparse products) or "dense" (numpy BLAS, the control).
          check: compare with `model` on a random probe batch and raise if they differ.
        """
        return cls._build([model], num_members=1, from_logits=False, matrix_format=matrix_format, check=check,
                          reference=model)  # fmt: skip

    @classmethod
    def from_ensemble(cls, ensemble, matrix_format="csr", check=True):
        """The predictor of an `EnsembleModel` (or a list of member models, taken as logits).

        Outputs the mean of the members' probabilities, (N, C): softmax of each
        member's output when the ensemble has `from_logits=True`, else the
        outputs themselves, as `EnsembleModel.call`.
        """
        if isinstance(ensemble, (list, tuple)):
            members, from_logits, reference = list(ensemble), True, None
        else:
            members = getattr(ensemble, "members", None)
            if not members:
                raise ValueError(f"from_ensemble takes an EnsembleModel or a list of models; got {type(ensemble).__name__}.")
            from_logits, reference = ensemble.from_logits, ensemble
        return cls._build(members, len(members), from_logits, matrix_format, check, reference)

    @classmethod
    def _build(cls, members, num_members, from_logits, matrix_format, check, reference):
        if matrix_format not in MATRIX_FORMATS:
            raise ValueError(f"matrix_format must be one of {MATRIX_FORMATS}; got {matrix_format!r}.")
        member_steps = [model_steps(m) for m in members]
        chain = _stack(member_steps, matrix_format)
        shapes = {tuple(m.inputs[0].shape[1:]) for m in members}
        if len(shapes) != 1:
            raise ValueError(f"Ensemble members take different input shapes: {sorted(shapes)}.")
        dense_size = sum(step[1].size for steps in member_steps for step in steps if step[0] == "dense")
        predictor = cls(chain, num_members, from_logits, shapes.pop(), matrix_format, dense_size)
        if check:
            predictor.check_against(reference if reference is not None else members)
        return predictor

    def predict(self, x):
        """Outputs for a batch.

        Args:
          x: array (N, *input_shape), any float dtype (computed in float32).

        Returns:
          float32 array (N, C): the model's outputs, or for an ensemble the mean
          of the members' probabilities.
        """
        x = np.asarray(x, dtype=np.float32)
        if x.shape[1:] != self.input_shape:
            raise ValueError(f"CSRPredictor expects inputs (N, {', '.join(map(str, self.input_shape))}); got {x.shape}.")
        state, groups = x, 1
        for step in self._chain:
            if step[0] == "flatten":
                state = state.reshape(state.shape[0], -1)
            elif step[0] == "dense":
                state = _product(step[1], state)
                if step[2] is not None:
                    state += step[2]
                groups = self.num_members
            else:
                state = _activate(state, step[1], groups)
        if self.num_members == 1:
            return state
        members = state.reshape(state.shape[0], self.num_members, -1)
        if self.from_logits:
            members = _softmax(members.reshape(state.shape), self.num_members).reshape(members.shape)
        return members.mean(axis=1)

    def check_against(self, reference, atol=1e-4, seed=0):
        """Raises RuntimeError if `predict` differs from `reference` by more than atol on a random probe.

        Args:
          reference: the Keras model (or EnsembleModel) this predictor serves, or
            a list of member models (compared with the mean of their softmax).
        """
        probe = np.random.default_rng(seed).standard_normal((2, *self.input_shape)).astype(np.float32)
        if isinstance(reference, list):
            logits = [keras.ops.convert_to_numpy(m(probe, training=False)) for m in reference]
            expected = np.mean([_softmax(z, 1) for z in logits], axis=0)
        else:
            expected = keras.ops.convert_to_numpy(reference(probe, training=False))
        difference = float(np.max(np.abs(self.predict(probe) - expected)))
        if not difference <= atol * max(1.0, float(np.max(np.abs(expected)))):
            raise RuntimeError(f"CSRPredictor's outputs differ from the Keras model's by {difference:.3g} (allowed "
                               f"{atol:g}); the chain was not read as Keras computes it.")  # fmt: skip
        return difference

    def save(self, path):
        """Writes the predictor to one `.npz` file (numpy arrays only; no Keras model needed to load it).

        Each Dense step is stored as its CSR arrays (data, indices, indptr,
        shape) or its dense matrix, and its bias; `load` rebuilds the chain.
        Returns the path written (numpy appends `.npz` when missing).
        """
        arrays, steps = {}, []
        for index, step in enumerate(self._chain):
            if step[0] != "dense":
                steps.append(list(step))
                continue
            matrix, bias = step[1], step[2]
            if scipy.sparse.issparse(matrix):
                arrays.update({f"{index}_data": matrix.data, f"{index}_indices": matrix.indices,
                               f"{index}_indptr": matrix.indptr, f"{index}_shape": np.asarray(matrix.shape)})  # fmt: skip
            else:
                arrays[f"{index}_matrix"] = matrix
            if bias is not None:
                arrays[f"{index}_bias"] = bias
            steps.append(["dense"])
        header = {"format_version": 1, "steps": steps, "num_members": self.num_members, "from_logits": self.from_logits,
                  "input_shape": list(self.input_shape), "matrix_format": self.matrix_format,
                  "dense_size": self.dense_size}  # fmt: skip
        path = str(path) if str(path).endswith(".npz") else f"{path}.npz"
        np.savez(path, header=np.asarray(json.dumps(header)), **arrays)
        return path

    @classmethod
    def load(cls, path):
        """The predictor `save` wrote to `path` (a `.npz` file).

        Raises:
          FileNotFoundError: no such file. ValueError: not a file `save` wrote.
        """
        if not os.path.exists(path):
            raise FileNotFoundError(f"No CSRPredictor file at {path!r}.")
        with np.load(path, allow_pickle=False) as stored:
            if "header" not in stored:
                raise ValueError(f"{path!r} is not a CSRPredictor file (no header); write one with CSRPredictor.save.")
            header = json.loads(str(stored["header"]))
            if header.get("format_version") != 1:
                raise ValueError(f"{path!r} has CSRPredictor format {header.get('format_version')!r}; this version reads 1.")
            chain = []
            for index, step in enumerate(header["steps"]):
                if step[0] != "dense":
                    chain.append(tuple(step))
                    continue
                if f"{index}_matrix" in stored:
                    matrix = stored[f"{index}_matrix"]
                else:
                    parts = (stored[f"{index}_data"], stored[f"{index}_indices"], stored[f"{index}_indptr"])
                    matrix = scipy.sparse.csr_matrix(parts, shape=tuple(stored[f"{index}_shape"]))
                chain.append(("dense", matrix, stored[f"{index}_bias"] if f"{index}_bias" in stored else None))
        return cls(chain, header["num_members"], header["from_logits"], header["input_shape"], header["matrix_format"],
                   header["dense_size"])  # fmt: skip

    def __repr__(self):
        return (f"CSRPredictor(members={self.num_members}, format={self.matrix_format!r}, "
                f"nonzeros={self.nonzeros}, dense_size={self.dense_size})")  # fmt: skip


def _product(matrix, state):
    """state (N, in) -> (N, out) through matrix (out, in); one vector at batch 1 (scipy's matvec kernel).

    A dense (M, out, in) matrix holds one block per member: state (N, M * in) -> (N, M * out).
    """
    if matrix.ndim == 3:  # one BLAS product per member (numpy's stacked matmul is slower at batch 1)
        blocks = np.split(state, matrix.shape[0], axis=1)
        return np.concatenate([_product(block_matrix, block) for block_matrix, block in zip(matrix, blocks)], axis=1)
    if state.shape[0] == 1:
        return np.asarray(matrix @ state[0], dtype=np.float32)[None, :]
    return np.ascontiguousarray(np.asarray(matrix @ state.T, dtype=np.float32).T)
