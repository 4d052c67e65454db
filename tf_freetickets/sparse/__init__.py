"""Dynamic sparse training core: masked layers, densities, the updater contract, the methods, the callback.

Layers: masked layers and `sparsify` at the bottom; `updater` (the contract),
`score_sources`, `schedules` and `registry` above them; one module per method
in `methods/`; `MaskEngine` and the `MaskUpdate` callback on top. Structured
patterns: `structured` (N:M), `block` (tfmot's block sparsity), `channel_exits`
(which layers Chase may channel-prune); `xnnpack` checks tfmot's XNNPACK
sparse-inference conditions. Nothing here imports another `tf_freetickets`
subpackage.
"""

from tf_freetickets.sparse.callback import MaskUpdate
from tf_freetickets.sparse.densities import active_count, layer_densities
from tf_freetickets.sparse.layer_targets import layer_sparsities
from tf_freetickets.sparse.layers import (
    MaskedKernelMixin,
    is_masked,
    masked_class_for,
    masked_layers,
    unmasked_kernels,
    updatable_masked_layers,
)
from tf_freetickets.sparse.mask_engine import MaskEngine
from tf_freetickets.sparse.masked_set import MaskedLayerSet
from tf_freetickets.sparse.methods.chase import Chase
from tf_freetickets.sparse.methods.cigl import CigL, random_keep_mask
from tf_freetickets.sparse.methods.gmp import GradualMagnitudePruning
from tf_freetickets.sparse.methods.rigl import RigL, freetickets_official
from tf_freetickets.sparse.methods.set import SET
from tf_freetickets.sparse.methods.snfs import SNFS
from tf_freetickets.sparse.methods.srigl import SRigL, unit_fan_ins
from tf_freetickets.sparse.methods.static import Static
from tf_freetickets.sparse.pruning_schedules import ConstantSparsity, PolynomialDecay, PruningSchedule, PruningSteps
from tf_freetickets.sparse.registry import (
    ConfigField,
    CostFacts,
    SparseMethod,
    get_method,
    method_for_updater,
    method_names,
    register_method,
    unregister_method,
)
from tf_freetickets.sparse.report import LayerSparsity, global_sparsity, sparsity_rows, sparsity_table
from tf_freetickets.sparse.schedules import MaskSchedule, UpdateSchedule
from tf_freetickets.sparse.score_sources import ScoreSource
from tf_freetickets.sparse.sparsify import init_masks, kernels_without_mask, maskable_layer_names, sparsify
from tf_freetickets.sparse.strip import folded_weights, strip_masks
from tf_freetickets.sparse.structured import StructureError
from tf_freetickets.sparse.updater import MaskUpdater
from tf_freetickets.sparse.xnnpack import XnnpackRow, xnnpack_sparse_report

__all__ = [
    "ConfigField",
    "CostFacts",
    "MaskSchedule",
    "MaskedLayerSet",
    "ScoreSource",
    "SparseMethod",
    "get_method",
    "method_for_updater",
    "method_names",
    "register_method",
    "unregister_method",
    "ConstantSparsity",
    "GradualMagnitudePruning",
    "PolynomialDecay",
    "PruningSchedule",
    "PruningSteps",
    "layer_sparsities",
    "Chase",
    "CigL",
    "random_keep_mask",
    "SET",
    "SNFS",
    "SRigL",
    "unit_fan_ins",
    "LayerSparsity",
    "MaskEngine",
    "MaskUpdate",
    "MaskUpdater",
    "MaskedKernelMixin",
    "RigL",
    "Static",
    "UpdateSchedule",
    "active_count",
    "folded_weights",
    "freetickets_official",
    "global_sparsity",
    "init_masks",
    "is_masked",
    "kernels_without_mask",
    "layer_densities",
    "maskable_layer_names",
    "masked_class_for",
    "masked_layers",
    "sparsify",
    "sparsity_rows",
    "sparsity_table",
    "strip_masks",
    "unmasked_kernels",
    "updatable_masked_layers",
    "StructureError",
    "XnnpackRow",
    "xnnpack_sparse_report",
]
