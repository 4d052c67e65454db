"""Dynamic sparse training core: masked layers, densities, updaters, callback."""

from tf_freetickets.sparse.callback import MaskUpdate
from tf_freetickets.sparse.cigl import CigL, random_keep_mask
from tf_freetickets.sparse.densities import active_count, layer_densities
from tf_freetickets.sparse.gmp import GradualMagnitudePruning, PruningSteps
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
from tf_freetickets.sparse.pruning_schedules import ConstantSparsity, PolynomialDecay, PruningSchedule
from tf_freetickets.sparse.report import LayerSparsity, global_sparsity, sparsity_rows, sparsity_table
from tf_freetickets.sparse.schedules import UpdateSchedule
from tf_freetickets.sparse.sparsify import init_masks, kernels_without_mask, maskable_layer_names, sparsify
from tf_freetickets.sparse.strip import folded_weights, strip_masks
from tf_freetickets.sparse.updaters import SET, SNFS, MaskUpdater, RigL, Static, freetickets_official

__all__ = [
    "ConstantSparsity",
    "GradualMagnitudePruning",
    "PolynomialDecay",
    "PruningSchedule",
    "PruningSteps",
    "layer_sparsities",
    "CigL",
    "random_keep_mask",
    "SET",
    "SNFS",
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
]
