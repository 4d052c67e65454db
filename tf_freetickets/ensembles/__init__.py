"""Sparse and dense ensembles: EDST (one run), independent runs (DST / dense), EnsembleModel.

Also Divide-and-Co-training (`divide`, `cotraining`, `views`), CigL's weight
averaging, best-validation tracking, EDST's ticket BatchNorm checks
(`ticket_batchnorm`) and the choice of an ensemble's fastest serving form
(`serving_choice`, `EnsembleModel.export_fastest`).
"""

from tf_freetickets.ensembles.cotraining import CoTrainingModel, default_view_augmentation, js_divergence
from tf_freetickets.ensembles.divide import (
    build_divided_members,
    divided_dropout,
    divided_weight_decay,
    divided_widen_factor,
    divided_width,
)
from tf_freetickets.ensembles.edst import EDST, EDSTSchedule, Ticket
from tf_freetickets.ensembles.ensemble_model import EnsembleModel, check_members_agree
from tf_freetickets.ensembles.independent import train_independent_ensemble
from tf_freetickets.ensembles.weight_averaging import WeightAveraging, recompute_batchnorm_statistics

__all__ = [
    "CoTrainingModel",
    "build_divided_members",
    "default_view_augmentation",
    "divided_dropout",
    "divided_weight_decay",
    "divided_widen_factor",
    "divided_width",
    "js_divergence",
    "EDST",
    "EDSTSchedule",
    "EnsembleModel",
    "Ticket",
    "WeightAveraging",
    "check_members_agree",
    "recompute_batchnorm_statistics",
    "train_independent_ensemble",
]
