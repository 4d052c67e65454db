"""The cells of a method comparison: a config file plus overrides, run once per seed.

`fashion_mnist_study` is the small-scale reproduction of the papers' claims that
`tools/reproduce.py` runs; each cell is also one `python -m tf_freetickets.train`
command (`rerun_command`), so any cell of the results can be rerun alone.
"""

import ast
import dataclasses
import importlib.util
import os

from tf_freetickets.experiments.config import validate


@dataclasses.dataclass(frozen=True)
class Cell:
    """One row of a study.

    Attributes:
      name: row name, e.g. "edst_0.8".
      config_file: path of a configs/*.py file (relative to the repository root).
      overrides: "dotted.key=value" strings applied on top of the file's config.
      family: method family shared by the rows of one method at several
        sparsities ("dense", "dense_ensemble", "rigl", "gmp", "cigl", "dst", "edst", "dnc").
      sparsity: the sparsity of the row, None for dense rows.
      replicas: runs per study seed s, with seeds s, s+1, ..., s+replicas-1
        (a row that feeds a composed ensemble needs one run per member).
      composed_of: name of another cell; this row trains nothing and is the
        mean-probability ensemble of that cell's runs of seeds s, ..., s+members-1
        (a deep ensemble of independent runs, as `ensemble.kind='independent'`
        with seed s would train them).
      members: ensemble size M of a composed row.
    """

    name: str
    config_file: str = ""
    overrides: tuple = ()
    family: str = ""
    sparsity: float | None = None
    replicas: int = 1
    composed_of: str = ""
    members: int = 0

    def run_seeds(self, seed):
        """The seeds this row trains (or, composed, reads) for study seed `seed`."""
        count = self.members if self.composed_of else self.replicas
        return [int(seed) + offset for offset in range(count)]


def _parse_value(raw):
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        return raw


def load_config(path, overrides=()):
    """`get_config()` of the config file at `path`, with "dotted.key=value" overrides applied.

    Args:
      path: a configs/*.py file defining `get_config()`.
      overrides: iterable of "dotted.key=value"; the value is read as a Python
        literal when it parses as one (0.8, 3, True, 'x'), else as a string.

    Raises:
      FileNotFoundError: no file at `path`.
      KeyError: an override names a field the config does not have.
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"No config file at {path!r}.")
    spec = importlib.util.spec_from_file_location(os.path.splitext(os.path.basename(path))[0], path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    config = module.get_config()
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise ValueError(f"Override {item!r} is not of the form dotted.key=value.")
        node = config
        *parents, leaf = key.split(".")
        for name in parents:
            node = node[name]
        if leaf not in node:
            raise KeyError(f"Override {item!r}: {path} has no field {key!r}.")
        node[leaf] = _parse_value(raw)
    return config


def cell_config(cell, seed, root=".", extra_overrides=()):
    """The validated config of `cell` for `seed` (members of ensembles use seed, seed+1, ...).

    Args:
      cell: a `Cell`.
      seed: integer seed of the run.
      root: folder `cell.config_file` is relative to.
      extra_overrides: overrides applied after the cell's own (e.g. a smaller
        train_examples for a smoke run).
    """
    overrides = [*cell.overrides, *extra_overrides, f"seed={int(seed)}"]
    return validate(load_config(os.path.join(root, cell.config_file), overrides))


def rerun_command(cell, seed, workdir, extra_overrides=()):
    """The `python -m tf_freetickets.train` command that trains `cell` for `seed` alone."""
    flags = " ".join(f"--config.{item}" for item in (*cell.overrides, *extra_overrides, f"seed={int(seed)}"))
    return f"python -m tf_freetickets.train --config={cell.config_file} {flags} --workdir={workdir}"


def fashion_mnist_study(epochs=4, sparsities=(0.8, 0.9), num_members=3):
    """The cells of the small-scale reproduction (issue: the papers' claims on Fashion-MNIST).

    Every row uses the small CNN at width 0.5 (the dense single model is the
    reference network) trained `epochs` epochs with the same optimizer:

    - dense: one dense model; dense_ensemble: M of them (deep ensemble).
    - gmp_S: gradual magnitude pruning (Zhu & Gupta 2017) to sparsity S, the
      papers' dense-to-sparse baseline: dense start, tfmot's cubic schedule
      from 10% to 75% of training, pruning every 100 steps, ERK targets like
      the RigL row, same epochs and optimizer.
    - rigl_S, cigl_S: one RigL / CigL model at sparsity S (ERK); CigL averages
      the epoch-end weights from the end of epoch ceil(epochs / 2) on (its
      paper averages epochs 200-250 of 250: on a few epochs 20% would leave
      one snapshot).
    - dst_S: M independent RigL runs (FreeTickets' DST ensemble).
    - edst_S: one EDST run of 1 + M x 2 epochs (SET growth, q = 0.8), the
      paper's t_ex + M t_re layout scaled down (150 + 3 x 100 vs 250 dense).
    - dnc: the dense model divided into 2 members of width 0.5 / sqrt(2),
      co-trained on different views (Divide-and-Co-training, S = 2).

    Args:
      epochs: training epochs of every single-model run (and of each member).
      sparsities: the sparsities of the sparse rows.
      num_members: M of the ensembles.

    Returns:
      list of `Cell`, dense rows first.
    """
    # fused_batchnorm: the default when these runs were made (BENCHMARKS.md 1c), so the committed records reproduce.
    base = (f"epochs={epochs}", "width=0.5", "fused_batchnorm=False")
    members = f"ensemble.num_members={num_members}"
    cells = [
        Cell("dense", "configs/fashion_mnist_dense.py", base, "dense"),
        Cell(
            "dense_ensemble", "configs/fashion_mnist_dense.py", (*base, "ensemble.kind='independent'", members), "dense_ensemble"
        ),
        Cell("dnc_s2", "configs/fashion_mnist_dnc.py", (*base, "ensemble.num_members=2"), "dnc"),
    ]
    averaging = "weight_averaging.start_fraction=0.5"
    for sparsity in sparsities:
        s = f"sparse.sparsity={sparsity}"
        cells += [
            Cell(f"rigl_{sparsity}", "configs/fashion_mnist_rigl.py", (*base, s), "rigl", sparsity),
            Cell(f"gmp_{sparsity}", "configs/fashion_mnist_gmp.py", (*base, s), "gmp", sparsity),
            Cell(f"cigl_{sparsity}", "configs/fashion_mnist_cigl.py", (*base, s, averaging), "cigl", sparsity),
            Cell(f"dst_{sparsity}", "configs/fashion_mnist_dst.py", (*base, s, members), "dst", sparsity),
            Cell(f"edst_{sparsity}", "configs/fashion_mnist_edst.py", ("width=0.5", "fused_batchnorm=False", s, members), "edst",
                 sparsity),
        ]  # fmt: skip
    return cells
