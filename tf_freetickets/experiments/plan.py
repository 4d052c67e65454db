"""The typed run plan: a config resolved once, validated once, read by everything downstream.

`RunPlan.from_config(config)` validates the ml_collections config (one
`ConfigError` naming the bad field) and resolves what the rest of a run needs
to know: the registered sparse method and its updater factory, the sparsity
`sparsify` starts from, the EDST epoch layout, the epochs `fit` runs and the
run's display name. The training runner and the FLOPs accounting read the plan;
none of them re-reads `config.sparse.method` or `config.ensemble.kind` strings
or rebuilds the EDST schedule. The plan keeps the validated config itself for
what must stay a config (the workdir's fingerprint, results.json, the data
source).
"""

import dataclasses

from tf_freetickets.experiments.config import edst_schedule, sparse_method, validate


@dataclasses.dataclass(frozen=True)
class SparsityPlan:
    """The sparse method of a run.

    Attributes:
      method: the registered `SparseMethod`.
      target: the final sparsity (`config.sparse.sparsity`).
      initial: the sparsity `sparsify` starts from (the method decides: gradual
        pruning starts dense).
      distribution: layer-wise densities ("erk", "er", "uniform").
      fields: `config.sparse`, read by the method's updater factory.
    """

    method: object
    target: float
    initial: float
    distribution: str
    fields: object

    @property
    def name(self):
        """The method's registered name."""
        return self.method.name

    @property
    def is_dense(self):
        """True when the method trains without masks."""
        return self.method.updater_class is None

    def make_updater(self, seed):
        """A fresh `MaskUpdater` for the member seeded `seed` (None for dense training)."""
        return self.method.make_updater(self.fields, seed)


@dataclasses.dataclass(frozen=True)
class EnsemblePlan:
    """How many models a run trains and how.

    Attributes:
      kind: "none" (one model), "independent" (DST / dense ensemble), "edst" or "dnc".
      num_members: M (members, tickets or narrow networks; 1 for "none").
      edst: the `EDSTSchedule` of an EDST run, else None.
      fields: `config.ensemble` (co-training and EDST options).
    """

    kind: str
    num_members: int
    edst: object
    fields: object

    @property
    def trains_separately(self):
        """True when each member is its own training run (one model or independent runs)."""
        return self.kind in ("none", "independent")


@dataclasses.dataclass(frozen=True)
class RunPlan:
    """One experiment, resolved.

    Attributes:
      config: the validated config (the workdir's fingerprint and results.json).
      seed: the run's seed (member k of an independent ensemble uses seed + k).
      epochs: epochs `fit` runs (EDST: t_ex + M t_re).
      sparsity: the `SparsityPlan`.
      ensemble: the `EnsemblePlan`.
    """

    config: object
    seed: int
    epochs: int
    sparsity: SparsityPlan
    ensemble: EnsemblePlan

    @classmethod
    def from_config(cls, config):
        """Validates `config` and resolves it (raises `ConfigError` for the first bad field)."""
        validate(config)
        method = sparse_method(config.sparse)
        sparsity = SparsityPlan(
            method, float(config.sparse.sparsity), method.starting_sparsity(config.sparse), config.sparse.distribution,
            config.sparse,
        )  # fmt: skip
        kind = config.ensemble.kind
        edst = edst_schedule(config) if kind == "edst" else None
        members = 1 if kind == "none" else int(config.ensemble.num_members)
        ensemble = EnsemblePlan(kind, members, edst, config.ensemble)
        epochs = edst.total_epochs if edst is not None else int(config.epochs)
        return cls(config, int(config.seed), epochs, sparsity, ensemble)

    @property
    def name(self):
        """The run's display name: the method, with the ensemble kind when there is one ("rigl-edst")."""
        kind = self.ensemble.kind
        return self.sparsity.name if kind == "none" else f"{self.sparsity.name}-{kind}"

