"""What training and serving cost: forward FLOPs from the masks, training FLOPs of whole runs.

- forward: forward FLOPs per layer and per example from a model's masks (dense and sparse).
- training: training FLOPs of one run of any registered method, read from its declared
  `CostFacts` (RigL's accounting), and of DST / EDST / Divide-and-Co-training ensembles.
- pruning: gradual magnitude pruning, every step costed at its own density.

Layer: imports only `tf_freetickets.sparse` (never ensembles or experiments); `tft.metrics`
re-exports these names for compatibility.
"""

from tf_freetickets.costs.forward import (
    LayerFlops,
    flops_report,
    flops_table,
    forward_flops,
    inference_flops,
    layer_forward_flops,
    relative_to_dense,
)
from tf_freetickets.costs.pruning import gmp_members_training_flops, gmp_training_flops
from tf_freetickets.costs.training import (
    TrainingFlops,
    dnc_training_flops,
    dst_ensemble_training_flops,
    edst_training_flops,
    num_mask_updates,
    training_flops,
)

__all__ = [
    "LayerFlops",
    "TrainingFlops",
    "dnc_training_flops",
    "dst_ensemble_training_flops",
    "edst_training_flops",
    "flops_report",
    "flops_table",
    "forward_flops",
    "gmp_members_training_flops",
    "gmp_training_flops",
    "inference_flops",
    "layer_forward_flops",
    "num_mask_updates",
    "relative_to_dense",
    "training_flops",
]
