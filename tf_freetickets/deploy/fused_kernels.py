"""The compiled kernels of `FusedMLPEnsemble`: one Dense layer of M tickets over the union of their supports.

A layer is stored once for the M members: the union of their supports in CSR form (`indptr` over the
output units, `cols` the input index of each stored position, int16 where the input width allows),
and `values` (M, nnz), the M members' weights at each stored position (0 where a member does not use
it). A kernel walks the union once and keeps one accumulator per member, so an index shared by the
members is read once and the per-member products follow it:

- the vector kernel (one example): the first layer reads `x[col]` once for all M members; later
  layers read the members' activations side by side, `h[col * M + m]`. The loop over the row's stored
  positions is vectorised by LLVM (a gather of x, M contiguous loads of values, M reductions);
- the block kernel (a batch): for one output unit and a block of `BLOCK` examples it holds M x BLOCK
  accumulators in registers and adds `x[col, block] * values[m, j]`; the row's union entries are read
  from memory once and from cache for the next block.

The kernels are generated as Python source for a given M (the member accumulators must be named
scalars for LLVM to keep them in registers; an array of M accumulators is 2-4x slower, measured) and
compiled by numba with an explicit signature. The block kernel is compiled with numba's SLP vectoriser
(off by default in numba) switched on for its compilation only: it is what packs the BLOCK scalar
accumulators of a member into one vector register. The loop indices are unsigned so that numba emits
no negative-index wraparound in the inner loops (with signed ones the loads are not vectorised: 3-4x
slower, measured).

Measured and not kept (784-W-W-10 unions, M = 3, this repository's development machine): planar
member activations (M, in) for the later layers (the same time: the kernel is bound by one gathered
element per member and entry, not by the gather instructions); 4-lane SIMD over the members with M
padded to 4 and the row unrolled 4 or 8 times (0.8-1.1 ns per union entry against 0.75-0.85); 8- and
16-example blocks (30 % and 5 % slower at batch 32 than 32-example blocks); the vector kernel example by
example for a batch (`predict(path="vector")`: each example reads the unions again, 5-9x the block
kernel at batch 32; a prange over examples would spread that over threads, not remove it).

numba is an optional dependency: `pip install numba` (or `pip install 'tf_freetickets[serving]'`).
This module imports without it; `require_numba` says how to install it.
"""

import contextlib
import threading

import numpy as np

try:
    import numba
except ImportError:  # optional: FusedMLPEnsemble says how to install it when used
    numba = None

#: One line that says how to get the kernels' compiler.
INSTALL_HINT = "FusedMLPEnsemble needs numba: pip install numba (or pip install 'tf_freetickets[serving]')."
#: Examples per block of the batch kernel: M x 32 float32 accumulators, 2M AVX-512 registers. Its time per
#: (union entry, block) hardly depends on the block's width (16, 32 and 64 measured), so wide blocks pay:
#: at batch 32 one 32-block takes half the time of two 16-blocks.
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


def _finish(num_members, indent, out_index):
    """Bias, ReLU (floor 0 or -inf) and the store of each member's accumulator `a{m}` of row r."""
    lines = []
    for m in range(num_members):
        lines.append(f"{indent}out[{out_index.format(m=m)}] = max(a{m} + b{m}[r], floor)")
    return lines


def _vector_source(num_members, first):
    """Source of the one-example kernel: union row by row, one gather of x per entry (first layer)."""
    M = num_members
    lines = ["def kernel(indptr, cols, values, bias, relu, x, out):",
             "    floor = np.float32(0.0) if relu else np.float32(-np.inf)"]  # fmt: skip
    lines += [f"    v{m} = values[{m}]\n    b{m} = bias[{m}]" for m in range(M)]
    lines += ["    for r in range(indptr.shape[0] - 1):"]
    lines += [f"        a{m} = np.float32(0.0)" for m in range(M)]
    lines += ["        for j in range(u(indptr[r]), u(indptr[r + 1])):"]
    if first:
        lines += ["            xj = x[u(cols[j])]"] + [f"            a{m} += xj * v{m}[j]" for m in range(M)]
    else:
        lines += [f"            c = u(cols[j]) * u({M})"] + [f"            a{m} += x[c + u({m})] * v{m}[j]" for m in range(M)]
    return "\n".join(lines + _finish(M, "        ", f"r * {M} + {{m}}"))


def _block_source(num_members, first, block=None):
    """Source of the batch kernel: M x block register accumulators per (output unit, block of examples)."""
    M, K = num_members, block or BLOCK
    lines = ["def kernel(indptr, cols, values, bias, relu, x, out, nblk):",
             "    floor = np.float32(0.0) if relu else np.float32(-np.inf)",
             "    un = u(nblk)"]  # fmt: skip
    lines += [f"    v{m} = values[{m}]\n    b{m} = bias[{m}]" for m in range(M)]
    lines += ["    for r in range(indptr.shape[0] - 1):",
              "        start = u(indptr[r])\n        stop = u(indptr[r + 1])\n        ur = u(r)",
              "        for blk in range(un):"]  # fmt: skip
    lines += [f"            a{m}_{k} = np.float32(0.0)" for m in range(M) for k in range(K)]
    lines += ["            for j in range(start, stop):", "                c = u(cols[j])"]
    for m in range(M):
        lines.append(f"                w = v{m}[j]")
        base = f"(c * un + blk) * u({K})" if first else f"((c * un + blk) * u({M}) + u({m})) * u({K})"
        lines.append(f"                base = {base}")
        lines += [f"                a{m}_{k} += x[base + u({k})] * w" for k in range(K)]
    for m in range(M):
        lines += [f"            o = ((ur * un + blk) * u({M}) + u({m})) * u({K})", f"            bm = b{m}[r]"]
        lines += [f"            out[o + u({k})] = max(a{m}_{k} + bm, floor)" for k in range(K)]
    return "\n".join(lines)


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
    args = [t.Array(t.int64, 1, "C"), t.Array(numba.from_dtype(np.dtype(cols_dtype)), 1, "C"), matrix, matrix, t.boolean,
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
      vector: f(indptr int64, cols, values (M, nnz) float32, bias (M, rows) float32, relu, x, out), x of
      `in` (first) or `in * M` floats (column-major in the members), out of `rows * M`. block: the same
      plus `nblk`, x laid out (in, nblk, BLOCK) (first) or (in, nblk, M, BLOCK), out (rows, nblk, M, BLOCK).
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
