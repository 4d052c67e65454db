"""Fused serving of an ensemble of M MLP tickets: one pass over the union of their supports per layer.

`CSRPredictor` (deploy/csr.py) serves M tickets as stacked scipy CSR products: each ticket's indices
are stored and read on their own, although the tickets of one EDST run share about half their weights,
and scipy's CSR kernel is one scalar loop. `FusedMLPEnsemble` stores each Dense layer once for the M
members, over the union of the M supports: a position two or more members use is stored once with M
values (0 for a member that does not use it), a position only one member uses is stored once with
that member's value (its own part; `split=False` puts it with the others, M values); int16 column
indices where the layer's input width allows (else int32). A compiled numba kernel
(deploy/fused_kernels.py) walks the union once per layer and updates the M members' accumulators from
each index: the first layer reads the shared input `x[col]` once for all members; the later layers
read the members' own activations side by side, still over the one union.

Per layer: the M members' products, their biases and ReLU; at the end the softmax of each member's
outputs, and the mean of the M members' probabilities (what `EnsembleModel` outputs). `predict` takes
up to 5 examples one by one through the vector kernel, larger batches through the block kernel (32
examples per block in registers; the union is read from memory once per layer for the whole batch).

Scope: Functional or Sequential chains of Dense layers (masked tickets or `tft.strip`ped ones) with
ReLU or no activation inside and a linear or softmax output, after optional Flatten and Rescaling
input layers; Dropout is the identity at inference, a ReLU/Activation/Softmax layer is folded into the
Dense before it. Anything else is refused in one line naming the layer. Needs numba
(`pip install numba`); this module imports without it.
"""

import keras
import numpy as np

from tf_freetickets.deploy import fused_kernels
from tf_freetickets.deploy.chain import chain_layers
from tf_freetickets.deploy.fused_kernels import FusedLayer

#: The layers a member may hold (Dropout: identity at inference).
SUPPORTED_LAYERS = ("InputLayer", "Flatten", "Rescaling", "Dense", "ReLU", "Activation", "Softmax", "Dropout")
#: predict paths: "vector" (one example at a time), "block" (the batch kernel), "auto" (vector below
#: VECTOR_MAX_BATCH examples, block from there).
PATHS = ("auto", "vector", "block")
VECTOR_MAX_BATCH = 6  # measured (W = 1024, 2048): one 32-example block costs 4.7-5.5 one-example calls
_SCOPE = "FusedMLPEnsemble serves Dense layers with ReLU/softmax after optional Flatten/Rescaling input layers"


def _refuse(model, layer, problem):
    raise ValueError(f"Layer {layer.name!r} ({type(layer).__name__}) of {model.name!r}: {problem}; {_SCOPE}.")


def _activation(model, layer, function):
    name = getattr(function, "__name__", str(function))
    if name not in ("linear", "relu", "softmax"):
        _refuse(model, layer, f"activation {name!r}")
    return name


def _chain_layers(model):
    """The model's layers after its InputLayer, checked to form one chain (one input, one output)."""
    problems = {"nested": "a nested model", "branch": "it does not take the previous layer's output (a branch or skip)"}
    return chain_layers(model, "FusedMLPEnsemble", lambda layer, problem: _refuse(model, layer, problems[problem]))


def _input_step(model, layer, dense):
    """("flatten",) or ("rescale", scale, offset) for a layer before the first Dense, or None (Dropout)."""
    if isinstance(layer, keras.layers.Dropout):
        return None
    if isinstance(layer, keras.layers.Flatten):
        return ("flatten",)
    if isinstance(layer, keras.layers.Rescaling) and not dense:
        return ("rescale", np.asarray(layer.scale, np.float32), np.asarray(layer.offset, np.float32))
    _refuse(model, layer, "Rescaling is served only before the first Dense layer" if dense else "not supported")


def _dense_step(model, layer):
    if len(layer.input.shape) != 2:
        _refuse(model, layer, f"a rank-{len(layer.input.shape)} input (add a Flatten before it)")
    step = {"layer": layer, "name": layer.name, "shape": tuple(layer.kernel.shape), "relu": False, "softmax": False}
    _fold(model, layer, step, _activation(model, layer, layer.activation))
    return step


def _folded_activation(model, layer):
    """The activation name of a ReLU / Activation / Softmax layer, or None for any other layer."""
    if isinstance(layer, keras.layers.ReLU):
        if layer.negative_slope or layer.threshold != 0 or layer.max_value is not None:
            _refuse(model, layer, "a ReLU with a slope, threshold or cap")
        return "relu"
    if isinstance(layer, keras.layers.Softmax):
        if layer.axis not in (-1, 1):
            _refuse(model, layer, f"softmax over axis {layer.axis}")
        return "softmax"
    if isinstance(layer, keras.layers.Activation):
        return _activation(model, layer, layer.activation)
    return None


def _fold(model, layer, step, name):
    """Applies activation `name` after the Dense `step`: ReLU (idempotent) then at most one softmax."""
    if name == "linear":
        return
    if step["softmax"]:
        _refuse(model, layer, f"{name} after a softmax")
    step[name] = True


def member_chain(model):
    """One member as (input steps, dense steps), each dense a dict layer, name, shape (in, out), relu, softmax.

    A ReLU / Activation / Softmax layer is folded into the Dense before it. Softmax is served only at the
    output. Raises ValueError naming the first layer outside SUPPORTED_LAYERS or a graph not a chain.
    """
    steps, denses = [], []
    for layer in _chain_layers(model):
        if isinstance(layer, keras.layers.Dense):
            denses.append(_dense_step(model, layer))
            continue
        name = _folded_activation(model, layer)
        if name is None:
            step = _input_step(model, layer, bool(denses))
            if step is not None and not denses:
                steps.append(step)
        elif not denses:
            _refuse(model, layer, "an activation before the first Dense layer")
        else:
            _fold(model, layer, denses[-1], name)
    if not denses:
        raise ValueError(f"{model.name!r} has no Dense layer; nothing to serve.")
    for dense in denses[:-1]:
        if dense["softmax"]:
            raise ValueError(f"Layer {dense['name']!r} of {model.name!r}: a softmax inside the chain; {_SCOPE} "
                             "(softmax only at the output).")  # fmt: skip
    return steps, denses


def _signature(model, steps, denses):
    """What members must share to be fused: input shape, input steps, layer shapes and ReLUs."""
    shape = tuple(model.inputs[0].shape[1:])
    if any(d is None for d in shape):
        raise ValueError(f"{model.name!r} takes inputs of unknown shape {shape}; FusedMLPEnsemble needs a fixed one.")
    inputs = tuple((s[0],) + tuple(tuple(np.ravel(a).tolist()) for a in s[1:]) for s in steps)
    return shape, inputs, tuple((d["shape"], d["relu"]) for d in denses)


def _weights(layer):
    """A Dense layer's kernel (in, out) and bias (None without one) as float32; masked: kernel * mask."""
    kernel = keras.ops.convert_to_numpy(layer.kernel).astype(np.float32)
    return kernel, (keras.ops.convert_to_numpy(layer.bias).astype(np.float32) if layer.use_bias else None)


def _softmax(z):
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


class FusedMLPEnsemble:
    """M MLP tickets served as one computation over the union of their supports (numba kernels).

    Build it with `from_models(models)`; `predict(x)` gives the ensemble's mean probabilities and each
    member's probabilities, equal to the members' Keras softmax outputs up to float32 rounding.
    Weights are read once at construction.

    Attributes:
      num_members: M. num_classes: C. input_shape: one example's shape.
      layers: the `FusedLayer`s, first to last.
      nonzeros: stored positions over all layers (the unions' sizes; shared ones hold M values, own ones one).
      member_nonzeros: the members' nonzero weights, summed (what M separate CSR tickets store).
      dense_size: the weights of one dense member.
    """

    def __init__(self, input_steps, layers, input_shape, member_nonzeros):
        self.input_steps = list(input_steps)
        self.layers = list(layers)
        self.input_shape = tuple(input_shape)
        self.num_members = int(layers[0].values.shape[0])
        self.num_classes = layers[-1].num_outputs
        self.num_features = int(np.prod(self.input_shape))
        self.member_nonzeros = int(member_nonzeros)
        self.nonzeros = sum(layer.nonzeros for layer in self.layers)
        self.dense_size = sum(layer.num_inputs * layer.num_outputs for layer in self.layers)
        self._compiled = {}  # kind -> the kernel of each layer (compiled on first use)

    @classmethod
    def from_models(cls, models, check=True, split=True):
        """The fused ensemble of M Keras MLP tickets of one architecture (masked or stripped).

        Args:
          models: a list of built models (or an object with `.members`, such as `EnsembleModel`), each
            a chain of SUPPORTED_LAYERS ending in logits or a softmax.
          check: compare with the Keras members on a random probe and raise RuntimeError if they differ.
          split: store a position only one member uses with that member's value alone (default), not
            with M - 1 zeros in the shared part (`FusedLayer`); False: every union position has M values.

        The kernels are compiled for M on first use in the process (a few seconds; `check` uses both the
        one-example and the batch kernel, so it compiles them here).

        Raises:
          ImportError: numba is missing (the message says how to install it).
          ValueError: no models, a layer outside the scope (named), members of different architectures.
        """
        fused_kernels.require_numba()
        members = list(getattr(models, "members", models))
        if not members:
            raise ValueError("FusedMLPEnsemble.from_models needs at least one model.")
        chains = [member_chain(m) for m in members]
        signatures = [_signature(m, *chain) for m, chain in zip(members, chains)]
        for index, signature in enumerate(signatures[1:], start=1):
            if signature != signatures[0]:
                raise ValueError(f"Member {index} ({members[index].name!r}) differs from member 0 in input shape, "
                                 "input layers, Dense shapes or ReLUs; FusedMLPEnsemble fuses one architecture.")  # fmt: skip
        layers, nonzeros = [], 0
        for position, first in enumerate(chains[0][1]):
            kernels, biases = zip(*(_weights(chain[1][position]["layer"]) for chain in chains))
            nonzeros += sum(int(np.count_nonzero(k)) for k in kernels)
            layers.append(FusedLayer.from_kernels(kernels, biases, first["relu"], split=split))
        fused = cls(chains[0][0], layers, signatures[0][0], nonzeros)
        if check:
            fused.check_against(members)
        return fused

    @property
    def index_dtypes(self):
        """The column index dtype of each layer (int16 where the layer's input width allows)."""
        return [layer.cols.dtype for layer in self.layers]

    def _inputs(self, x):
        """x as float32 (N, features) after the input steps; ValueError for a wrong shape or non-finite values."""
        x = np.asarray(x)
        if x.dtype != np.float32:
            if x.dtype.kind not in "biuf":
                raise ValueError(f"FusedMLPEnsemble takes numeric inputs; got dtype {x.dtype}.")
            x = x.astype(np.float32)
        if x.ndim >= 2 and x.shape[1:] == (self.num_features,) and self.input_shape != (self.num_features,):
            x = x.reshape((x.shape[0], *self.input_shape))
        if x.ndim < 2 or x.shape[1:] != self.input_shape:
            raise ValueError(f"FusedMLPEnsemble expects inputs (N, {', '.join(map(str, self.input_shape))}) or "
                             f"(N, {self.num_features}); got {x.shape}.")  # fmt: skip
        if not np.isfinite(x).all():
            raise ValueError("FusedMLPEnsemble's inputs hold NaN or Inf values; the ensemble's outputs would be undefined.")
        for step in self.input_steps:  # Flatten, or Rescaling broadcast as Keras does
            x = x.reshape(x.shape[0], int(np.prod(x.shape[1:]))) if step[0] == "flatten" else x * step[1] + step[2]
        return np.ascontiguousarray(x.reshape(x.shape[0], self.num_features), dtype=np.float32)

    def predict(self, x, path="auto"):
        """The ensemble's and the members' probabilities for a batch.

        Args:
          x: array (N, *input_shape) or (N, features), any real dtype (computed in float32); N may be 0.
          path: "auto", "vector" (one example at a time through the vector kernel) or "block" (the batch
            kernel, 32 examples per register block); all give the same outputs up to float32 rounding.

        Returns:
          (mean, members): float32 arrays (N, C), the mean of the members' softmax probabilities (the
          ensemble's output), and (M, N, C), each member's probabilities.

        Raises:
          ValueError: a wrong input shape or feature count, NaN or Inf inputs, an unknown path.
        """
        if path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}; got {path!r}.")
        x = self._inputs(x)
        if x.shape[0] == 0:
            empty = np.zeros((self.num_members, 0, self.num_classes), np.float32)
            return empty[0], empty
        if path == "vector" or (path == "auto" and x.shape[0] < VECTOR_MAX_BATCH):
            kernels = self._kernels("vector")
            logits = np.stack([self._vector_logits(example, kernels) for example in x], axis=1)
        else:
            logits = self._block_logits(x)
        members = np.empty(logits.shape, np.float32)
        mean = np.empty(logits.shape[1:], np.float32)
        fused_kernels.probabilities()(logits, members, mean)
        return mean, members

    def _kernels(self, kind):
        """The compiled kernel of each layer for `kind` ("vector" or "block")."""
        if kind not in self._compiled:
            self._compiled[kind] = [fused_kernels.kernel(kind, self.num_members, index == 0, layer.cols.dtype)
                                    for index, layer in enumerate(self.layers)]  # fmt: skip
        return self._compiled[kind]

    def _vector_logits(self, x, kernels):
        """(M, C) logits of one example (features,): the vector kernel layer by layer."""
        M = self.num_members
        for kernel, layer in zip(kernels, self.layers):
            out = np.empty(layer.num_outputs * M, np.float32)
            kernel(*layer.arrays(), x, out)
            x = out
        return x.reshape(self.num_classes, M).T

    def _block_logits(self, x):
        """(M, N, C) logits of a batch (N, features): the block kernel, the batch padded to whole blocks."""
        M, n, block = self.num_members, x.shape[0], fused_kernels.BLOCK
        nblk = -(-n // block)
        state = np.zeros((x.shape[1], nblk * block), np.float32)
        state[:, :n] = x.T  # (in, nblk, block)
        state = state.reshape(-1)
        for kernel, layer in zip(self._kernels("block"), self.layers):
            out = np.empty(layer.num_outputs * nblk * M * block, np.float32)  # (out, nblk, M, block)
            kernel(*layer.arrays(), state, out, nblk)
            state = out
        logits = state.reshape(self.num_classes, nblk, M, block).transpose(2, 1, 3, 0)
        return logits.reshape(M, nblk * block, self.num_classes)[:, :n]

    def check_against(self, models, atol=1e-5, seed=0):
        """Raises RuntimeError if `predict` differs from the members' Keras probabilities by more than atol.

        Args:
          models: the member models (or an object with `.members`), compared on a random probe of 3
            examples through both paths. Returns the largest difference.
        """
        members = list(getattr(models, "members", models))
        probe = np.random.default_rng(seed).standard_normal((3, *self.input_shape)).astype(np.float32)
        expected = []
        for model in members:
            outputs = keras.ops.convert_to_numpy(model(probe, training=False))
            expected.append(outputs if member_chain(model)[1][-1]["softmax"] else _softmax(outputs))
        expected = np.stack(expected)
        difference = 0.0
        for path in ("vector", "block"):
            mean, probabilities = self.predict(probe, path=path)
            difference = max(difference, float(np.max(np.abs(probabilities - expected))),
                             float(np.max(np.abs(mean - expected.mean(axis=0)))))  # fmt: skip
        if not difference <= atol:
            raise RuntimeError(f"FusedMLPEnsemble's probabilities differ from the Keras members' by {difference:.3g} "
                               f"(allowed {atol:g}); the chain was not read as Keras computes it.")  # fmt: skip
        return difference

    def __repr__(self):
        return (
            f"FusedMLPEnsemble(members={self.num_members}, layers={len(self.layers)}, union_nonzeros={self.nonzeros}, "
            f"member_nonzeros={self.member_nonzeros}, index_dtypes={[d.name for d in self.index_dtypes]})"
        )
