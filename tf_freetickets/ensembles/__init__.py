"""Sparse and dense ensembles: EDST (one run), independent runs (DST / dense), EnsembleModel."""

from tf_freetickets.ensembles.edst import EDST, EDSTSchedule, Ticket
from tf_freetickets.ensembles.ensemble_model import EnsembleModel, check_members_agree
from tf_freetickets.ensembles.independent import train_independent_ensemble

__all__ = ["EDST", "EDSTSchedule", "EnsembleModel", "Ticket", "check_members_agree", "train_independent_ensemble"]
