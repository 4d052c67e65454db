"""What the training binaries run: configs, paper configs, data sources, the run driver and its cost.

- `config`: defaults (`fashion_mnist_defaults`) and validation (`validate`, `ConfigError`) of the
  ml_collections configs in configs/.
- `paper_configs`: the papers' CIFAR and ImageNet experiments as configs.
- `data_sources`: the datasets a run trains and evaluates on (arrays or a tfds stream).
- `plan`: `RunPlan.from_config(config)`: the config validated and resolved once (method from the
  registry, EDST layout, epochs); the runner and the FLOPs accounting read the plan.
- `runner`: `run(config, workdir)` trains (or resumes) and evaluates one experiment.
- `run_context`: `RunContext`, what every trainer of `runner` shares (builder, optimizer, resumable
  `fit`, member writes through the workdir's staging folder).
- `workdir`, `guards`, `interrupt`, `member_ledger`, `cli`: one run per workdir (record, data identity,
  lock, manifest), the finite-training guard, the SIGTERM stop at an epoch end, the certified EDST
  tickets, and the binaries' one-line errors.
- `checkpointing`: epoch checkpoints that let a killed run resume exactly.
- `training_clock`: the run's training time (wall and CPU seconds per epoch), kept across resumes.
- `flops`: the training and inference FLOPs every run records.
- `evaluation`: test metrics, OoD detection and corruption robustness of trained members.
"""

from tf_freetickets.experiments.config import ConfigError, edst_schedule, fashion_mnist_defaults, validate
from tf_freetickets.experiments.plan import RunPlan
from tf_freetickets.experiments.runner import run

__all__ = ["ConfigError", "RunPlan", "edst_schedule", "fashion_mnist_defaults", "run", "validate"]
