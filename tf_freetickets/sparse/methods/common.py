"""What the built-in DST methods share: the schedule fields of `config.sparse` and their cost rule."""

from tf_freetickets.sparse import block, structured
from tf_freetickets.sparse.registry import ConfigField, CostFacts


def _check_n_m(value, sparse):
    n_m = structured.parse_n_m(value)
    if n_m is None:
        return
    structured.check_n_m_sparsity(n_m, sparse.sparsity, "config.sparse.sparsity")
    if sparse.distribution != "uniform":
        raise ValueError(f"config.sparse.n_m={value!r} keeps N of M in every layer: set sparse.distribution='uniform'.")


#: `config.sparse.n_m`: N:M structured sparsity ("2:4": 2 of every 4 consecutive inputs), read by gmp, rigl, set.
N_M_FIELD = ConfigField("n_m", "", "gmp/rigl/set: N:M structured sparsity, e.g. '2:4' ('' = unstructured)", _check_n_m)


def _check_block_size(value, sparse):
    size = block.parse_block_size(value)
    if size is not None and structured.parse_n_m(sparse.get("n_m", "")) is not None:
        raise ValueError(f"config.sparse.block_size={value!r} cannot be combined with sparse.n_m; use one structure.")
    if size is not None and sparse.distribution == "global":
        raise ValueError(f"config.sparse.block_size={value!r} needs per-layer targets: not sparse.distribution='global'.")


def _check_block_pooling(value, sparse):
    block.check_pooling(value)


#: `config.sparse.block_size` / `block_pooling`: tfmot's block sparsity for Dense kernels, read by gmp.
BLOCK_FIELDS = (
    ConfigField(
        "block_size", "", "gmp: block sparsity 'rows,cols' of Dense kernels, e.g. '1,4' ('' = unstructured)", _check_block_size
    ),
    ConfigField(
        "block_pooling",
        "avg",
        "gmp: pooling of |w| over a block: 'avg' or 'max' (tfmot's block_pooling_type)",
        _check_block_pooling,
    ),
)


def block_of(sparse):
    """The `GradualMagnitudePruning` block arguments of `config.sparse` (block_size None when unset)."""
    return {
        "block_size": block.parse_block_size(sparse.get("block_size", "")),
        "block_pooling": sparse.get("block_pooling", "avg"),
    }


def n_m_of(sparse):
    """The (N, M) of `config.sparse.n_m`, or None."""
    return structured.parse_n_m(sparse.get("n_m", ""))


def dst_updater_kwargs(sparse, seed):
    """The `MaskUpdater` arguments every DST method reads from `config.sparse` (schedule and update switches)."""
    return {
        "update_every": int(sparse.update_every),
        "drop_fraction": float(sparse.drop_fraction),
        "end_fraction": float(sparse.end_fraction),
        "decay": sparse.decay,
        "seed": seed,
        "min_drop_fraction": float(sparse.get("min_drop_fraction", 0.0)),
        "reinit_when_same": bool(sparse.get("reinit_when_same", False)),
        "dense_gradient_momentum": bool(sparse.get("dense_gradient_momentum", False)),
        "adjust_prune_rate": bool(sparse.get("adjust_prune_rate", False)),
    }


def dst_updater_kwargs_with_n_m(sparse, seed):
    """`dst_updater_kwargs` plus the N:M pattern (methods that declare `N_M_FIELD`)."""
    return {**dst_updater_kwargs(sparse, seed), "n_m": n_m_of(sparse)}


def gradient_growth_costs(updater, gradient_batches, paper_default=1):
    """`CostFacts` of a method that grows by a dense gradient (RigL, CigL, the library's SNFS).

    Args:
      updater: the built updater, or None for the method's paper defaults.
      gradient_batches: the caller's override of the extra dense-gradient
        batches per update (None: the updater's, else `paper_default`).
      paper_default: the batches per update without an updater (RigL: 1).
    """
    if gradient_batches is None and updater is not None:
        source = updater.score_source
        gradient_batches = source.batches_per_update if source.needs_gradient_data else 0
    elif gradient_batches is None:
        gradient_batches = paper_default
    dense_momentum = updater is not None and updater.dense_gradient_momentum
    return CostFacts(growth_gradient_batches=gradient_batches, dense_weight_gradient_every_step=dense_momentum)
