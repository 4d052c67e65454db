"""Sparse and dense ensembles: EDST (one run), independent runs (DST / dense), EnsembleModel."""

from tf_freetickets.ensembles.edst import EDST, EDSTSchedule, Ticket
from tf_freetickets.ensembles.ensemble_model import EnsembleModel, check_members_agree
from tf_freetickets.ensembles.independent import train_independent_ensemble
from tf_freetickets.ensembles.weight_averaging import WeightAveraging, recompute_batchnorm_statistics

__all__ = [
    "EDST",
    "EDSTSchedule",
    "EnsembleModel",
    "Ticket",
    "WeightAveraging",
    "check_members_agree",
    "recompute_batchnorm_statistics",
    "train_independent_ensemble",
]
