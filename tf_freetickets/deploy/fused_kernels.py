"""One Dense layer of M tickets stored over the union of their supports, and the compiled kernels that serve it.

`FusedLayer` stores a layer once for the M members, in two CSR parts over the output units:
- the shared part: the positions that two or more members use, each with its input index once
  (`cols`, int16 where the input width allows, else int32) and M values (`values` (M, nnz); 0 for a
  member that does not use it);
- the members' own parts: a position that only one member uses is stored once, with that member's
  value alone (`own_indptr` (M, rows + 1) into `own_cols`, `own_values`), not with M - 1 zeros.
With `split=False` every union position is in the shared part (M values each, zeros included).
A kernel walks a row's shared entries, then each member's own entries, with one accumulator per
member; an index shared by the members is read once and the M products follow it:

- the vector kernel (one example): the first layer reads `x[col]` once for all M members; later
  layers read the members' activations side by side, `h[col * M + m]`. The loops over a row's entries
  are vectorised by LLVM (a gather of x, contiguous loads of values, reductions);
- the block kernel (a batch): for one output unit and a block of `BLOCK` examples it holds M x BLOCK
  accumulators in registers and adds `x[col, block] * values[m, j]`; the row's entries are read from
  memory once and from cache for the next block.

Why the own parts: the kernels' time goes to the work per stored value, not to reading indices: a later
layer's shared entry gathers M activations and does M products even for a member whose value is 0.
On three tickets sharing half their support (a common core, EDST-like) two thirds of the union's
positions belong to one ticket; storing those alone took the 4096 x 4096 layer from 2.18 to 1.44 ms at
batch 1 (784 x 4096: 0.66 -> 0.63 ms) and halves the products of the block kernel.

The kernels are generated as Python source for a given M (the member accumulators must be named
scalars for LLVM to keep them in registers; an array of M accumulators is 2-4x slower, measured) and
compiled by numba with an explicit signature. The block kernel is compiled with numba's SLP vectoriser
(off by default in numba) switched on for its compilation only: it is what packs the BLOCK scalar
accumulators of a member into vector registers. The loop indices are unsigned so that numba emits no
negative-index wraparound in the inner loops (with signed ones the loads are not vectorised: 3-4x
slower, measured).

Measured and not kept (784-W-W-10 unions, M = 3, this repository's development machine): planar
member activations (M, in) for the later layers (the same time: the kernel is bound by one gathered
element per member and entry, not by the gather instructions); 4-lane SIMD over the members with M
padded to 4 and the row unrolled 4 or 8 times (0.8-1.1 ns per union entry against 0.75-0.85); 8- and
16-example blocks (about 35 % and 5 % slower at batch 32 than 32-example blocks); the vector kernel
example by example for a batch (`predict(path="vector")`: each example reads the unions again, 5-9x
the block kernel at batch 32; a prange over examples would spread that over threads, not remove it).

numba is an optional dependency: `pip install numba` (or `pip install 'tf_freetickets[serving]'`).
This module imports without it; `require_numba` says how to install it."""

import contextlib
import threading

import numpy as np

try:
    import numba
except ImportError:  # optional: FusedMLPEnsemble says how to install it when used
    numba = None

#: One line that says how to get the kernels' compiler.
INSTALL_HINT = "FusedMLPEnsemble needs numba: pip install numba (or pip install 'tf_freetickets[serving]')."
#: Examples per block of the batch kernel: M x 32 float32 accumulators in vector registers.
BLOCK = 32
#: Widest input an int16 column index can address (indices 0 .. 32767).
INT16_MAX_FEATURES = int(np.iinfo(np.int16).max) + 1

_KERNELS = {}
_LOCK = threading.Lock()


def require_numba():
    """Raises ImportError with the install line when numba is missing."""
    if numba is None:
        raise ImportError(INSTALL_HINT)


def index_dtype(num_inputs):
    """int16 when every column index of a layer with `num_inputs` inputs fits in it, else int32."""
    return np.dtype(np.int16) if num_inputs <= INT16_MAX_FEATURES else np.dtype(np.int32)


def column_indices(arrays, num_inputs):
    """The index arrays in int16 when the layer's width lets every index fit (checked after the cast), else int32.

    All arrays get one dtype (the kernels take one). An index that the cast would wrap cannot come from
    a layer of `num_inputs` inputs; if one does, every array falls back to int32.
    """
    dtype = index_dtype(num_inputs)
    narrow = [np.ascontiguousarray(a, dtype=dtype) for a in arrays]
    if any(not np.array_equal(n, a) for n, a in zip(narrow, arrays)):
        narrow = [np.ascontiguousarray(a, dtype=np.int32) for a in arrays]
    return narrow


def _row_pointers(rows, num_rows, offset=0):
    indptr = np.full(num_rows + 1, offset, np.int64)
    indptr[1:] += np.cumsum(np.bincount(rows, minlength=num_rows))
    return indptr


class FusedLayer:
    """One Dense layer of the M members over the union of their supports (CSR rows = output units).

    Attributes:
      indptr: int64 (outputs + 1,), the shared part's row pointers.
      cols: int16 or int32 (nnz,), the input index of each shared position.
      values: float32 (M, nnz), each member's weight at each shared position (0 where it has none).
      own_indptr: int64 (M, outputs + 1), row pointers of each member's own part into own_cols / own_values.
      own_cols, own_values: the positions only one member uses (its index dtype is cols'), and its weights.
      bias: float32 (M, outputs). relu: whether ReLU follows.
      num_inputs, num_outputs: the layer's widths.
    """

    def __init__(self, shared, own, bias, relu, num_inputs):
        self.indptr, self.cols, self.values = shared
        self.own_indptr, self.own_cols, self.own_values = own
        self.bias = bias
        self.relu = bool(relu)
        self.num_inputs = int(num_inputs)
        self.num_outputs = int(bias.shape[1])

    @classmethod
    def from_kernels(cls, kernels, biases, relu, split=True):
        """The layer of M kernels (in, out) and biases (out,) (None: zero).

        Args:
          split: store the positions only one member uses in that member's own part (default); False
            puts every union position in the shared part with M values.
        """
        stacked = np.stack([np.asarray(k, np.float32).T for k in kernels])  # (M, out, in)
        num_members, num_outputs, num_inputs = stacked.shape
        used = stacked != 0
        count = used.sum(axis=0, dtype=np.int32)
        shared = count >= (min(2, num_members) if split else 1)
        rows, cols = np.nonzero(shared)  # row-major: CSR order
        values = np.ascontiguousarray(stacked[:, rows, cols], dtype=np.float32)
        own_indptr, own_cols, own_values, offset = [], [], [], 0
        for member in range(num_members):
            member_rows, member_cols = np.nonzero(used[member] & ~shared)
            own_indptr.append(_row_pointers(member_rows, num_outputs, offset))
            own_cols.append(member_cols)
            own_values.append(stacked[member, member_rows, member_cols])
            offset += member_cols.size
        cols, own = column_indices([cols, np.concatenate(own_cols)], num_inputs)
        bias = np.stack([np.zeros(num_outputs, np.float32) if b is None else np.asarray(b, np.float32) for b in biases])
        shared_part = (_row_pointers(rows, num_outputs), cols, values)
        own_part = (np.stack(own_indptr), own, np.ascontiguousarray(np.concatenate(own_values), dtype=np.float32))
        return cls(shared_part, own_part, np.ascontiguousarray(bias), relu, num_inputs)

    @property
    def nonzeros(self):
        """Stored positions: the size of the union of the members' supports (shared and own parts)."""
        return int(self.cols.shape[0] + self.own_cols.shape[0])

    def row_nonzeros(self):
        """Union positions per output unit, (outputs,)."""
        return np.diff(self.indptr) + np.diff(self.own_indptr, axis=1).sum(axis=0)

    def arrays(self):
        """The kernels' first arguments: the two parts, bias and relu."""
        return (self.indptr, self.cols, self.values, self.own_indptr, self.own_cols, self.own_values, self.bias,
                self.relu)  # fmt: skip


def _own_loop(member, indent, index):
    """The loop over member m's own entries of row r, `index` the activation read for column c."""
    return [f"{indent}for j in range(u(p{member}[r]), u(p{member}[r + 1])):",
            f"{indent}    c = u(own_cols[j])", f"{indent}    w = own_values[j]", f"{indent}    {index}"]  # fmt: skip


def _vector_source(num_members, first):
    """Source of the one-example kernel: per row the shared entries, then each member's own ones."""
    M = num_members
    lines = ["def kernel(indptr, cols, values, own_indptr, own_cols, own_values, bias, relu, x, out):",
             "    floor = np.float32(0.0) if relu else np.float32(-np.inf)"]  # fmt: skip
    lines += [f"    v{m} = values[{m}]\n    b{m} = bias[{m}]\n    p{m} = own_indptr[{m}]" for m in range(M)]
    lines += ["    for r in range(indptr.shape[0] - 1):"]
    lines += [f"        a{m} = np.float32(0.0)" for m in range(M)]
    lines += ["        for j in range(u(indptr[r]), u(indptr[r + 1])):"]
    if first:
        lines += ["            xj = x[u(cols[j])]"] + [f"            a{m} += xj * v{m}[j]" for m in range(M)]
    else:
        lines += [f"            c = u(cols[j]) * u({M})"] + [f"            a{m} += x[c + u({m})] * v{m}[j]" for m in range(M)]
    for m in range(M):
        lines += _own_loop(m, "        ", f"a{m} += x[c] * w" if first else f"a{m} += x[c * u({M}) + u({m})] * w")
    lines += [f"        out[r * {M} + {m}] = max(a{m} + b{m}[r], floor)" for m in range(M)]
    return "\n".join(lines)


def _block_source(num_members, first, block=None):
    """Source of the batch kernel: M x block register accumulators per (output unit, block of examples)."""
    M, K = num_members, block or BLOCK
    lines = ["def kernel(indptr, cols, values, own_indptr, own_cols, own_values, bias, relu, x, out, nblk):",
             "    floor = np.float32(0.0) if relu else np.float32(-np.inf)",
             "    un = u(nblk)"]  # fmt: skip
    lines += [f"    v{m} = values[{m}]\n    b{m} = bias[{m}]\n    p{m} = own_indptr[{m}]" for m in range(M)]
    lines += ["    for r in range(indptr.shape[0] - 1):",
              "        start = u(indptr[r])\n        stop = u(indptr[r + 1])\n        ur = u(r)",
              "        for blk in range(un):"]  # fmt: skip
    lines += [f"            a{m}_{k} = np.float32(0.0)" for m in range(M) for k in range(K)]
    lines += ["            for j in range(start, stop):", "                c = u(cols[j])"]
    for m in range(M):
        lines += [f"                w = v{m}[j]", f"                base = {_block_base(M, K, m, first)}"]
        lines += [f"                a{m}_{k} += x[base + u({k})] * w" for k in range(K)]
    for m in range(M):
        lines += _own_loop(m, "            ", f"base = {_block_base(M, K, m, first)}")
        lines += [f"                a{m}_{k} += x[base + u({k})] * w" for k in range(K)]
    for m in range(M):
        lines += [f"            o = ((ur * un + blk) * u({M}) + u({m})) * u({K})", f"            bm = b{m}[r]"]
        lines += [f"            out[o + u({k})] = max(a{m}_{k} + bm, floor)" for k in range(K)]
    return "\n".join(lines)


def _block_base(num_members, block, member, first):
    """Offset of column c's block of examples in x: (in, nblk, BLOCK) first, (in, nblk, M, BLOCK) later."""
    if first:
        return f"(c * un + blk) * u({block})"
    return f"((c * un + blk) * u({num_members}) + u({member})) * u({block})"


@contextlib.contextmanager
def _slp_vectorizer():
    """numba's SLP vectoriser on for the compilations inside (numba reads the flag per compilation)."""
    previous = numba.config.SLP_VECTORIZE
    numba.config.SLP_VECTORIZE = 1
    try:
        yield
    finally:
        numba.config.SLP_VECTORIZE = previous


def _signature(kind, cols_dtype):
    t = numba.types
    vector, matrix = t.Array(t.float32, 1, "C"), t.Array(t.float32, 2, "C")
    index = t.Array(numba.from_dtype(np.dtype(cols_dtype)), 1, "C")
    args = [t.Array(t.int64, 1, "C"), index, matrix, t.Array(t.int64, 2, "C"), index, vector, matrix, t.boolean,
            vector, vector]  # fmt: skip
    return t.void(*(args + ([t.int64] if kind == "block" else [])))


def kernel(kind, num_members, first, cols_dtype):
    """The compiled kernel for one layer (cached per process).

    Args:
      kind: "vector" (one example) or "block" (a batch in blocks of BLOCK examples).
      num_members: M.
      first: the layer reads the shared input (x[col]); else the members' activations (h[col * M + m]).
      cols_dtype: int16 or int32, the dtype of the layer's column indices.

    Returns:
      vector: f(*layer.arrays(), x, out) for a `FusedLayer`, x of `in` (first) or `in * M` floats
      (column-major in the members), out of `rows * M`. block: f(*layer.arrays(), x, out, nblk), x laid
      out (in, nblk, BLOCK) (first) or (in, nblk, M, BLOCK), out (rows, nblk, M, BLOCK).
    """
    require_numba()
    key = (kind, int(num_members), bool(first), np.dtype(cols_dtype).name)
    with _LOCK:
        if key not in _KERNELS:
            _KERNELS[key] = _compile(*key)
        return _KERNELS[key]


def _softmax_mean(logits, members, mean):
    """members[m, n] = softmax(logits[m, n]) and mean[n] = their mean over m (float32, max subtracted)."""
    num_members, batch, classes = logits.shape
    share = np.float32(1.0) / np.float32(num_members)
    for n in range(batch):
        for c in range(classes):
            mean[n, c] = 0.0
        for m in range(num_members):
            top = logits[m, n, 0]
            for c in range(1, classes):
                top = max(top, logits[m, n, c])
            total = np.float32(0.0)
            for c in range(classes):
                members[m, n, c] = np.exp(logits[m, n, c] - top)
                total += members[m, n, c]
            for c in range(classes):
                members[m, n, c] /= total
                mean[n, c] += members[m, n, c] * share


def probabilities():
    """The compiled f(logits (M, N, C), members out (M, N, C), mean out (N, C)), float32: softmax and mean."""
    require_numba()
    with _LOCK:
        if "softmax_mean" not in _KERNELS:
            t = numba.types
            signature = t.void(t.Array(t.float32, 3, "A"), t.Array(t.float32, 3, "C"), t.Array(t.float32, 2, "C"))
            _KERNELS["softmax_mean"] = numba.njit(signature, boundscheck=False, nogil=True)(_softmax_mean)
        return _KERNELS["softmax_mean"]


def _compile(kind, num_members, first, cols_dtype):
    source = _vector_source(num_members, first) if kind == "vector" else _block_source(num_members, first)
    namespace = {"np": np, "u": np.uint64}
    exec(compile(source, f"<fused {kind} kernel M={num_members} first={first}>", "exec"), namespace)
    signature = _signature(kind, cols_dtype)
    if kind == "vector":  # the row's reductions are vectorised only when they may be reassociated
        fastmath = {"reassoc", "contract", "nsz"}
        return numba.njit(signature, boundscheck=False, nogil=True, fastmath=fastmath)(namespace["kernel"])
    with _slp_vectorizer():  # no reassociation: LLVM would vectorise the row with gathers instead of the block
        return numba.njit(signature, boundscheck=False, nogil=True, fastmath={"contract"})(namespace["kernel"])
